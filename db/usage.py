"""Queries over usage events (POST /v0/usage, Legacy billing): one by id, a window of them, the ledger charge
of one, the in-arrears usage a period invoice bills (D4), and the sums revenue reports.

The hot write path (ingestion with its instant debits) lives in db/usage_writer.py; this module is the
ORM-side reader every other caller uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Invoice, LedgerAccount, LedgerEntry, LedgerTransaction, UsageEvent
from domain import ledger
from domain.pricing.base import PeriodUsage


async def get(
    session: AsyncSession, merchant_id: str, environment: str, usage_event_id: str, *, lock: bool = False
) -> UsageEvent | None:
    """The tenant's usage event with this id (another tenant's id is None); `lock` takes it FOR UPDATE."""
    query = select(UsageEvent).where(
        UsageEvent.id == usage_event_id,
        UsageEvent.merchant_id == merchant_id,
        UsageEvent.environment == environment,
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    row: UsageEvent | None = await session.scalar(query)
    return row


@dataclass(frozen=True)
class UsageFilter:
    merchant_id: str
    environment: str
    start: datetime  # inclusive
    end: datetime  # inclusive: "filtering events up to this timestamp"
    customer_id: str | None = None
    consumer_id: str | None = None
    subscription_id: str | None = None


async def list_events(
    session: AsyncSession, where: UsageFilter, *, limit: int, offset: int
) -> tuple[list[UsageEvent], int]:
    """One page of the window's usage events, newest first, and how many the window holds."""
    conditions = [
        UsageEvent.merchant_id == where.merchant_id,
        UsageEvent.environment == where.environment,
        UsageEvent.timestamp >= where.start,
        UsageEvent.timestamp <= where.end,
    ]
    if where.customer_id is not None:
        conditions.append(UsageEvent.customer_id == where.customer_id)
    if where.consumer_id is not None:
        conditions.append(UsageEvent.consumer_id == where.consumer_id)
    if where.subscription_id is not None:
        conditions.append(UsageEvent.subscription_id == where.subscription_id)
    total = await session.scalar(select(func.count()).select_from(UsageEvent).where(*conditions))
    rows = await session.scalars(
        select(UsageEvent)
        .where(*conditions)
        .order_by(UsageEvent.timestamp.desc(), UsageEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


async def charge(session: AsyncSession, transaction_id: str) -> ledger.Transaction:
    """The ledger transaction `transaction_id` (an instant usage charge) as domain.ledger builds them, so
    domain.ledger.refund can give it back."""
    kind, currency = (
        await session.execute(
            select(LedgerTransaction.kind, LedgerTransaction.currency).where(
                LedgerTransaction.id == transaction_id
            )
        )
    ).one()
    rows = await session.execute(
        select(LedgerAccount.kind, LedgerAccount.owner_id, LedgerEntry.amount)
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(LedgerEntry.transaction_id == transaction_id)
        .order_by(LedgerEntry.id)
    )
    entries = tuple(ledger.Entry(ledger.AccountRef(k, o), int(a)) for k, o, a in rows)
    return ledger.Transaction(kind, currency, entries)


async def period_invoice(
    session: AsyncSession, subscription_id: str, at: datetime, *, share: bool = False
) -> Invoice | None:
    """The period invoice (sequence ≥ 1) whose service period holds `at`; `share` takes it FOR SHARE, so the
    workflow's calculation waits for (or is seen by) the caller's transaction."""
    query = select(Invoice).where(
        Invoice.subscription_id == subscription_id,
        Invoice.sequence_number >= 1,
        Invoice.period_start <= at,
        Invoice.period_end > at,
    )
    if share:
        query = query.with_for_update(read=True).execution_options(populate_existing=True)
    row: Invoice | None = await session.scalar(query.order_by(Invoice.sequence_number.desc()).limit(1))
    return row


async def open_invoice(session: AsyncSession, subscription_id: str, *, share: bool = False) -> Invoice | None:
    """The subscription's newest invoice still open for lines (ACTIVE or CLOSING)."""
    query = select(Invoice).where(
        Invoice.subscription_id == subscription_id,
        Invoice.sequence_number >= 1,
        Invoice.status.in_(("ACTIVE", "CLOSING")),
    )
    if share:
        query = query.with_for_update(read=True).execution_options(populate_existing=True)
    row: Invoice | None = await session.scalar(query.order_by(Invoice.sequence_number.desc()).limit(1))
    return row


# ---- what a period invoice bills (D4) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArrearsUsage:
    """One (subscription, price) sum of the non-refunded in-arrears usage events of a period."""

    quantity: Decimal  # Σ quantity
    amount: Decimal  # Σ amount(record), each priced on its own at ingestion (D5)
    price: Decimal | None  # the one unit price every record shares, else None
    events: int


# Each property of an event is one record; a property's `paymentTerm` and `amount` are what pricing found
# at ingestion (api/usage_ingest.py).
_ARREARS = text(
    """
SELECT q.i, p->>'priceId' AS price_id, sum((p->>'quantity')::numeric) AS quantity,
       sum((p->>'amount')::numeric) AS amount,
       CASE WHEN min((p->>'unitPrice')::numeric) = max((p->>'unitPrice')::numeric)
            THEN min((p->>'unitPrice')::numeric) END AS unit_price,
       count(*) AS records
FROM jsonb_to_recordset(CAST(:periods AS jsonb)) AS q(i int, subscription_id text, start_at timestamptz,
                                                       end_at timestamptz)
JOIN usage_events u
  ON u.subscription_id = q.subscription_id AND u.timestamp >= q.start_at AND u.timestamp < q.end_at
CROSS JOIN LATERAL jsonb_array_elements(u.properties) AS p
WHERE u.refunded_at IS NULL AND p->>'paymentTerm' = 'in_arrears'
GROUP BY q.i, p->>'priceId'
"""
)


async def arrears_usages(
    session: AsyncSession, periods: Sequence[tuple[str, datetime, datetime]]
) -> list[dict[str, ArrearsUsage]]:
    """For each (subscription id, start, end): {price id: ArrearsUsage} of its in-arrears usage events with
    timestamps in [start, end), refunded ones left out; one round trip for all of them."""
    out: list[dict[str, ArrearsUsage]] = [{} for _ in periods]
    if not periods:
        return out
    param = json.dumps(
        [
            {"i": i, "subscription_id": s, "start_at": a.isoformat(), "end_at": b.isoformat()}
            for i, (s, a, b) in enumerate(periods)
        ]
    )
    for i, price_id, quantity, amount, unit_price, records in await session.execute(
        _ARREARS, {"periods": param}
    ):
        out[i][price_id] = ArrearsUsage(
            Decimal(quantity),
            Decimal(amount),
            Decimal(unit_price) if unit_price is not None else None,
            records,
        )
    return out


_HAS_ARREARS = text("""usage_events.properties @> '[{"paymentTerm": "in_arrears"}]'::jsonb""")


async def mark_billed(
    session: AsyncSession, invoice_id: str, subscription_id: str, start: datetime, end: datetime
) -> int:
    """Set invoice_id on the period's non-refunded in-arrears usage events: the invoice that billed them
    (called where the invoice is calculated, under its row lock). Returns how many."""
    result: Any = await session.execute(
        update(UsageEvent)
        .where(
            UsageEvent.subscription_id == subscription_id,
            UsageEvent.timestamp >= start,
            UsageEvent.timestamp < end,
            UsageEvent.refunded_at.is_(None),
            _HAS_ARREARS,
            UsageEvent.invoice_id.is_(None),
        )
        .values(invoice_id=invoice_id)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


# ---- sums (revenue) ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageSums:
    instant: Decimal  # Σ instant charges (debited from wallets or reservations) of events in the window
    instant_refunded: Decimal  # of those, refunded
    events: int


async def sums(
    session: AsyncSession, merchant_id: str, environment: str, start: datetime, end: datetime
) -> dict[str, UsageSums]:
    """{currency: UsageSums} of the tenant's usage events with timestamps in [start, end)."""
    rows = await session.execute(
        select(
            UsageEvent.currency,
            func.coalesce(func.sum(UsageEvent.instant_amount), 0),
            func.coalesce(func.sum(UsageEvent.instant_amount).filter(UsageEvent.refunded_at.is_not(None)), 0),
            func.count(),
        )
        .where(
            UsageEvent.merchant_id == merchant_id,
            UsageEvent.environment == environment,
            UsageEvent.timestamp >= start,
            UsageEvent.timestamp < end,
        )
        .group_by(UsageEvent.currency)
    )
    return {c: UsageSums(Decimal(a), Decimal(r), int(n)) for c, a, r, n in rows}


def with_usage_events(meters: PeriodUsage | None, events: ArrearsUsage | None) -> PeriodUsage:
    """A metered price's period usage with its in-arrears usage events added (D4): their quantities join
    the period quantity and the per-record sums (each event a record, priced at ingestion, D5)."""
    if events is None:
        return meters if meters is not None else PeriodUsage(quantity=Decimal(0))
    if meters is None or (meters.quantity == 0 and meters.record_values == 0):
        return PeriodUsage(events.quantity, events.quantity, events.amount, events.price)
    shared = meters.record_price if meters.record_price == events.price else None
    return PeriodUsage(
        meters.quantity + events.quantity,
        meters.record_values + events.quantity,
        meters.record_amount + events.amount,
        shared,
    )
