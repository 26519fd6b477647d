"""Disputes (behavior §12.1) through SDK 0.1.34 and HTTP: create (one per usage event, also under a race),
list with its filters and pagination, the merchant's resolution (accepted refunds the event's instant charge
back to the wallet in the same commit), and the customer delete they block.

Usage events here are charged the way POST /v0/usage charges them: a funded wallet, one ledger usage
transaction, the event row pointing at it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors
from sqlalchemy.ext.asyncio import AsyncEngine

from api.usage_refunds import refund_usage_event
from db import ledger as ledger_db
from db.merchants import NewMerchant
from db.models import Customer, Subscription, UsageEvent
from db.session import session_factory
from domain import ledger
from domain.ids import new_id
from domain.money import to_nanos
from tests.factories import Factory
from tests.helpers import assert_error, field_errors

WALLET = Decimal("10.00")
MESSAGE = "Token count appears incorrect for this request"


@pytest.fixture
async def aclient(api_url: str, merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as c:
        yield c


@pytest.fixture
async def other_aclient(api_url: str, other_merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {other_merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as c:
        yield c


@pytest.fixture
def f(engine: AsyncEngine, merchant: NewMerchant) -> Factory:
    return Factory(engine, merchant)


def tenant(f: Factory) -> tuple[str, str]:
    return f.merchant.merchant_id, f.merchant.environment


async def funded_subscription(f: Factory, customer: Customer | None = None) -> Subscription:
    """An active v0 subscription whose customer's wallet holds $10."""
    sub = await f.subscription(await f.plan(billing_version=0), customer)
    async with f.sessions() as session:
        await ledger_db.post(
            session, *tenant(f),
            ledger.funding(f.merchant.merchant_id, sub.customer_id, sub.currency, to_nanos(WALLET)),
            idempotency_key=f"topup:{new_id('invoice')}",
        )  # fmt: skip
        await session.commit()
    return sub


async def charged_event(f: Factory, sub: Subscription, amount: str, at: datetime | None = None) -> UsageEvent:
    """A usage event whose instant charge of `amount` was debited from the wallet."""
    event_id = new_id("usage_event")
    nanos = to_nanos(Decimal(amount))
    async with f.sessions() as session:
        posted = await ledger_db.post(
            session, *tenant(f),
            ledger.usage(f.merchant.merchant_id, sub.customer_id, sub.currency, nanos, Decimal(0)),
            idempotency_key=f"usage:{event_id}", reference_id=event_id,
        )  # fmt: skip
        customer = await session.get_one(Customer, sub.customer_id)
        event = UsageEvent(
            id=event_id,
            **f.tenant,
            customer_id=sub.customer_id,
            consumer_id=customer.consumer_id,
            subscription_id=sub.id,
            idempotency_key=new_id("usage_event"),
            timestamp=at or datetime.now(UTC),
            properties=[
                {"billableMetricId": "bm_calls", "quantity": 1, "paymentTerm": "instant", "amount": amount}
            ],
            currency=sub.currency,
            price=Decimal(amount),
            total_amount=Decimal(amount),
            instant_amount=Decimal(amount),
            transaction_id=posted.transaction_id,
        )
        session.add(event)
        await session.commit()
        await session.refresh(event)
    return event


async def wallet(f: Factory, customer_id: str) -> Decimal:
    async with f.sessions() as session:
        balances = await ledger_db.balances(session, *tenant(f), customer_id, "USD")
    return Decimal(balances.get(("USD", "customer_main"), 0)).scaleb(-9)


async def audit(engine: AsyncEngine, merchant: NewMerchant) -> list[str]:
    async with session_factory(engine)() as session:
        return await ledger_db.audit(session, merchant.merchant_id)


async def create(client: httpx.AsyncClient, usage_event_id: str, message: str = MESSAGE) -> httpx.Response:
    return await client.post("/v0/disputes", json={"usageEventId": usage_event_id, "message": message})


async def test_dispute_lifecycle_through_sdk(f: Factory, sdk: Paygentic, engine: AsyncEngine) -> None:
    sub = await funded_subscription(f)
    event = await charged_event(f, sub, "2.50")
    assert await wallet(f, sub.customer_id) == Decimal("7.50")

    created = sdk.disputes.create(usage_event_id=event.id, message=MESSAGE)
    assert created.id.startswith("disp_") and created.object == "dispute"
    assert (created.usage_event_id, created.customer_id, created.merchant_id) == (
        event.id,
        sub.customer_id,
        f.merchant.merchant_id,
    )
    assert (created.customer_message, created.status, created.disputed_amount) == (
        MESSAGE,
        "pending",
        Decimal("2.50"),
    )
    assert created.merchant_message is None and created.resolved_at is None

    listed = sdk.disputes.list(request={"merchant_id": f.merchant.merchant_id})
    assert [d.id for d in listed.data] == [created.id]
    (item,) = listed.data
    assert item.customer.id == sub.customer_id and item.customer.name == "Acme"
    assert item.customer.email.startswith("billing+") and item.disputed_amount == Decimal("2.50")
    assert (listed.pagination.total, listed.pagination.has_more) == (1, False)

    with pytest.raises(errors.Error) as caught:
        sdk.disputes.create(usage_event_id=event.id, message=MESSAGE)
    assert caught.value.status_code == 409 and created.id in caught.value.data.message
    with pytest.raises(errors.BadRequest):
        sdk.disputes.create(usage_event_id=event.id, message="too short")
    with pytest.raises(errors.BadRequest):
        sdk.disputes.list()
    assert await wallet(f, sub.customer_id) == Decimal("7.50")  # a dispute alone moves no money
    assert await audit(engine, f.merchant) == []


async def test_accept_refunds_the_event_in_the_same_commit(
    f: Factory, aclient: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    sub = await funded_subscription(f)
    event = await charged_event(f, sub, "2.50")
    dispute = (await create(aclient, event.id)).json()

    response = await aclient.patch(
        f"/v0/disputes/{dispute['id']}",
        json={"status": "accepted", "message": "Sorry, our meter double counted"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["merchantMessage"]) == ("accepted", "Sorry, our meter double counted")
    assert body["resolvedAt"] is not None and body["updatedAt"] >= body["createdAt"]
    assert await wallet(f, sub.customer_id) == WALLET
    async with f.sessions() as session:
        refunded = await session.get_one(UsageEvent, event.id)
    assert refunded.refunded_at is not None and refunded.refund_transaction_id is not None
    assert refunded.refund_reason == f"dispute {dispute['id']} accepted: Sorry, our meter double counted"
    assert await audit(engine, f.merchant) == []

    # Final: a second resolution either way is a 409, and nothing moves.
    for status in ("declined", "accepted"):
        again = assert_error(
            await aclient.patch(f"/v0/disputes/{dispute['id']}", json={"status": status}), 409
        )
        assert again["code"] == "DISPUTE_RESOLVED" and "already accepted" in again["message"]
    assert await wallet(f, sub.customer_id) == WALLET
    got = (await aclient.get(f"/v0/disputes/{dispute['id']}")).json()
    assert got["status"] == "accepted" and got["disputedAmount"] == "2.50"

    # A refunded event cannot be disputed (nor disputed again).
    other = await charged_event(f, sub, "1.00")
    async with f.sessions() as session:
        row = await session.get_one(UsageEvent, other.id)
        row.refunded_at = datetime.now(UTC)
        await session.commit()
    body = assert_error(await create(aclient, other.id), 409)
    assert body["code"] == "ALREADY_REFUNDED" and "refunded" in body["message"]


async def test_decline_moves_no_money(f: Factory, aclient: httpx.AsyncClient) -> None:
    sub = await funded_subscription(f)
    event = await charged_event(f, sub, "0.004")  # sub-cent charges are disputed exactly
    dispute = (await create(aclient, event.id)).json()
    assert dispute["disputedAmount"] == "0.004"
    body = (await aclient.patch(f"/v0/disputes/{dispute['id']}", json={"status": "declined"})).json()
    assert (body["status"], body["merchantMessage"]) == ("declined", None) and body["resolvedAt"]
    assert await wallet(f, sub.customer_id) == Decimal("9.996")
    async with f.sessions() as session:
        assert (await session.get_one(UsageEvent, event.id)).refunded_at is None


async def test_accepting_after_the_event_was_refunded_accepts_without_a_second_refund(
    f: Factory, aclient: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    sub = await funded_subscription(f)
    event = await charged_event(f, sub, "3.00")
    dispute = (await create(aclient, event.id)).json()
    async with f.sessions() as session:  # PATCH /v0/usage/{id} meanwhile
        await refund_usage_event(session, *tenant(f), event.id, "goodwill", datetime.now(UTC))
        await session.commit()
    body = (await aclient.patch(f"/v0/disputes/{dispute['id']}", json={"status": "accepted"})).json()
    assert body["status"] == "accepted"
    assert await wallet(f, sub.customer_id) == WALLET
    assert await audit(engine, f.merchant) == []


async def test_concurrent_creates_make_one_dispute(f: Factory, aclient: httpx.AsyncClient) -> None:
    sub = await funded_subscription(f)
    event = await charged_event(f, sub, "1.00")
    responses = await asyncio.gather(*(create(aclient, event.id) for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7
    listed = (await aclient.get("/v0/disputes", params={"customerId": sub.customer_id})).json()
    assert listed["pagination"]["total"] == 1


async def test_validation_and_unknown_events(
    f: Factory, aclient: httpx.AsyncClient, other_aclient: httpx.AsyncClient
) -> None:
    sub = await funded_subscription(f)
    event = await charged_event(f, sub, "1.00")
    assert "message" in field_errors(await create(aclient, event.id, "x" * 9))
    assert "message" in field_errors(await create(aclient, event.id, "   short   "))  # 5 characters, trimmed
    assert "message" in field_errors(await create(aclient, event.id, "x" * 1001))
    assert (await create(aclient, event.id, "x" * 10)).status_code == 201  # the bounds are inclusive
    other = await charged_event(f, sub, "1.00")
    assert (await create(aclient, other.id, "y" * 1000)).status_code == 201
    missing = field_errors(await aclient.post("/v0/disputes", json={"message": MESSAGE}))
    assert "usageEventId" in missing
    body = assert_error(await create(aclient, "usg_missing"), 404, "not_found")
    assert "usg_missing" in body["message"]
    # Another merchant's event is unknown to this one.
    third = await charged_event(f, sub, "1.00")
    assert_error(await create(other_aclient, third.id), 404)


async def test_list_filters_and_pages(
    f: Factory,
    engine: AsyncEngine,
    other_merchant: NewMerchant,
    aclient: httpx.AsyncClient,
    other_aclient: httpx.AsyncClient,
) -> None:
    one = await funded_subscription(f)
    two = await funded_subscription(f)
    ids = []
    for sub in (one, one, one, two):
        ids.append((await create(aclient, (await charged_event(f, sub, "1.00")).id)).json()["id"])
    await aclient.patch(f"/v0/disputes/{ids[0]}", json={"status": "declined"})

    async def listed(**params: Any) -> dict[str, Any]:
        response = await aclient.get("/v0/disputes", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    everything = await listed(merchantId=f.merchant.merchant_id)
    assert [d["id"] for d in everything["data"]] == ids[::-1]  # newest first
    assert everything["object"] == "list"
    page = await listed(merchantId=f.merchant.merchant_id, limit=3, offset=0)
    assert len(page["data"]) == 3 and page["pagination"] == {
        "limit": 3,
        "offset": 0,
        "total": 4,
        "hasMore": True,
    }
    last = await listed(merchantId=f.merchant.merchant_id, limit=3, offset=3)
    assert [d["id"] for d in last["data"]] == [ids[0]] and last["pagination"]["hasMore"] is False
    assert [d["id"] for d in (await listed(customerId=two.customer_id))["data"]] == [ids[3]]
    pending = await listed(customerId=one.customer_id, status="pending")
    assert [d["id"] for d in pending["data"]] == [ids[2], ids[1]]
    declined = await listed(merchantId=f.merchant.merchant_id, status="declined")
    assert [d["id"] for d in declined["data"]] == [ids[0]]
    async with f.sessions() as session:
        consumer = (await session.get_one(Customer, two.customer_id)).consumer_id
    assert [d["id"] for d in (await listed(consumerId=consumer))["data"]] == [ids[3]]

    # No filter, bad status, another merchant's ids.
    body = assert_error(await aclient.get("/v0/disputes"), 400)
    assert "merchantId" in body["message"] and "consumerId" in body["message"]
    assert "status" in field_errors(
        await aclient.get("/v0/disputes", params={"customerId": one.customer_id, "status": "open"})
    )
    assert "limit" in field_errors(
        await aclient.get("/v0/disputes", params={"customerId": one.customer_id, "limit": 0})
    )
    assert_error(await aclient.get("/v0/disputes", params={"merchantId": other_merchant.merchant_id}), 403)
    assert_error(await other_aclient.get("/v0/disputes", params={"customerId": one.customer_id}), 404)
    assert_error(await other_aclient.get("/v0/disputes", params={"consumerId": consumer}), 403)
    theirs = await other_aclient.get("/v0/disputes", params={"merchantId": other_merchant.merchant_id})
    assert theirs.json()["data"] == []
    assert_error(await other_aclient.get(f"/v0/disputes/{ids[1]}"), 404)
    assert_error(await other_aclient.patch(f"/v0/disputes/{ids[1]}", json={"status": "accepted"}), 404)
    assert_error(await aclient.patch("/v0/disputes/disp_missing", json={"status": "accepted"}), 404)
    assert "status" in field_errors(await aclient.patch(f"/v0/disputes/{ids[1]}", json={"status": "pending"}))
    assert "message" in field_errors(
        await aclient.patch(f"/v0/disputes/{ids[1]}", json={"status": "declined", "message": "x" * 1001})
    )


async def test_pending_dispute_blocks_customer_delete(f: Factory, aclient: httpx.AsyncClient) -> None:
    sub = await funded_subscription(f)
    dispute = (await create(aclient, (await charged_event(f, sub, "1.00")).id)).json()
    body = assert_error(await aclient.delete(f"/v0/customers/{sub.customer_id}"), 409, "conflict")
    assert "disputes" in body["message"]
    blockers = {b["type"]: b for b in body["details"]["blockers"]}
    assert blockers["disputes"] == {
        "type": "disputes",
        "count": 1,
        "items": [{"id": dispute["id"], "status": "pending"}],
    }

    await aclient.patch(f"/v0/disputes/{dispute['id']}", json={"status": "declined"})
    body = assert_error(await aclient.delete(f"/v0/customers/{sub.customer_id}"), 409)
    assert "disputes" not in {b["type"] for b in body["details"]["blockers"]}  # resolved ones do not block


async def test_refund_at_test_clock_time(f: Factory, aclient: httpx.AsyncClient) -> None:
    clock = await f.test_clock(current_time=datetime(2026, 2, 10, tzinfo=UTC))
    sub = await funded_subscription(f)
    sub = await f.update(sub, test_clock_id=clock.id)
    event = await charged_event(f, sub, "1.00", at=datetime(2026, 2, 9, tzinfo=UTC))
    dispute = (await create(aclient, event.id)).json()
    await aclient.patch(f"/v0/disputes/{dispute['id']}", json={"status": "accepted"})
    async with f.sessions() as session:
        refunded = await session.get_one(UsageEvent, event.id)
    assert refunded.refunded_at == datetime(2026, 2, 10, tzinfo=UTC)
    assert datetime.now(UTC) - timedelta(minutes=5) < datetime.fromisoformat(
        (await aclient.get(f"/v0/disputes/{dispute['id']}")).json()["resolvedAt"]
    )
