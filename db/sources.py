"""Queries of the installation workflow's activities: what an installation needs to import and approve, the
idempotent import of source events, and the batched review writes (one statement per kind of write, so a
bulk approval of 1,000 events costs a handful of round trips, not thousands)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    BillableMetric,
    OutboxEvent,
    Source,
    SourceEvent,
    SourceInstallation,
    SourceRule,
    Subscription,
    TestClock,
)
from domain.source_rules import RuleView

_EVENT_COLUMNS = list(SourceEvent.__table__.c)


@dataclass(slots=True)
class EventRow:
    """A source event's columns, detached: the review and import paths handle a thousand at a time, and a
    plain row costs a fraction of an ORM object. Changes are written by `write_reviews`."""

    id: str
    merchant_id: str
    environment: str
    created_at: datetime
    updated_at: datetime
    source_id: str
    installation_id: str
    customer_id: str
    subscription_id: str
    external_event_id: str
    status: str
    raw_data: dict[str, Any]
    amount: Decimal
    currency: str
    customer_name: str | None
    customer_email: str | None
    paid_at: datetime
    usage_at: datetime
    error_message: str | None
    processed_at: datetime | None
    processed_by: str | None
    usage_event_ids: list[str]
    matched_rule_id: str | None


@dataclass
class InstallationContext:
    installation: SourceInstallation
    source: Source
    currency: str  # the subscription's (upper case)
    test_clock_id: str | None
    clock_time: datetime | None  # the test clock's reading when bound
    event_type: str | None  # the mapped revenue metric's
    value_property: str | None


async def installation_context(
    session: AsyncSession, installation_id: str, *, lock: bool = False
) -> InstallationContext | None:
    """The installation (locked FOR UPDATE when `lock`) with its source, subscription currency, clock and
    the revenue metric, in one round trip."""
    query = (
        select(SourceInstallation, Source, Subscription.currency, Subscription.test_clock_id,
               TestClock.current_time, BillableMetric.event_type, BillableMetric.value_property)
        .join(Source, Source.id == SourceInstallation.source_id)
        .join(Subscription, Subscription.id == SourceInstallation.subscription_id)
        .join(BillableMetric, BillableMetric.id == Source.revenue_metric_id)
        .outerjoin(TestClock, TestClock.id == Subscription.test_clock_id)
        .where(SourceInstallation.id == installation_id)
    )  # fmt: skip
    if lock:
        query = query.with_for_update(of=SourceInstallation)
    row = (await session.execute(query)).one_or_none()
    if row is None:
        return None
    inst, source, currency, clock_id, clock_time, event_type, value_property = row
    return InstallationContext(
        inst, source, currency.upper(), clock_id, clock_time, event_type, value_property
    )


async def rule_views(session: AsyncSession, source_id: str) -> list[RuleView]:
    rows = await session.scalars(select(SourceRule).where(SourceRule.source_id == source_id))
    return [RuleView(r.id, r.order, r.created_at, r.enabled, r.conditions) for r in rows]


async def count_rule_evaluations(
    session: AsyncSession, evaluated: dict[str, int], matched: dict[str, int], at: datetime
) -> None:
    """Add to each rule's evaluationCount/matchCount (one statement per rule touched by the page)."""
    for rule_id, count in evaluated.items():
        await session.execute(
            update(SourceRule)
            .where(SourceRule.id == rule_id)
            .values(
                evaluation_count=SourceRule.evaluation_count + count,
                match_count=SourceRule.match_count + matched.get(rule_id, 0),
                last_evaluated_at=at,
            )
        )


async def insert_new_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[EventRow]:
    """Insert the imported events, each (source, Stripe invoice) once; returns only the ones this call
    created (a repeated poll or a retried activity gets nothing back for what is already there)."""
    if not rows:
        return []
    statement = (
        pg_insert(SourceEvent)
        .values(list(rows))
        .on_conflict_do_nothing(constraint="uq_source_events_external")
        .returning(*_EVENT_COLUMNS)
    )
    return [EventRow(**r) for r in (await session.execute(statement)).mappings()]


async def lock_events(session: AsyncSession, installation_id: str, ids: Sequence[str]) -> list[EventRow]:
    """The installation's events among `ids`, locked; detached copies (changes go through `write_reviews`)."""
    statement = (
        select(*_EVENT_COLUMNS)
        .where(SourceEvent.installation_id == installation_id, SourceEvent.id.in_(list(ids)))
        .order_by(SourceEvent.id)
        .with_for_update()
    )
    return [EventRow(**r) for r in (await session.execute(statement)).mappings()]


async def transaction_now(session: AsyncSession) -> datetime:
    now: datetime = await session.scalar(select(func.now()))  # type: ignore[assignment]
    return now


_REVIEW = """
UPDATE source_events AS e
SET status = u.status, error_message = u.error_message, processed_at = u.processed_at,
    processed_by = u.processed_by, usage_event_ids = u.usage_event_ids::jsonb, matched_rule_id = u.rule,
    updated_at = $8
FROM unnest($1::varchar[], $2::varchar[], $3::text[], $4::timestamptz[], $5::varchar[], $6::text[],
            $7::varchar[]) AS u(id, status, error_message, processed_at, processed_by, usage_event_ids, rule)
WHERE e.id = u.id
"""


async def write_reviews(session: AsyncSession, events: Sequence[EventRow], now: datetime) -> None:
    """Write the reviewed events' new status and review fields in one statement; `updated_at` = `now`
    (the transaction's time, which their rendering shows)."""
    if not events:
        return
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    assert driver is not None
    await driver.execute(
        _REVIEW,
        [e.id for e in events],
        [e.status for e in events],
        [e.error_message for e in events],
        [e.processed_at for e in events],
        [e.processed_by for e in events],
        [json.dumps(list(e.usage_event_ids or [])) for e in events],
        [e.matched_rule_id for e in events],
        now,
    )
    for e in events:
        e.updated_at = now


async def add_outbox_rows(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Many outbox rows in one INSERT (db/outbox.record adds them one ORM object at a time)."""
    if rows:
        await session.execute(insert(OutboxEvent), list(rows))


async def pending_event_ids(session: AsyncSession, installation_id: str) -> list[str]:
    return list(
        await session.scalars(
            select(SourceEvent.id)
            .where(SourceEvent.installation_id == installation_id, SourceEvent.status == "pending")
            .order_by(SourceEvent.id)
        )
    )


async def pending_for_invoices(
    session: AsyncSession, installation_id: str, invoice_ids: Sequence[str], exclude: set[str]
) -> list[str]:
    """Pending events of the installation for these Stripe invoices, but those in `exclude`."""
    ids = await session.scalars(
        select(SourceEvent.id).where(
            SourceEvent.installation_id == installation_id,
            SourceEvent.external_event_id.in_(list(invoice_ids)),
            SourceEvent.status == "pending",
        )
    )
    return [i for i in ids if i not in exclude]
