"""What GET /v0/revenue reads, aggregated in SQL per bucket and plan: issued invoices (with their wallet
top-up lines), written-off invoices, instant usage charges and their refunds, and one-off payments.

domain/revenue.py adds the rows up; every query here is scoped to one tenant, one currency and the
half-open window [start, end), optionally narrowed to a customer or to some subscriptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, String, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from db.models import Plan, Subscription
from domain.revenue import BUCKET_WIDTHS, CountRow, InvoiceRow


@dataclass(frozen=True)
class RevenueScope:
    merchant_id: str
    environment: str
    currency: str
    start: datetime  # inclusive
    end: datetime  # exclusive
    width: str  # hour | day | week
    customer_id: str | None = None
    subscription_ids: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.width not in BUCKET_WIDTHS:  # interpolated into the SQL below: only these three words
            raise ValueError(f"unknown bucket width {self.width!r}")

    def params(self) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "environment": self.environment,
            "currency": self.currency,
            "start": self.start,
            "end": self.end,
            "customer_id": self.customer_id,
            "subscription_ids": list(self.subscription_ids) if self.subscription_ids else None,
        }


def _bucket(column: str, width: str) -> str:
    return f"date_trunc('{width}', timezone('UTC', {column}))"


def _filters(alias: str) -> str:
    """The scope's narrowing of a table with merchant_id, environment, customer_id and subscription_id."""
    return (
        f"{alias}.merchant_id = :merchant_id AND {alias}.environment = :environment "
        f"AND (CAST(:customer_id AS varchar) IS NULL OR {alias}.customer_id = :customer_id) "
        f"AND (CAST(:subscription_ids AS varchar[]) IS NULL "
        f"OR {alias}.subscription_id = ANY(:subscription_ids))"
    )


def _query(sql: str) -> TextClause:
    return text(sql).bindparams(bindparam("subscription_ids", type_=ARRAY(String)))


def _utc(bucket: datetime) -> datetime:
    return bucket.replace(tzinfo=UTC) if bucket.tzinfo is None else bucket.astimezone(UTC)


# A top-up line (db/funding.py): the generated fee line keyed `topup:<invoice id>`; it funds the wallet.
_FUNDING = (
    "(SELECT coalesce(sum(li.total), 0) FROM line_items li WHERE li.invoice_id = i.id "
    "AND li.type = 'fee' AND li.idempotency_key LIKE 'topup:%')"
)

# When an invoice was written off: its WRITTEN_OFF transition in metadata.transitions
# (activities/subscription.py records each one).
_WRITTEN_OFF_AT = (
    "coalesce((SELECT max((t->>'at')::timestamptz) FROM jsonb_array_elements("
    "CASE WHEN jsonb_typeof(i.metadata->'transitions') = 'array' THEN i.metadata->'transitions' "
    "ELSE '[]'::jsonb END) t WHERE t->>'to' = 'WRITTEN_OFF'), i.updated_at)"
)


async def invoice_rows(session: AsyncSession, scope: RevenueScope) -> list[InvoiceRow]:
    """Invoices issued in the window, per bucket of `issuedAt`, plan and status."""
    sql = f"""
        WITH inv AS (
            SELECT i.issued_at, i.status, i.grand_total, s.plan_id, {_FUNDING} AS funding
            FROM invoices i JOIN subscriptions s ON s.id = i.subscription_id
            WHERE {_filters("i")} AND i.currency = :currency
              AND i.issued_at >= :start AND i.issued_at < :end
        )
        SELECT {_bucket("issued_at", scope.width)} AS bucket, plan_id, status, count(*),
               coalesce(sum(grand_total), 0), coalesce(sum(funding), 0), count(*) FILTER (WHERE funding <> 0)
        FROM inv GROUP BY 1, 2, 3
    """
    rows = await session.execute(_query(sql), scope.params())
    return [
        InvoiceRow(_utc(b), plan, status, int(n), Decimal(amount), Decimal(funding), int(funded))
        for b, plan, status, n, amount, funding, funded in rows
    ]


async def written_off_rows(session: AsyncSession, scope: RevenueScope) -> list[CountRow]:
    """Invoices written off in the window (whenever issued), per bucket of when and plan."""
    sql = f"""
        WITH inv AS (
            SELECT {_WRITTEN_OFF_AT} AS at, i.grand_total, s.plan_id
            FROM invoices i JOIN subscriptions s ON s.id = i.subscription_id
            WHERE {_filters("i")} AND i.currency = :currency AND i.status = 'WRITTEN_OFF'
        )
        SELECT {_bucket("at", scope.width)}, plan_id, count(*), coalesce(sum(grand_total), 0)
        FROM inv WHERE at >= :start AND at < :end GROUP BY 1, 2
    """
    rows = await session.execute(_query(sql), scope.params())
    return [CountRow(_utc(b), plan, int(n), Decimal(amount)) for b, plan, n, amount in rows]


async def _usage(session: AsyncSession, scope: RevenueScope, instant: str) -> list[CountRow]:
    sql = f"""
        SELECT {_bucket("u." + instant, scope.width)}, s.plan_id, count(*), coalesce(sum(u.instant_amount), 0)
        FROM usage_events u JOIN subscriptions s ON s.id = u.subscription_id
        WHERE {_filters("u")} AND u.currency = :currency AND u.instant_amount > 0
          AND u.{instant} >= :start AND u.{instant} < :end
        GROUP BY 1, 2
    """
    rows = await session.execute(_query(sql), scope.params())
    return [CountRow(_utc(b), plan, int(n), Decimal(amount)) for b, plan, n, amount in rows]


async def instant_usage_rows(session: AsyncSession, scope: RevenueScope) -> list[CountRow]:
    """Instant usage charges (debited at once) of events timed in the window, per bucket and plan."""
    return await _usage(session, scope, "timestamp")


async def refund_rows(session: AsyncSession, scope: RevenueScope) -> list[CountRow]:
    """Refunds, made in the window, of instant usage charges (credited back to the wallet), per bucket and
    plan. An in-arrears part's refund is a negative line on an invoice, so the invoices hold it already."""
    return await _usage(session, scope, "refunded_at")


async def payment_rows(session: AsyncSession, scope: RevenueScope) -> list[CountRow]:
    """One-off payments (POST /v0/payments) per bucket, plan (None: a payment has no plan) and status, each
    by the instant that put it there: completed by `completedAt` (when the money came in, what revenue
    counts), expired by when it expired, pending (and processing, still open) by `createdAt`. A payment has
    no subscription, so a scope narrowed to subscriptionIds holds none."""
    if scope.subscription_ids:
        return []
    sql = f"""
        WITH pay AS (
            SELECT p.amount,
                   CASE p.status WHEN 'processing' THEN 'pending' ELSE p.status END AS status,
                   CASE p.status WHEN 'completed' THEN p.completed_at
                                 WHEN 'expired' THEN p.expired_at
                                 ELSE p.created_at END AS at
            FROM payments p
            WHERE p.merchant_id = :merchant_id AND p.environment = :environment
              AND p.currency = :currency
              AND (CAST(:customer_id AS varchar) IS NULL OR p.customer_id = :customer_id)
              AND p.status IN ('pending', 'processing', 'completed', 'expired')
        )
        SELECT {_bucket("at", scope.width)}, status, count(*), coalesce(sum(amount), 0)
        FROM pay WHERE at >= :start AND at < :end GROUP BY 1, 2
    """
    params = {k: v for k, v in scope.params().items() if k != "subscription_ids"}
    found = await session.execute(text(sql), params)
    return [CountRow(_utc(b), None, int(n), Decimal(amount), status) for b, status, n, amount in found]


async def primary_currency(session: AsyncSession, merchant_id: str, environment: str) -> str:
    """The merchant's primary currency: the one most of its subscriptions are in (USD when none)."""
    currency = await session.scalar(
        select(Subscription.currency)
        .where(Subscription.merchant_id == merchant_id, Subscription.environment == environment)
        .group_by(Subscription.currency)
        .order_by(text("count(*) DESC"), Subscription.currency)
        .limit(1)
    )
    return currency or "USD"


async def plan_names(session: AsyncSession, plan_ids: Sequence[str]) -> dict[str, str]:
    if not plan_ids:
        return {}
    rows = await session.execute(select(Plan.id, Plan.name).where(Plan.id.in_(list(plan_ids))))
    return {plan_id: name for plan_id, name in rows}


async def subscriptions_missing(
    session: AsyncSession, merchant_id: str, environment: str, subscription_ids: Sequence[str]
) -> list[str]:
    """Those of `subscription_ids` the tenant has no subscription with, in the order given."""
    found = set(
        await session.scalars(
            select(Subscription.id).where(
                Subscription.id.in_(list(subscription_ids)),
                Subscription.merchant_id == merchant_id,
                Subscription.environment == environment,
            )
        )
    )
    return [s for s in subscription_ids if s not in found]
