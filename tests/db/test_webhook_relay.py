"""The webhook relay pass (activities.webhook_relay.relay_pending) against real PostgreSQL: each outbox row
becomes exactly one message, even with passes racing; a rolled-back transaction sends nothing; deliveries are
pending or skipped per the merchant's and the endpoint's state and the endpoint's filter; per-endpoint
delivery ids follow the outbox order."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, null, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db import outbox
from db.merchants import NewMerchant
from db.models import Customer, OutboxEvent, WebhookApp, WebhookDelivery, WebhookEndpoint, WebhookMessage
from db.session import session_factory
from domain.ids import has_prefix, new_id
from tests.conftest import new_merchant
from tests.helpers import relay_all
from workflows.webhook_messages import EndpointRef


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


async def enable(sessions: async_sessionmaker[AsyncSession], m: NewMerchant, enabled: bool = True) -> None:
    async with sessions() as session:
        session.add(
            WebhookApp(
                id=new_id("webhook_app"),
                merchant_id=m.merchant_id,
                environment=m.environment,
                enabled=enabled,
            )
        )
        await session.commit()


async def endpoint(sessions: async_sessionmaker[AsyncSession], m: NewMerchant, **fields: Any) -> str:
    ep_id = new_id("webhook_endpoint")
    async with sessions() as session:
        session.add(
            WebhookEndpoint(
                id=ep_id,
                merchant_id=m.merchant_id,
                environment=m.environment,
                url="http://127.0.0.1:9/hook",
                secret="sealed-secret-unused-here",
                **fields,
            )
        )
        await session.commit()
    return ep_id


async def write(
    sessions: async_sessionmaker[AsyncSession], m: NewMerchant, event_type: str, data: dict[str, Any]
) -> str:
    async with sessions() as session:
        row = outbox.record(session, m.merchant_id, m.environment, event_type, data)
        await session.commit()
    return row.id


async def deliveries(sessions: async_sessionmaker[AsyncSession], ep_id: str) -> list[WebhookDelivery]:
    async with sessions() as session:
        rows = await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id == ep_id).order_by(WebhookDelivery.id)
        )
        return list(rows)


async def test_each_outbox_row_becomes_one_message_with_the_d18_envelope(
    sessions: async_sessionmaker[AsyncSession], merchant: NewMerchant
) -> None:
    data = {"object": "subscription", "id": "sub_A", "status": "active"}
    msg_id = await write(sessions, merchant, "subscription.activated.v0", data)
    await relay_all(sessions)
    await relay_all(sessions)  # a second pass finds nothing left

    async with sessions() as session:
        event = await session.get(OutboxEvent, msg_id)
        messages = (await session.scalars(select(WebhookMessage).where(WebhookMessage.id == msg_id))).all()
    assert event is not None and event.relayed_at is not None
    [message] = messages
    assert has_prefix(message.id, "outbox_event") and has_prefix(message.event_id, "event")
    assert message.event_id.removeprefix("evt_") == message.id.removeprefix("msg_")  # stable per event
    assert message.resource_key == "subscription:sub_A"
    assert message.payload == {
        "eventType": "subscription.activated.v0",
        "eventId": message.event_id,
        "timestamp": event.created_at.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "data": data,
    }
    assert message.created_at == event.created_at


async def test_racing_passes_relay_every_row_exactly_once_in_outbox_order(
    sessions: async_sessionmaker[AsyncSession], merchant: NewMerchant
) -> None:
    await enable(sessions, merchant)
    ep_id = await endpoint(sessions, merchant)
    async with sessions() as session:
        ids = [
            outbox.record(
                session,
                merchant.merchant_id,
                merchant.environment,
                "subscription.updated.v0",
                {"id": "sub_R", "n": n},
            ).id
            for n in range(1200)
        ]
        await session.commit()

    # Four passes at once, each looping until the backlog is empty, with batches small enough to interleave.
    woken = await asyncio.gather(*(relay_all(sessions, limit=100) for _ in range(4)))

    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(WebhookMessage).where(WebhookMessage.id.in_(ids))
        )
    assert count == 1200
    rows = await deliveries(sessions, ep_id)
    assert [d.message_id for d in rows] == ids  # one delivery each, numbered in outbox (seq) order
    assert {d.status for d in rows} == {"pending"}
    refs = [ref for batch in woken for ref in batch if ref.endpoint_id == ep_id]
    assert refs and refs[0] == EndpointRef(
        endpoint_id=ep_id, merchant_id=merchant.merchant_id, environment=merchant.environment
    )
    assert (
        len(refs) == 12
    )  # once per pass that gave it work (1200 rows in batches of 100), never twice in one


async def test_a_rolled_back_transaction_leaves_no_outbox_row_and_sends_nothing(
    sessions: async_sessionmaker[AsyncSession], merchant: NewMerchant
) -> None:
    await enable(sessions, merchant)
    ep_id = await endpoint(sessions, merchant)
    customer_id = new_id("customer")
    with pytest.raises(RuntimeError):
        async with sessions() as session:
            session.add(
                Customer(
                    id=customer_id,
                    merchant_id=merchant.merchant_id,
                    environment=merchant.environment,
                    consumer_id=merchant.merchant_id,
                    notification_settings={},
                )
            )
            row = outbox.record(
                session,
                merchant.merchant_id,
                merchant.environment,
                "customer.created.v0",
                {"id": customer_id},
            )
            await session.flush()  # the row reached the database inside the transaction
            raise RuntimeError("the request failed after writing")
    await relay_all(sessions)

    async with sessions() as session:
        assert await session.get(OutboxEvent, row.id) is None
        assert await session.get(Customer, customer_id) is None
        assert await session.get(WebhookMessage, row.id) is None
    assert await deliveries(sessions, ep_id) == []


async def test_deliveries_follow_the_merchant_the_endpoint_and_its_filter(
    sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    on, off, never, other = [await new_merchant(engine) for _ in range(4)]
    live = replace(on, environment="live")  # the same merchant's other environment
    await enable(sessions, on)
    await enable(sessions, off, enabled=False)
    await enable(sessions, other)
    eps = {
        "all": await endpoint(sessions, on),
        "sql_null": await endpoint(sessions, on, filter_types=null()),
        "json_null": await endpoint(sessions, on, filter_types=None),
        "invoices": await endpoint(sessions, on, filter_types=["invoice.paid.v0", "invoice.issued.v0"]),
        "customers": await endpoint(sessions, on, filter_types=["customer.created.v0"]),
        "disabled": await endpoint(sessions, on, disabled=True, disabled_reason="manual"),
        "deleted": await endpoint(sessions, on, deleted_at=datetime(2026, 1, 1, tzinfo=UTC)),
        "off": await endpoint(sessions, off),
        "never": await endpoint(sessions, never),
        "other": await endpoint(sessions, other),
        "live": await endpoint(sessions, live),
    }
    await enable(sessions, live)
    msg_id = await write(sessions, on, "invoice.paid.v0", {"object": "invoice", "id": "inv_F"})
    woken = await relay_all(sessions)

    status = {
        name: [(d.message_id, d.status) for d in await deliveries(sessions, ep)] for name, ep in eps.items()
    }
    pending, skipped = [(msg_id, "pending")], [(msg_id, "skipped")]
    assert status == {
        "all": pending,
        "sql_null": pending,
        "json_null": pending,
        "invoices": pending,
        "customers": [],
        "disabled": skipped,
        "deleted": [],
        "off": [],
        "never": [],
        "other": [],
        "live": [],
    }
    assert {r.endpoint_id for r in woken} >= {eps["all"], eps["sql_null"], eps["json_null"], eps["invoices"]}
    assert not {r.endpoint_id for r in woken} & {eps["disabled"], eps["customers"]}
    for d in await deliveries(sessions, eps["all"]):
        assert (d.resource_key, d.attempts, d.round_attempts, d.next_attempt_at) == (
            "invoice:inv_F",
            0,
            0,
            None,
        )

    # The merchant's own other states: webhooks disabled, or never enabled, skip every delivery.
    off_msg = await write(sessions, off, "invoice.paid.v0", {"id": "inv_O"})
    never_msg = await write(sessions, never, "invoice.paid.v0", {"id": "inv_N"})
    woken = await relay_all(sessions)
    assert [(d.message_id, d.status) for d in await deliveries(sessions, eps["off"])] == [
        (off_msg, "skipped")
    ]
    assert [(d.message_id, d.status) for d in await deliveries(sessions, eps["never"])] == [
        (never_msg, "skipped")
    ]
    assert not {r.endpoint_id for r in woken} & {eps["off"], eps["never"]}


async def test_messages_without_an_id_are_ordered_by_their_own(
    sessions: async_sessionmaker[AsyncSession], merchant: NewMerchant
) -> None:
    msg_id = await write(sessions, merchant, "customer.creation_failed.v0", {"email": "a@example.com"})
    await relay_all(sessions)
    async with sessions() as session:
        message = await session.get(WebhookMessage, msg_id)
    assert message is not None and message.resource_key == f"customer:{msg_id}"
