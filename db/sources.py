"""Queries of the installation workflow's activities: what an installation needs to import and approve, the
idempotent import of source events, and the batched review writes (one statement per kind of write, so a
bulk approval of 1,000 events costs a handful of round trips, not thousands)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import insert, select, update
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


@dataclass(frozen=True, slots=True)
class ReviewContext:
    """What a review needs of its installation: who the meter events are for, the subscription's currency
    (upper case) and the revenue metric's eventType and valueProperty."""

    merchant_id: str
    environment: str
    source_id: str
    subscription_id: str
    customer_id: str
    currency: str
    revenue_metric_id: str
    event_type: str | None
    value_property: str | None

    @classmethod
    def of(cls, ctx: InstallationContext) -> ReviewContext:
        inst = ctx.installation
        return cls(
            inst.merchant_id, inst.environment, inst.source_id, inst.subscription_id, inst.customer_id,
            ctx.currency, ctx.source.revenue_metric_id, ctx.event_type, ctx.value_property,
        )  # fmt: skip


_REVIEW_CONTEXT = """
SELECT i.merchant_id, i.environment, i.source_id, i.subscription_id, i.customer_id, s.currency,
       src.revenue_metric_id, m.event_type, m.value_property
FROM source_installations i
JOIN sources src ON src.id = i.source_id
JOIN subscriptions s ON s.id = i.subscription_id
JOIN billable_metrics m ON m.id = src.revenue_metric_id
WHERE i.id = $1
FOR UPDATE OF i
"""


async def review_context(driver: Any, installation_id: str) -> ReviewContext | None:
    """installation_context(lock=True) for a review, on the asyncpg connection `driver` (in its transaction):
    the installation locked (one writer per installation), what a review needs of it."""
    row = await driver.fetchrow(_REVIEW_CONTEXT, installation_id)
    if row is None:
        return None
    merchant_id, environment, source_id, subscription_id, customer_id, currency, metric, event_type, path = (
        row
    )
    return ReviewContext(
        merchant_id, environment, source_id, subscription_id, customer_id, currency.upper(), metric,
        event_type, path,
    )  # fmt: skip


@dataclass(slots=True)
class ReviewRow:
    """What a review needs of a locked source event: its status, and the facts approval checks and meters.
    The rest of the row stays in PostgreSQL, where `review_events` renders the webhook payload from it."""

    id: str
    status: str
    external_event_id: str
    amount: Decimal
    currency: str
    usage_at: datetime
    error_message: str | None = None
    processed_by: str | None = None
    matched_rule_id: str | None = None
    usage_event_ids: list[str] = field(default_factory=list)


class Reviewable(Protocol):
    """An EventRow (just imported) or a ReviewRow (locked for review)."""

    id: str
    status: str
    external_event_id: str
    amount: Decimal
    currency: str
    usage_at: datetime
    error_message: str | None
    processed_by: str | None
    matched_rule_id: str | None
    usage_event_ids: list[str]


_LOCK_FOR_REVIEW = """
SELECT id, status, external_event_id, amount, currency, usage_at, error_message, processed_by, matched_rule_id
FROM source_events
WHERE installation_id = $1 AND id = ANY($2::varchar[])
ORDER BY id
FOR UPDATE
"""


async def lock_for_review(driver: Any, installation_id: str, ids: Sequence[str]) -> list[ReviewRow]:
    """The installation's events among `ids`, locked in id order (two reviews never deadlock)."""
    rows = await driver.fetch(_LOCK_FOR_REVIEW, installation_id, list(ids))
    return [ReviewRow(*r) for r in rows]


def _iso(column: str) -> str:
    # api/wire.iso: UTC, milliseconds (truncated, as isoformat's timespec), Z.
    return f"""to_char({column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


# One statement writes a whole review: the approved events' meter events (each key once: an existing one is
# reused, as db/events.insert_events resolves it), the events' new status and review fields, and one outbox
# row per event whose payload is the event as GET /v0/sources/{id}/events/{eventId} shows it, rendered here
# from the updated row (api/schemas/source_views.SourceEventOut; tests/db/test_source_review_sql.py holds the
# two to the same output). The amount comes rendered from Python (domain/money.format_money). Answers each
# event's status and usage_event_ids; a meter id that resolved to nothing (a key committed by another
# transaction after this statement's snapshot) comes back as JSON null, for the caller to retry.
_REVIEW = f"""
WITH u AS (
    SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::text[], $4::varchar[], $5::varchar[],
                         $6::varchar[], $7::varchar[], $8::text[], $9::text[], $10::timestamptz[],
                         $11::varchar[], $12::varchar[])
        WITH ORDINALITY AS u(id, status, error_message, processed_by, rule, meter_id, meter_key, meter_data,
                             amount, usage_at, outbox_id, event_type, ord)
),
meters AS (
    INSERT INTO meter_events
        (id, merchant_id, environment, type, source, subject, data, timestamp, idempotency_key)
    SELECT u.meter_id, $13, $14, $15, $16, $17, u.meter_data::jsonb, u.usage_at, u.meter_key
    FROM u
    WHERE u.meter_id IS NOT NULL
    ORDER BY u.ord
    ON CONFLICT (merchant_id, environment, idempotency_key) DO NOTHING
    RETURNING id, idempotency_key
),
resolved AS (
    SELECT u.id, coalesce(
        m.id,
        (SELECT x.id FROM meter_events x
         WHERE x.merchant_id = $13 AND x.environment = $14 AND x.idempotency_key = u.meter_key)
    ) AS meter_id
    FROM u LEFT JOIN meters m ON m.idempotency_key = u.meter_key
    WHERE u.meter_id IS NOT NULL
),
reviewed AS (
    UPDATE source_events AS e
    SET status = u.status, error_message = u.error_message, processed_at = $18,
        processed_by = u.processed_by, matched_rule_id = u.rule,
        usage_event_ids = CASE WHEN u.meter_id IS NULL THEN e.usage_event_ids
                               ELSE jsonb_build_array(r.meter_id) END,
        updated_at = now()
    FROM u LEFT JOIN resolved r ON r.id = u.id
    WHERE e.id = u.id
    RETURNING e.*, u.amount AS amount_text, u.outbox_id, u.event_type, u.ord
),
outbox AS (
    INSERT INTO outbox_events (id, merchant_id, environment, event_type, payload)
    SELECT r.outbox_id, r.merchant_id, r.environment, r.event_type, jsonb_build_object(
        'id', r.id,
        'object', 'sourceEvent',
        'sourceId', r.source_id,
        'installationId', r.installation_id,
        'externalEventId', r.external_event_id,
        'status', r.status,
        'rawData', r.raw_data,
        'customerId', r.customer_id,
        'subscriptionId', r.subscription_id,
        'amount', r.amount_text,
        'currency', r.currency,
        'errorMessage', r.error_message,
        'processedAt', {_iso("r.processed_at")},
        'processedBy', r.processed_by,
        'usageEventIds', r.usage_event_ids,
        'createdAt', {_iso("r.created_at")},
        'updatedAt', {_iso("r.updated_at")}
    )
    FROM reviewed r
    ORDER BY r.ord
)
SELECT id, usage_event_ids::text FROM reviewed
"""


@dataclass(frozen=True, slots=True)
class Metering:
    """The meter events an approval records: who and what, the same for every event of an installation."""

    merchant_id: str
    environment: str
    type: str | None
    source: str
    subject: str


@dataclass(frozen=True, slots=True)
class Review:
    """One event's outcome, as `review_events` writes it: its new status and fields, the meter event to
    record (approved ones only), and its outbox row."""

    event: Reviewable
    amount: str  # the payload's amount, rendered by domain/money.format_money
    outbox_id: str
    event_type: str
    meter_id: str | None = None
    meter_data: str | None = None  # JSON


async def review_events(
    driver: Any, reviews: Sequence[Review], metering: Metering, processed_at: datetime
) -> dict[str, list[str | None]]:
    """Write `reviews` in one statement (see _REVIEW) on the asyncpg connection `driver`; `updated_at` is the
    transaction's time. Returns each event's usage_event_ids as stored (a meter id of None: not resolved,
    retry the transaction)."""
    if not reviews:
        return {}
    events = [r.event for r in reviews]
    rows = await driver.fetch(
        _REVIEW,
        [e.id for e in events],
        [e.status for e in events],
        [e.error_message for e in events],
        [e.processed_by for e in events],
        [e.matched_rule_id for e in events],
        [r.meter_id for r in reviews],
        [f"source_event:{e.id}" if r.meter_id else None for e, r in zip(events, reviews, strict=True)],
        [r.meter_data for r in reviews],
        [r.amount for r in reviews],
        [e.usage_at for e in events],
        [r.outbox_id for r in reviews],
        [r.event_type for r in reviews],
        metering.merchant_id,
        metering.environment,
        metering.type,
        metering.source,
        metering.subject,
        processed_at,
    )
    return {r[0]: json.loads(r[1]) for r in rows}


async def driver_of(session: AsyncSession) -> Any:
    """The asyncpg connection under `session` (in its transaction)."""
    return (await (await session.connection()).get_raw_connection()).driver_connection


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
