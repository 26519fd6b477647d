"""The statements of usage ingestion, on a raw asyncpg connection inside the caller's transaction: what a
batch of usage events needs to know (the customers' subscriptions, their plans' metric prices, events
already stored under the same keys), the period invoices their in-arrears parts join, and the one INSERT
that stores them. api/usage_ingest.py decides; this module reads and writes.

Lock order of an ingestion transaction (the API's, see activities/subscription.py): subscriptions FOR KEY
SHARE (what the usage rows' foreign keys take anyway; a termination's FOR UPDATE waits for the batch, or the
batch reads the terminated row), then period invoices FOR SHARE, then entitlement rows, then ledger
accounts (db.ledger), then the usage rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from db.ledger import LedgerWrite, write_batch


@dataclass(frozen=True, slots=True)
class LiveSubscription:
    id: str
    customer_id: str
    consumer_id: str
    status: str
    started_at: datetime
    terminated_at: datetime | None
    ending_at: datetime | None
    currency: str
    plan_id: str
    billing_version: int
    clock_time: datetime | None  # the current time of its test clock, if bound to one


@dataclass(frozen=True, slots=True)
class MetricPrice:
    id: str
    metric_id: str
    model: str
    payment_term: str
    properties: dict[str, Any]


@dataclass(slots=True)
class UsageRecord:
    """A usage_events row as ingestion writes and answers it (the attributes api/schemas/usage.wire reads)."""

    id: str
    merchant_id: str
    environment: str
    customer_id: str
    consumer_id: str
    subscription_id: str
    entitlement_id: str | None
    idempotency_key: str
    timestamp: datetime
    properties: list[dict[str, Any]]
    metadata_: dict[str, Any] | None
    currency: str
    price: Decimal
    total_tax: Decimal
    total_amount: Decimal
    instant_amount: Decimal
    arrears_amount: Decimal
    transaction_id: str | None
    created_at: datetime = field(default_factory=lambda: datetime.min)
    description: str | None = None
    invoice_id: str | None = None
    refunded_at: datetime | None = None
    refund_reason: str | None = None


_SUBSCRIPTIONS = """
SELECT s.id, s.customer_id, c.consumer_id, s.status, s.started_at, s.terminated_at, s.ending_at, s.currency,
       s.plan_id, p.billing_version, t.current_time
FROM subscriptions s
JOIN customers c ON c.id = s.customer_id
JOIN plans p ON p.id = s.plan_id
LEFT JOIN test_clocks t ON t.id = s.test_clock_id
WHERE s.customer_id = ANY($3::varchar[]) AND s.merchant_id = $1 AND s.environment = $2
  AND s.status IN ('active', 'terminated', 'pending_payment')
ORDER BY s.customer_id, s.created_at DESC, s.id
FOR KEY SHARE OF s
"""
_CUSTOMERS = """
SELECT c.id, c.consumer_id FROM customers c
WHERE c.id = ANY($3::varchar[]) AND c.merchant_id = $1 AND c.environment = $2
"""
_PRICES = """
SELECT pp.plan_id, pr.id, pr.billable_metric_id, pr.model, pr.payment_term, pr.properties::text
FROM plan_prices pp JOIN prices pr ON pr.id = pp.price_id
WHERE pp.plan_id = ANY($1::varchar[]) AND pr.billable_metric_id IS NOT NULL
ORDER BY pp.plan_id, pp.position
"""
_METRICS = """
SELECT m.id FROM billable_metrics m
WHERE m.id = ANY($3::varchar[]) AND m.merchant_id = $1 AND m.environment = $2
"""
_INVOICES = """
SELECT u.i, i.id, i.status
FROM unnest($1::int[], $2::varchar[], $3::timestamptz[]) AS u(i, subscription_id, at)
JOIN invoices i ON i.subscription_id = u.subscription_id AND i.sequence_number >= 1
     AND i.period_start <= u.at AND i.period_end > u.at
ORDER BY i.id
FOR SHARE OF i
"""
_LATEST_END = """
SELECT s.id, max(i.period_end) FROM unnest($1::varchar[]) AS s(id)
JOIN invoices i ON i.subscription_id = s.id AND i.sequence_number >= 1
GROUP BY s.id
"""
_EXISTING = """
SELECT e.id, e.merchant_id, e.environment, e.customer_id, e.consumer_id, e.subscription_id, e.entitlement_id,
       e.idempotency_key, e.timestamp, e.properties::text, e.metadata::text, e.currency, e.price, e.total_tax,
       e.total_amount, e.instant_amount, e.arrears_amount, e.transaction_id, e.created_at, e.description,
       e.invoice_id, e.refunded_at, e.refund_reason
FROM usage_events e
JOIN unnest($1::varchar[], $2::varchar[], $3::varchar[]) AS u(merchant_id, environment, key)
  ON e.merchant_id = u.merchant_id AND e.environment = u.environment AND e.idempotency_key = u.key
"""
_INSERT = """
INSERT INTO usage_events
    (id, merchant_id, environment, customer_id, consumer_id, subscription_id, entitlement_id,
     idempotency_key, timestamp, properties, metadata, currency, price, total_tax, total_amount,
     instant_amount, arrears_amount, transaction_id)
SELECT u.id, u.merchant_id, u.environment, u.customer_id, u.consumer_id, u.subscription_id, u.entitlement_id,
       u.key, u.ts, u.properties::jsonb, u.metadata::jsonb, u.currency, u.price::numeric,
       u.total_tax::numeric, u.total_amount::numeric, u.instant_amount::numeric, u.arrears_amount::numeric,
       u.transaction_id
FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[], $6::varchar[],
            $7::varchar[], $8::varchar[], $9::timestamptz[], $10::text[], $11::text[], $12::varchar[],
            $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::varchar[])
     AS u(id, merchant_id, environment, customer_id, consumer_id, subscription_id, entitlement_id, key, ts,
          properties, metadata, currency, price, total_tax, total_amount, instant_amount, arrears_amount,
          transaction_id)
ON CONFLICT (merchant_id, environment, idempotency_key) DO NOTHING
RETURNING id, created_at
"""

# The batch's subscriptions and, in the same round trip, the balances of the accounts its charges move
# (each customer's wallet and the merchant's revenue and fee accounts in the subscriptions' currencies),
# read without locks: the fast path (`insert_guarded`) lets the write's own row locks and the ledger's
# not-overdrawn CHECK decide, and falls back to the locking path when they refuse.
_CONTEXT = """
WITH s AS (
    SELECT s.id, s.customer_id, c.consumer_id, s.status, s.started_at, s.terminated_at, s.ending_at,
           s.currency, s.plan_id, p.billing_version::bigint AS billing_version, t.current_time, s.created_at
    FROM subscriptions s
    JOIN customers c ON c.id = s.customer_id
    JOIN plans p ON p.id = s.plan_id
    LEFT JOIN test_clocks t ON t.id = s.test_clock_id
    WHERE s.customer_id = ANY($3::varchar[]) AND s.merchant_id = $1 AND s.environment = $2
      AND s.status IN ('active', 'terminated', 'pending_payment')
), currencies AS (SELECT DISTINCT currency FROM s)
SELECT 's' AS tag, id, customer_id, consumer_id, status, started_at, terminated_at, ending_at, currency,
       plan_id, billing_version, current_time
FROM (SELECT * FROM s ORDER BY customer_id, created_at DESC, id) ordered
UNION ALL
SELECT 'a', a.id, a.owner_id, a.kind, NULL, NULL, NULL, NULL, a.currency, NULL, a.balance, NULL
FROM currencies x JOIN ledger_accounts a
  ON a.merchant_id = $1 AND a.environment = $2 AND a.currency = x.currency AND a.kind = 'customer_main'
     AND a.owner_id = ANY($3::varchar[])
UNION ALL
SELECT 'a', a.id, a.owner_id, a.kind, NULL, NULL, NULL, NULL, a.currency, NULL, a.balance, NULL
FROM currencies x JOIN ledger_accounts a
  ON a.merchant_id = $1 AND a.environment = $2 AND a.currency = x.currency
     AND a.kind = ANY($4::varchar[]) AND a.owner_id = $1
"""


async def context(
    driver: Any,
    merchant_id: str,
    environment: str,
    customer_ids: Sequence[str],
    merchant_kinds: Sequence[str],
) -> tuple[dict[str, list[LiveSubscription]], dict[tuple[str, str, str, str, str], tuple[str, int]]]:
    """The customers' subscriptions (as `subscriptions`, unlocked) and the current balances of their
    wallets and of the merchant's `merchant_kinds` accounts: {(merchant, environment, currency, kind,
    owner): (account id, balance)}, as db.ledger.apply_batch takes them."""
    rows = await driver.fetch(_CONTEXT, merchant_id, environment, list(customer_ids), list(merchant_kinds))
    found: dict[str, list[LiveSubscription]] = {}
    accounts: dict[tuple[str, str, str, str, str], tuple[str, int]] = {}
    for r in rows:
        if r[0] == "s":
            found.setdefault(r[2], []).append(
                LiveSubscription(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], int(r[10]), r[11])
            )
        else:
            accounts[(merchant_id, environment, r[8], r[3], r[2])] = (r[1], int(r[10]))
    return found, accounts


async def customers_known(driver: Any, merchant_id: str, environment: str, ids: Sequence[str]) -> set[str]:
    return {r[0] for r in await driver.fetch(_CUSTOMERS, merchant_id, environment, list(ids))}


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _text(amount: Decimal) -> str:
    """A numeric parameter as text: asyncpg's binary numeric encoding costs several times more."""
    return format(amount, "f")


async def subscriptions(
    driver: Any, merchant_id: str, environment: str, customer_ids: Sequence[str]
) -> tuple[dict[str, list[LiveSubscription]], set[str]]:
    """The customers' subscriptions that can take or explain usage (active, terminated, awaiting Invoice
    0), newest first, locked FOR KEY SHARE; and which of the customers exist at all for this tenant."""
    rows = await driver.fetch(_SUBSCRIPTIONS, merchant_id, environment, list(customer_ids))
    found: dict[str, list[LiveSubscription]] = {}
    for r in rows:
        found.setdefault(r[1], []).append(LiveSubscription(*r))
    known = set(found)
    missing = [c for c in customer_ids if c not in known]
    if missing:
        known |= {r[0] for r in await driver.fetch(_CUSTOMERS, merchant_id, environment, missing)}
    return found, known


async def metric_prices(driver: Any, plan_ids: Sequence[str]) -> dict[str, dict[str, MetricPrice]]:
    """{plan id: {billable metric id: its price in the plan}} (the first, should a plan price one twice)."""
    out: dict[str, dict[str, MetricPrice]] = {p: {} for p in plan_ids}
    for plan_id, price_id, metric_id, model, term, props in await driver.fetch(_PRICES, list(plan_ids)):
        out[plan_id].setdefault(metric_id, MetricPrice(price_id, metric_id, model, term, json.loads(props)))
    return out


async def known_metrics(driver: Any, merchant_id: str, environment: str, ids: Sequence[str]) -> set[str]:
    return {r[0] for r in await driver.fetch(_METRICS, merchant_id, environment, list(ids))}


async def period_invoices(
    driver: Any, wanted: Sequence[tuple[str, datetime]]
) -> list[tuple[str, str] | None]:
    """For each (subscription id, instant): the (id, status) of the period invoice whose service period
    holds it, locked FOR SHARE (the workflow's calculation locks it FOR UPDATE: it waits for this
    transaction, or this one reads what it decided); None where no period invoice holds it yet."""
    out: list[tuple[str, str] | None] = [None] * len(wanted)
    if not wanted:
        return out
    rows = await driver.fetch(
        _INVOICES, list(range(len(wanted))), [s for s, _ in wanted], [a for _, a in wanted]
    )
    for i, invoice_id, status in rows:
        out[i] = (invoice_id, status)
    return out


async def latest_period_ends(driver: Any, subscription_ids: Sequence[str]) -> dict[str, datetime]:
    """The end of each subscription's latest opened period (no entry: none opened yet)."""
    return {r[0]: r[1] for r in await driver.fetch(_LATEST_END, list(subscription_ids))}


def _record(r: Any) -> UsageRecord:
    return UsageRecord(
        id=r[0],
        merchant_id=r[1],
        environment=r[2],
        customer_id=r[3],
        consumer_id=r[4],
        subscription_id=r[5],
        entitlement_id=r[6],
        idempotency_key=r[7],
        timestamp=r[8],
        properties=json.loads(r[9]),
        metadata_=json.loads(r[10]) if r[10] is not None else None,
        currency=r[11],
        price=r[12],
        total_tax=r[13],
        total_amount=r[14],
        instant_amount=r[15],
        arrears_amount=r[16],
        transaction_id=r[17],
        created_at=r[18],
        description=r[19],
        invoice_id=r[20],
        refunded_at=r[21],
        refund_reason=r[22],
    )


Key = tuple[str, str, str]  # merchant, environment, idempotency key


async def existing(driver: Any, keys: Sequence[Key]) -> dict[Key, UsageRecord]:
    """The stored usage events holding any of `keys`."""
    if not keys:
        return {}
    rows = await driver.fetch(_EXISTING, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    return {(r[1], r[2], r[7]): _record(r) for r in rows}


async def insert(driver: Any, records: Sequence[UsageRecord], charges: LedgerWrite | None = None) -> int:
    """Store `records` (keys not stored yet), setting each one's created_at, together with the ledger
    writes of their charges (db.ledger.plan_batch) in the same statement; returns how many records were new
    (a key stored meanwhile by another transaction is skipped: the caller rolls back and retries)."""
    if not records:
        if charges is not None:
            await write_batch(driver, charges)
        return 0
    args: list[Any] = _insert_args(records)
    sql = _INSERT
    if charges is not None and not charges.empty:
        ctes, more = charges.ctes(len(args) + 1)
        sql = f"WITH {ctes},\nusage_u AS ({_INSERT.strip()})\nSELECT id, created_at FROM usage_u"
        args += more
    rows = await driver.fetch(sql, *args)
    created = {r[0]: r[1] for r in rows}
    for record in records:
        if record.id in created:
            record.created_at = created[record.id]
    return len(created)


# The fast path's one statement: the events whose subscription still takes usage are stored (a key stored
# meanwhile is skipped by ON CONFLICT), and only their ledger charges are written.
_GUARD = """
usage_u AS (
    INSERT INTO usage_events
        (id, merchant_id, environment, customer_id, consumer_id, subscription_id, entitlement_id,
         idempotency_key, timestamp, properties, metadata, currency, price, total_tax, total_amount,
         instant_amount, arrears_amount, transaction_id)
    SELECT u.id, u.merchant_id, u.environment, u.customer_id, u.consumer_id, u.subscription_id,
           u.entitlement_id, u.key, u.ts, u.properties::jsonb, u.metadata::jsonb, u.currency,
           u.price::numeric, u.total_tax::numeric, u.total_amount::numeric, u.instant_amount::numeric,
           u.arrears_amount::numeric, u.transaction_id
    FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[], $6::varchar[],
                $7::varchar[], $8::varchar[], $9::timestamptz[], $10::text[], $11::text[], $12::varchar[],
                $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
                $18::varchar[])
         AS u(id, merchant_id, environment, customer_id, consumer_id, subscription_id, entitlement_id, key,
              ts, properties, metadata, currency, price, total_tax, total_amount, instant_amount,
              arrears_amount, transaction_id)
    CROSS JOIN LATERAL (  -- one index lookup per event, whatever the planner thinks of the unnest
        SELECT 1 FROM subscriptions s
        WHERE s.id = u.subscription_id
          AND ((s.status = 'active' AND (s.ending_at IS NULL OR u.ts < s.ending_at))
               OR (s.status = 'terminated' AND u.ts < s.terminated_at))
        LIMIT 1
    ) s
    ON CONFLICT (merchant_id, environment, idempotency_key) DO NOTHING
    RETURNING id, created_at, transaction_id
)"""


async def insert_guarded(driver: Any, records: Sequence[UsageRecord], charges: LedgerWrite) -> set[str]:
    """Store `records` and their charges in one statement that commits on its own (run it outside a
    transaction). Returns the ids stored; a record left out repeats a stored key or its subscription
    stopped taking usage meanwhile. Raises asyncpg.CheckViolationError, having written nothing, when a
    wallet would go below zero (another writer debited it since it was read)."""
    args = _insert_args(records)
    ledger_ctes, more = charges.guarded_ctes(len(args) + 1, "usage_u", "transaction_id")
    sql = f"WITH {_GUARD.strip()},{ledger_ctes}\nSELECT id, created_at FROM usage_u"
    rows = await driver.fetch(sql, *args, *more)
    created = {r[0]: r[1] for r in rows}
    for record in records:
        if record.id in created:
            record.created_at = created[record.id]
    return set(created)


def _insert_args(records: Sequence[UsageRecord]) -> list[Any]:
    return [
        [r.id for r in records],
        [r.merchant_id for r in records],
        [r.environment for r in records],
        [r.customer_id for r in records],
        [r.consumer_id for r in records],
        [r.subscription_id for r in records],
        [r.entitlement_id for r in records],
        [r.idempotency_key for r in records],
        [r.timestamp for r in records],
        [_encode(r.properties) for r in records],
        [_encode(r.metadata_) if r.metadata_ is not None else None for r in records],
        [r.currency for r in records],
        [_text(r.price) for r in records],
        [_text(r.total_tax) for r in records],
        [_text(r.total_amount) for r in records],
        [_text(r.instant_amount) for r in records],
        [_text(r.arrears_amount) for r in records],
        [r.transaction_id for r in records],
    ]
