"""Review outbox payloads are rendered in SQL (db/sources._REVIEW) from the updated rows: each must be what
the API's own representation (SourceEventOut, activities/rendering.source_event_data) says for the same row,
for processed, failed and rejected events, and an approval reuses a meter event already stored under the
event's key."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select

from activities.rendering import source_event_data
from db.events import NewEvent, insert_events
from db.models import MeterEvent, OutboxEvent, SourceEvent
from db.session import session_factory
from domain.ids import new_id
from tests.stripe_fake import new_key, pay_invoices
from tests.workflows import source_harness
from tests.workflows.source_harness import POLL, START, Revenue, clock_bound
from workflows.client import review_source_events
from workflows.source_messages import ReviewEvents

env, revenue = source_harness.env, source_harness.revenue


async def payloads(revenue: Revenue, event_type: str) -> dict[str, dict[str, object]]:
    async with session_factory(revenue.billing.engine)() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.merchant_id == revenue.billing.merchant.merchant_id,
                OutboxEvent.event_type == event_type,
            )
        )
        return {str(r.payload["id"]): r.payload for r in rows}


async def test_review_payloads_say_what_get_says_and_a_stored_meter_key_is_reused(revenue: Revenue) -> None:
    clock, sub, source = await clock_bound(revenue)
    key = new_key()
    installation, _ = await revenue.connect(source, sub, key)
    usd = pay_invoices(revenue.stripe, key, [1000, 2550, 999, 12345])
    [eur] = pay_invoices(revenue.stripe, key, [3000], currency="eur")
    await revenue.billing.advance(clock, START + POLL)
    events = {e.external_event_id: e for e in await revenue.events(installation)}
    approved, stored_key, rejected = events[usd[0]], events[usd[1]], events[usd[2]]
    failed = events[eur]

    # A meter event already holds one event's key: the approval points at it instead of writing another.
    merchant = revenue.billing.merchant.merchant_id
    async with revenue.billing.engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        [existing] = await insert_events(
            driver,
            [
                NewEvent(
                    id=new_id("event"), merchant_id=merchant, environment="sandbox", type="revenue.other",
                    source="test", subject=sub["customerId"], data={"value": "25.50"},
                    timestamp=datetime(2028, 1, 1, tzinfo=UTC),
                    idempotency_key=f"source_event:{stored_key.id}",
                )
            ],
        )  # fmt: skip
        await conn.commit()

    client = revenue.billing.env.client
    approve = ReviewEvents(
        action="approve", event_ids=[approved.id, failed.id, stored_key.id], processed_by="usr_test"
    )
    result = await review_source_events(client, installation, approve)
    assert (result.done, [f.id for f in result.failed]) == ([approved.id, stored_key.id], [failed.id])
    reject = ReviewEvents(action="reject", event_ids=[rejected.id], processed_by="usr_other")
    assert (await review_source_events(client, installation, reject)).done == [rejected.id]

    async with session_factory(revenue.billing.engine)() as session:
        rows = {
            r.id: r
            for r in await session.scalars(
                select(SourceEvent).where(SourceEvent.installation_id == installation)
            )
        }
        meters = {
            m.idempotency_key: m
            for m in await session.scalars(select(MeterEvent).where(MeterEvent.merchant_id == merchant))
        }
    assert rows[stored_key.id].usage_event_ids == [existing.id]
    [meter_id] = rows[approved.id].usage_event_ids
    meter = meters[f"source_event:{approved.id}"]
    assert (meter.id, meter.data, meter.subject) == (meter_id, {"value": "10.000000000"}, sub["customerId"])
    assert meter.timestamp == approved.usage_at

    for event_type, ids in {
        "source_event.processed.v0": [approved.id, stored_key.id],
        "source_event.failed.v0": [failed.id],
        "source_event.rejected.v0": [rejected.id],
    }.items():
        sent = await payloads(revenue, event_type)
        assert sorted(sent) == sorted(ids)
        for event_id in ids:
            assert sent[event_id] == source_event_data(rows[event_id])
    shown = (await payloads(revenue, "source_event.processed.v0"))[approved.id]
    assert (shown["status"], shown["amount"], shown["processedBy"]) == ("processed", "10.00", "usr_test")
    assert shown["rawData"] == approved.raw_data
    shown = (await payloads(revenue, "source_event.failed.v0"))[failed.id]
    assert shown["status"] == "failed" and "paid in EUR" in str(shown["errorMessage"])
    assert shown["usageEventIds"] == []
    assert rows[events[usd[3]].id].status == "pending"  # not asked
    assert rows[approved.id].amount == Decimal("10.00")
