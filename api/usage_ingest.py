"""Usage event ingestion (POST /v0/usage and /v0/usage/batch, behavior §6.1, D3, D4, D7, D12).

Each event is resolved to its customer's subscription (Legacy, billingVersion 0, not terminated before the
event's timestamp), each property to the plan's price of its billable metric, priced on its own through the
price registry (domain/pricing: a dynamic price takes the reported `price` within its bounds, D7). The
`instant` part is charged at once: one ledger transaction (customer wallet → merchant revenue less the
platform fee) in the same commit as the event; the `in_arrears` part is billed by the period invoice of the
event's timestamp (db.usage.arrears_usages, D4). With an `entitlementId` the whole cost is charged from
the reservation (db.entitlements.consume), which is what guarantees it.

A hot wallet must not serialize on one row lock per request: `UsageWriter` collects the events of
concurrent requests and processes them together in one database transaction that locks every account it
touches once, applies the debits in arrival order in Python (domain.ledger.apply through
db.ledger.post_batch) and writes events, transactions, entries and balances with a few unnest statements.
Each event still gets its own outcome: one that cannot pay fails alone, and the others commit.

Idempotency is by (merchant, environment, idempotencyKey): a stored key answers the stored event and
charges nothing; concurrent duplicates in this process wait for the first; across processes the INSERT's
ON CONFLICT finds the other and the batch is retried, then answers the stored event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from api.problems import ApiError, FieldErrors, forbidden, invalid, not_found
from api.schemas.usage import CreateUsageEvent
from db import entitlements as entitlement_rows
from db import ledger as records
from db import usage_writer as store
from db.usage_writer import LiveSubscription, MetricPrice, UsageRecord
from domain import ledger
from domain.ids import ALPHABET, DEFAULT_LENGTH, PREFIXES
from domain.money import EXACT, format_amount, from_nanos, parse_decimal, to_nanos_rounded
from domain.pricing.base import PriceOutOfBounds, PricePropertiesError
from domain.pricing.registry import model_for

log = logging.getLogger("accrue.usage")

OPEN_FOR_USAGE = frozenset({"ACTIVE", "CLOSING"})


@dataclass(frozen=True, slots=True)
class Item:
    merchant_id: str
    environment: str
    body: CreateUsageEvent

    @property
    def key(self) -> store.Key:
        return (self.merchant_id, self.environment, self.body.idempotency_key)


Outcome = UsageRecord | ApiError


class UsageStoreError(Exception):
    """The batch could not be stored; nothing of it was written."""


def unavailable() -> ApiError:
    return ApiError(
        503,
        "The usage event could not be stored; nothing was charged. Retry with the same idempotencyKey.",
        code="USAGE_STORE_UNAVAILABLE",
    )


# ---- ids ----------------------------------------------------------------------------------------------

_BASE62 = bytes((ALPHABET * 5)[:256], "ascii")


def fresh_ids(kind: str, count: int) -> list[str]:
    """new_id(kind)'s format from one urandom call (each byte → byte % 62: a bias ≤ 1/256 per character)."""
    chars = os.urandom(DEFAULT_LENGTH * count).translate(_BASE62).decode()
    prefix = PREFIXES[kind] + "_"
    return [prefix + chars[i : i + DEFAULT_LENGTH] for i in range(0, DEFAULT_LENGTH * count, DEFAULT_LENGTH)]


# ---- deciding one event -------------------------------------------------------------------------------


def check_merchant(merchant_id: str, body: CreateUsageEvent) -> None:
    if body.merchant_id != merchant_id:
        raise forbidden(f"merchantId {body.merchant_id!r} is not the organization of this API key")


def _when(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else "?"


def choose_subscription(
    customer_id: str,
    subscriptions: Sequence[LiveSubscription],
    timestamp: datetime,
    prices: dict[str, dict[str, MetricPrice]],
    metric_ids: Sequence[str],
) -> LiveSubscription:
    """The subscription an event of `customer_id` at `timestamp` belongs to, or the ApiError saying why
    none does: Legacy (billingVersion 0), active (or terminated after `timestamp`), started by then; among
    several, the newest whose plan prices every metric of the event."""
    legacy = [s for s in subscriptions if s.billing_version == 0]
    live = [s for s in legacy if s.status == "active" and (s.ending_at is None or timestamp < s.ending_at)]
    live += [
        s
        for s in legacy
        if s.status == "terminated" and s.terminated_at is not None and timestamp < s.terminated_at
    ]
    started = [s for s in live if s.started_at <= timestamp]
    if started:
        pricing_all = [s for s in started if all(m in prices.get(s.plan_id, {}) for m in metric_ids)]
        return (pricing_all or started)[0]
    if live:
        first = min(live, key=lambda s: s.started_at)
        raise ApiError(
            422,
            f"timestamp {_when(timestamp)} is before subscription {first.id} started "
            f"({_when(first.started_at)}); usage is billed from the subscription's start",
            code="TIMESTAMP_BEFORE_SUBSCRIPTION",
        )
    standard = [s for s in subscriptions if s.billing_version != 0 and s.status == "active"]
    if standard and not legacy:
        raise ApiError(
            422,
            f"subscription {standard[0].id} is on a billingVersion 1 (Standard) plan, which bills meter "
            "events: send this usage to POST /v0/events (subject = the customer id); POST /v0/usage is for "
            "billingVersion 0 (Legacy) plans",
            code="STANDARD_BILLING_USE_EVENTS",
        )
    ended = [s for s in legacy if s.status == "terminated" or s.ending_at is not None]
    if ended:
        last = max(ended, key=lambda s: s.terminated_at or s.ending_at or s.started_at)
        at = last.terminated_at or last.ending_at
        raise ApiError(
            422,
            f"subscription {last.id} of customer {customer_id} ended at {_when(at)}; usage at "
            f"{_when(timestamp)} is after its termination and is rejected",
            code="SUBSCRIPTION_TERMINATED",
        )
    pending = [s for s in legacy if s.status == "pending_payment"]
    if pending:
        raise ApiError(
            422,
            f"subscription {pending[0].id} of customer {customer_id} is pending_payment: it becomes active "
            "when its Invoice 0 is paid, and only an active subscription takes usage",
            code="NO_ACTIVE_SUBSCRIPTION",
        )
    raise ApiError(
        422,
        f"customer {customer_id} has no active subscription; create one (POST /v0/subscriptions) on a "
        "billingVersion 0 plan before reporting usage",
        code="NO_ACTIVE_SUBSCRIPTION",
    )


@dataclass(slots=True)
class Priced:
    properties: list[dict[str, Any]]
    instant: Decimal  # exact
    arrears: Decimal  # exact
    has_arrears: bool


def price_event(
    body: CreateUsageEvent,
    prices: dict[str, MetricPrice],
    known: set[str],
    *,
    all_instant: bool = False,
) -> Priced:
    """Each property priced on its own by the plan's price of its metric; FieldErrors (400) naming every
    property that cannot be: unknown metric, metric not in the plan, dynamic price missing or out of
    bounds, a price where the plan's price takes none. `all_instant`: every part is charged at once (an
    event paid from a reservation)."""
    errors: list[dict[str, str]] = []
    out: list[dict[str, Any]] = []
    instant = arrears = Decimal(0)
    has_arrears = False
    for n, prop in enumerate(body.properties):
        field = f"properties[{n}]"
        price = prices.get(prop.billable_metric_id)
        if price is None:
            if prop.billable_metric_id in known:
                message = (
                    f"billable metric {prop.billable_metric_id} has no price in the plan of the customer's "
                    "subscription; add a price for it to the plan"
                )
                errors.append(
                    {"field": f"{field}.billableMetricId", "message": message, "code": "not_in_plan"}
                )
            else:
                message = f"billable metric {prop.billable_metric_id!r} was not found"
                errors.append({"field": f"{field}.billableMetricId", "message": message, "code": "not_found"})
            continue
        reported = parse_decimal(prop.price) if prop.price is not None else None
        if reported is not None and price.model != "dynamic":
            message = (
                f"only a dynamic price takes a reported price; the plan prices metric "
                f"{prop.billable_metric_id} with a {price.model} price ({price.id}): leave price out"
            )
            errors.append({"field": f"{field}.price", "message": message, "code": "not_dynamic"})
            continue
        try:
            charge = model_for(price.model).price_record(price.properties, Decimal(prop.quantity), reported)
        except PriceOutOfBounds as exc:
            errors.append({"field": f"{field}.price", "message": str(exc), "code": "out_of_bounds"})
            continue
        except PricePropertiesError as exc:
            raise ApiError(
                422, f"price {price.id} of metric {prop.billable_metric_id} cannot be priced: {exc}"
            ) from None
        term = "instant" if all_instant else price.payment_term
        item: dict[str, Any] = {"billableMetricId": prop.billable_metric_id, "quantity": prop.quantity}
        if prop.price is not None:
            item["price"] = prop.price
        item |= {
            "priceId": price.id,
            "model": price.model,
            "paymentTerm": term,
            "unitPrice": format(charge.unit_price, "f"),
            "amount": format(charge.amount, "f"),
        }
        out.append(item)
        if term == "instant":
            instant = EXACT.add(instant, charge.amount)
        else:
            arrears = EXACT.add(arrears, charge.amount)
            has_arrears = True
    if errors:
        raise FieldErrors(errors)
    return Priced(out, instant, arrears, has_arrears)


def insufficient(exc: ledger.InsufficientFunds) -> ApiError:
    return ApiError(
        422,
        str(exc),
        code="INSUFFICIENT_FUNDS",
        details={
            "currency": exc.currency,
            "available": format_amount(from_nanos(exc.available)),
            "needed": format_amount(from_nanos(exc.needed)),
            "shortfall": format_amount(from_nanos(exc.shortfall)),
        },
    )


def period_invoiced(timestamp: datetime, invoice_id: str, status: str) -> ApiError:
    return ApiError(
        422,
        f"the service period holding timestamp {_when(timestamp)} has been invoiced (invoice {invoice_id} "
        f"is {status}); in-arrears usage for it can no longer be billed",
        code="PERIOD_INVOICED",
    )


def new_record(
    item: Item, sub: LiveSubscription, priced: Priced, usage_id: str, transaction_id: str | None
) -> UsageRecord:
    body = item.body
    charged = from_nanos(to_nanos_rounded(priced.instant))  # the wallet moves whole nanodollars
    total = EXACT.add(charged, priced.arrears)
    return UsageRecord(
        id=usage_id,
        merchant_id=item.merchant_id,
        environment=item.environment,
        customer_id=body.customer_id,
        consumer_id=sub.consumer_id,
        subscription_id=sub.id,
        entitlement_id=body.entitlement_id,
        idempotency_key=body.idempotency_key,
        timestamp=body.timestamp,
        properties=priced.properties,
        metadata_=dict(body.metadata) if body.metadata is not None else None,
        currency=sub.currency,
        price=total,
        total_tax=Decimal(0),
        total_amount=total,
        instant_amount=charged,
        arrears_amount=priced.arrears,
        transaction_id=transaction_id,
    )


# ---- a batch, in one transaction ----------------------------------------------------------------------


class _Retry(Exception):
    """Another transaction stored one of the batch's keys meanwhile: roll back and decide again."""


class PlanPrices:
    """Each plan's metric prices, remembered for `ttl` seconds (a price edited on a plan reaches ingestion
    within that time): a batch then reads only its customers' subscriptions."""

    def __init__(self, ttl: float = 1.0) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[float, dict[str, MetricPrice]]] = {}

    async def get(self, driver: Any, plan_ids: Sequence[str]) -> dict[str, dict[str, MetricPrice]]:
        now = time.monotonic()
        found = {p: e[1] for p in plan_ids if (e := self._entries.get(p)) is not None and e[0] > now}
        missing = [p for p in plan_ids if p not in found]
        if missing:
            loaded = await store.metric_prices(driver, missing)
            if len(self._entries) > 10_000:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            for plan_id, prices in loaded.items():
                self._entries[plan_id] = (now + self._ttl, prices)
            found |= loaded
        return found


async def process(
    driver: Any, items: Sequence[Item], fee_rate: Decimal, plan_prices: PlanPrices | None = None
) -> list[Outcome]:
    """Decide and store `items` (none with an entitlementId) on the asyncpg connection `driver` (outside
    any transaction); one outcome per item, in order.

    The fast path reads the batch's subscriptions and wallet balances without locks and writes events and
    charges in one statement that commits on its own: its row locks order concurrent writers of a wallet
    and the ledger's not-overdrawn CHECK refuses it whole if another writer got there first. Then, and for
    batches with in-arrears parts (which lock their period invoice) or accounts not opened yet, the
    locking path decides again in a transaction that locks subscriptions, invoices and accounts first."""
    prices = plan_prices or PlanPrices(0)
    try:
        fast = await _fast(driver, items, fee_rate, prices)
    except asyncpg.CheckViolationError:
        fast = None
    if fast is None:
        return await _locking(driver, items, fee_rate, prices)
    outcomes, again = fast
    if again:
        redone = await _locking(driver, [items[i] for i in again], fee_rate, prices)
        for i, outcome in zip(again, redone, strict=True):
            outcomes[i] = outcome
    return [o for o in outcomes if o is not None]


async def _locking(
    driver: Any, items: Sequence[Item], fee_rate: Decimal, plan_prices: PlanPrices
) -> list[Outcome]:
    """The locking path, in one transaction. Its first attempt does not look the keys up (a repeated key
    is rare and the INSERT's ON CONFLICT finds it); when one turns out to be stored, the transaction is
    rolled back and the batch decided again with the stored events looked up first."""
    known = False
    for attempt in range(5):
        try:
            async with driver.transaction():
                return await _process(driver, items, fee_rate, plan_prices, known)
        except _Retry:
            known = True
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            await asyncio.sleep(0.005 * (attempt + 1))
    raise UsageStoreError("the batch kept conflicting with concurrent ones")


def _firsts(items: Sequence[Item]) -> dict[store.Key, int]:
    first: dict[store.Key, int] = {}
    for i, item in enumerate(items):
        first.setdefault(item.key, i)
    return first


async def _drafts(
    driver: Any,
    items: Sequence[Item],
    todo: Sequence[int],
    outcomes: list[Outcome | None],
    subs: dict[tuple[str, str, str], list[LiveSubscription]],
    known_customers: set[tuple[str, str, str]],
    plan_prices: PlanPrices,
) -> dict[int, tuple[LiveSubscription, Priced]]:
    """Each item's subscription and pricing; the refused ones get their ApiError in `outcomes`."""
    plan_ids = sorted({s.plan_id for rows in subs.values() for s in rows if s.billing_version == 0})
    prices = await plan_prices.get(driver, plan_ids) if plan_ids else {}
    chosen: dict[int, LiveSubscription] = {}
    unpriced: dict[tuple[str, str], set[str]] = {}
    for i in todo:
        item = items[i]
        body = item.body
        if (item.merchant_id, item.environment, body.customer_id) not in known_customers:
            outcomes[i] = not_found("Customer", body.customer_id)
            continue
        metric_ids = [p.billable_metric_id for p in body.properties]
        try:
            sub = choose_subscription(
                body.customer_id,
                subs.get((item.merchant_id, item.environment, body.customer_id), []),
                body.timestamp,
                prices,
                metric_ids,
            )
        except ApiError as exc:
            outcomes[i] = exc
            continue
        chosen[i] = sub
        unpriced_ids = {m for m in metric_ids if m not in prices.get(sub.plan_id, {})}
        if unpriced_ids:
            unpriced.setdefault((item.merchant_id, item.environment), set()).update(unpriced_ids)
    known_metrics: dict[tuple[str, str], set[str]] = {}
    for (m, e), unknown in unpriced.items():
        known_metrics[(m, e)] = await store.known_metrics(driver, m, e, sorted(unknown))
    drafts: dict[int, tuple[LiveSubscription, Priced]] = {}
    for i, sub in chosen.items():
        item = items[i]
        try:
            priced = price_event(
                item.body,
                prices.get(sub.plan_id, {}),
                known_metrics.get((item.merchant_id, item.environment), set()),
            )
        except ApiError as exc:
            outcomes[i] = exc
            continue
        drafts[i] = (sub, priced)
    return drafts


def _build(
    items: Sequence[Item], drafts: dict[int, tuple[LiveSubscription, Priced]], fee_rate: Decimal
) -> tuple[list[records.Posting], list[int], dict[int, UsageRecord]]:
    """The events' records and the ledger postings of their instant parts (with the items they charge)."""
    order = sorted(drafts)
    usage_ids = fresh_ids("usage_event", len(order))
    transaction_ids = fresh_ids("ledger_transaction", len(order))
    postings: list[records.Posting] = []
    posted_for: list[int] = []
    new: dict[int, UsageRecord] = {}
    for i, usage_id, transaction_id in zip(order, usage_ids, transaction_ids, strict=True):
        item = items[i]
        sub, priced = drafts[i]
        nanos = to_nanos_rounded(priced.instant)
        if nanos > 0:
            charge = ledger.usage(item.merchant_id, sub.customer_id, sub.currency, nanos, fee_rate)
            postings.append(
                records.Posting(
                    item.merchant_id,
                    item.environment,
                    charge,
                    transaction_id,
                    f"usage:{usage_id}",
                    usage_id,
                    f"usage event {usage_id}",
                )
            )
            posted_for.append(i)
        new[i] = new_record(item, sub, priced, usage_id, transaction_id if nanos > 0 else None)
    return postings, posted_for, new


async def _refused_repeats(
    driver: Any, items: Sequence[Item], todo: Sequence[int], outcomes: list[Outcome | None]
) -> None:
    """A refused event may repeat a stored one (its key was not looked up before): then the stored event
    is the answer."""
    refused = [items[i].key for i in todo if isinstance(outcomes[i], ApiError)]
    if refused:
        stored = await store.existing(driver, refused)
        for i in todo:
            if isinstance(outcomes[i], ApiError) and items[i].key in stored:
                outcomes[i] = stored[items[i].key]


def _fill_repeats(items: Sequence[Item], first: dict[store.Key, int], outcomes: list[Outcome | None]) -> None:
    for i, item in enumerate(items):
        if outcomes[i] is None:
            outcomes[i] = outcomes[first[item.key]]


async def _fast(
    driver: Any, items: Sequence[Item], fee_rate: Decimal, plan_prices: PlanPrices
) -> tuple[list[Outcome | None], list[int]] | None:
    """The fast path: outcomes, and the items to decide again on the locking path; None when the whole
    batch needs it."""
    outcomes: list[Outcome | None] = [None] * len(items)
    first = _firsts(items)
    todo = list(first.values())
    tenants: dict[tuple[str, str], list[int]] = {}
    for i in todo:
        tenants.setdefault((items[i].merchant_id, items[i].environment), []).append(i)
    subs: dict[tuple[str, str, str], list[LiveSubscription]] = {}
    known_customers: set[tuple[str, str, str]] = set()
    balances: dict[records.AccountKey, tuple[str, int]] = {}
    kinds = ["merchant_revenue", "platform_fee"] if fee_rate > 0 else ["merchant_revenue"]
    for (m, e), idx in tenants.items():
        customers = sorted({items[i].body.customer_id for i in idx})
        found, accounts = await store.context(driver, m, e, customers, kinds)
        subs |= {(m, e, c): rows for c, rows in found.items()}
        balances |= accounts
        known = set(found)
        missing = [c for c in customers if c not in known]
        if missing:
            known |= await store.customers_known(driver, m, e, missing)
        known_customers |= {(m, e, c) for c in known}
    drafts = await _drafts(driver, items, todo, outcomes, subs, known_customers, plan_prices)
    if any(priced.has_arrears for _, priced in drafts.values()):
        return None
    postings, posted_for, new = _build(items, drafts, fee_rate)
    if any(key not in balances for key in records.account_keys(postings)):
        return None  # an account to open first (a wallet never funded refuses anyway)
    results, charges = records.apply_batch(postings, balances)
    short: list[int] = []
    for i, result in zip(posted_for, results, strict=True):
        if isinstance(result, ledger.InsufficientFunds):
            outcomes[i] = insufficient(result)
            short.append(i)
            del new[i]
    await _refused_repeats(driver, items, todo, outcomes)
    rows = [new[i] for i in sorted(new)]
    stored = await store.insert_guarded(driver, rows, charges) if rows else set()
    again: list[int] = []
    left = [i for i in sorted(new) if new[i].id not in stored]
    if left:
        repeats = await store.existing(driver, [items[i].key for i in left])
        for i in left:
            if items[i].key in repeats:
                outcomes[i] = repeats[items[i].key]
            else:
                again.append(i)  # its subscription changed meanwhile: decided again, under locks
        # A repeat was charged in the balances above: a refusal after it may be wrong; decided again.
        again += [i for i in short if isinstance(outcomes[i], ApiError)]
    for i, row in new.items():
        if row.id in stored:
            outcomes[i] = row
    _fill_repeats(items, first, outcomes)  # repeats of a redone item stay None: redone with it
    if again:
        redo = {items[i].key for i in again}
        again += [i for i, item in enumerate(items) if item.key in redo and first[item.key] != i]
    return outcomes, sorted(again)


async def _process(
    driver: Any, items: Sequence[Item], fee_rate: Decimal, plan_prices: PlanPrices, look_up: bool
) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(items)
    first = _firsts(items)
    stored = await store.existing(driver, list(first)) if look_up else {}
    todo: list[int] = []
    for key, i in first.items():
        if key in stored:
            outcomes[i] = stored[key]
        else:
            todo.append(i)
    tenants: dict[tuple[str, str], list[int]] = {}
    for i in todo:
        tenants.setdefault((items[i].merchant_id, items[i].environment), []).append(i)
    subs: dict[tuple[str, str, str], list[LiveSubscription]] = {}
    known_customers: set[tuple[str, str, str]] = set()
    for (m, e), idx in tenants.items():
        customers = sorted({items[i].body.customer_id for i in idx})
        found, known = await store.subscriptions(driver, m, e, customers)
        subs |= {(m, e, c): rows for c, rows in found.items()}
        known_customers |= {(m, e, c) for c in known}
    drafts = await _drafts(driver, items, todo, outcomes, subs, known_customers, plan_prices)

    # In-arrears parts join the period invoice of their timestamp while it is still open.
    arrears = [i for i, (_, priced) in drafts.items() if priced.has_arrears]
    if arrears:
        invoices = await store.period_invoices(
            driver, [(drafts[i][0].id, items[i].body.timestamp) for i in arrears]
        )
        for i, invoice in zip(arrears, invoices, strict=True):
            if invoice is not None and invoice[1] not in OPEN_FOR_USAGE:
                outcomes[i] = period_invoiced(items[i].body.timestamp, *invoice)
                del drafts[i]

    postings, posted_for, new = _build(items, drafts, fee_rate)
    charges = None
    if postings:
        results, charges = await records.plan_batch(driver, postings)
        for i, result in zip(posted_for, results, strict=True):
            if isinstance(result, ledger.InsufficientFunds):
                outcomes[i] = insufficient(result)
                del new[i]
    if not look_up:
        await _refused_repeats(driver, items, todo, outcomes)
    rows = [new[i] for i in sorted(new)]
    if await store.insert(driver, rows, charges) != len(rows):
        raise _Retry
    for i, row in new.items():
        outcomes[i] = row
    _fill_repeats(items, first, outcomes)
    return [o for o in outcomes if o is not None]


# ---- with an entitlement: one event in its own transaction ---------------------------------------------


async def create_with_entitlement(session: AsyncSession, item: Item, fee_rate: Decimal) -> UsageRecord:
    """An event paid from a reservation: the whole cost is consumed from the entitlement (db.entitlements,
    locked after the subscription and before the ledger accounts) and charged from the customer's reserved
    funds, in one transaction with the event. Raises ApiError."""
    body = item.body
    assert body.entitlement_id is not None
    await session.execute(text("SELECT 1"))  # opens the transaction the raw statements below join
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    stored = await store.existing(driver, [item.key])
    if item.key in stored:
        return stored[item.key]
    found, known = await store.subscriptions(driver, item.merchant_id, item.environment, [body.customer_id])
    if body.customer_id not in known:
        raise not_found("Customer", body.customer_id)
    metric_ids = [p.billable_metric_id for p in body.properties]
    plan_ids = sorted({s.plan_id for s in found.get(body.customer_id, []) if s.billing_version == 0})
    prices = await store.metric_prices(driver, plan_ids) if plan_ids else {}
    sub = choose_subscription(
        body.customer_id, found.get(body.customer_id, []), body.timestamp, prices, metric_ids
    )
    missing = [m for m in metric_ids if m not in prices.get(sub.plan_id, {})]
    known_metrics = (
        await store.known_metrics(driver, item.merchant_id, item.environment, missing) if missing else set()
    )
    priced = price_event(body, prices.get(sub.plan_id, {}), known_metrics, all_instant=True)
    nanos = to_nanos_rounded(priced.instant)
    now = sub.clock_time or datetime.now(UTC)
    try:
        entitlement = await entitlement_rows.consume(
            session, item.merchant_id, item.environment, body.entitlement_id, body.customer_id, nanos, now
        )
    except entitlement_rows.EntitlementUnavailable as exc:
        status = 404 if exc.reason == "not_found" else 422
        raise ApiError(
            status, str(exc), code="ENTITLEMENT_UNAVAILABLE", details={"reason": exc.reason}
        ) from None
    if entitlement.currency != sub.currency:
        raise ApiError(
            422,
            f"entitlement {entitlement.id} holds {entitlement.currency}; the subscription bills "
            f"{sub.currency}",
        )
    usage_id, transaction_id = fresh_ids("usage_event", 1)[0], fresh_ids("ledger_transaction", 1)[0]
    if nanos > 0:
        charge = ledger.usage(
            item.merchant_id, sub.customer_id, sub.currency, nanos, fee_rate, from_reserved=True
        )
        (result,) = await records.post_batch(
            driver,
            [
                records.Posting(
                    item.merchant_id,
                    item.environment,
                    charge,
                    transaction_id,
                    f"usage:{usage_id}",
                    usage_id,
                    f"usage event {usage_id} (entitlement {entitlement.id})",
                )
            ],
        )
        if isinstance(result, ledger.InsufficientFunds):  # the reservation's account holds less: a bug
            raise insufficient(result)
    record = new_record(item, sub, priced, usage_id, transaction_id if nanos > 0 else None)
    if await store.insert(driver, [record]) != 1:
        await session.rollback()
        await session.execute(text("SELECT 1"))
        driver = (await (await session.connection()).get_raw_connection()).driver_connection
        again = await store.existing(driver, [item.key])
        if item.key not in again:
            raise unavailable()
        return again[item.key]
    await session.commit()
    return record


# ---- the group-commit writer ---------------------------------------------------------------------------


class _Lane:
    """A connection the writer keeps checked out: a batch then costs its statements, not a pool checkout."""

    def __init__(self, engine: AsyncEngine, plan_prices: PlanPrices) -> None:
        self._engine = engine
        self._plan_prices = plan_prices
        self._conn: AsyncConnection | None = None
        self._driver: Any = None

    async def process(self, items: Sequence[Item], fee_rate: Decimal) -> list[Outcome]:
        try:
            if self._conn is None:
                self._conn = await self._engine.connect()
                self._driver = (await self._conn.get_raw_connection()).driver_connection
            return await process(self._driver, items, fee_rate, self._plan_prices)
        except Exception as exc:
            log.exception("storing %d usage events failed", len(items))
            await self.close(broken=True)
            raise UsageStoreError(str(exc) or type(exc).__name__) from exc

    async def close(self, broken: bool = False) -> None:
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:
            try:
                if broken:
                    await conn.invalidate()
                await conn.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                log.debug("closing a usage writer connection failed", exc_info=True)


Waiter = tuple[Item, "asyncio.Future[Outcome]"]


class UsageWriter:
    """Collects usage events of concurrent requests and processes them together (`process`).

    An arrival is handed at once to a free lane (a held connection); while every lane is busy, arrivals
    accumulate into the next batch, so the batch grows with the load: one event when idle, hundreds under
    pressure. A request's future resolves after its batch committed. One lane by default: on the benchmark
    machine a second one halved the batches and cost more CPU per event (in the API and in PostgreSQL) than
    the overlap won; with more lanes, two may touch the same wallet at once and the second waits for the
    first's row locks, once per batch, not once per event.
    """

    def __init__(
        self, engine: AsyncEngine, fee_rate: Decimal, *, max_batch: int = 500, lanes: int = 1
    ) -> None:
        self._fee_rate = fee_rate
        self._max_batch = max_batch
        plan_prices = PlanPrices()
        self._all_lanes = [_Lane(engine, plan_prices) for _ in range(lanes)]
        self._free = list(self._all_lanes)
        self._lane_freed = asyncio.Event()
        self._pending: list[Waiter] = []
        self._inflight: dict[store.Key, asyncio.Future[Outcome]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._closing = False

    async def stop(self) -> None:
        """Let the batches in flight finish, then release the connections."""
        self._closing = True
        while self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        for lane in self._all_lanes:
            await lane.close()

    async def write(self, item: Item) -> Outcome:
        """The outcome of one event; concurrent requests with the same key share the first one's."""
        if self._closing:
            raise UsageStoreError("the usage writer is not running")
        same = self._inflight.get(item.key)
        if same is not None:
            return await asyncio.shield(same)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        key = item.key
        self._inflight[key] = future
        future.add_done_callback(lambda _: self._inflight.pop(key, None))
        self._pending.append((item, future))
        self._kick()
        return await future

    async def write_many(self, items: Sequence[Item]) -> list[Outcome]:
        """A batch request's events, processed together on the next free lane."""
        if self._closing:
            raise UsageStoreError("the usage writer is not running")
        while not self._free:
            self._lane_freed.clear()
            await self._lane_freed.wait()
        lane = self._free.pop()
        try:
            return await lane.process(items, self._fee_rate)
        finally:
            self._release(lane)

    def _release(self, lane: _Lane) -> None:
        self._free.append(lane)
        self._lane_freed.set()
        self._kick()

    def _kick(self) -> None:
        while self._pending and self._free:
            lane = self._free.pop()
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            task = asyncio.create_task(self._flush(lane, batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, lane: _Lane, batch: list[Waiter]) -> None:
        try:
            outcomes = await lane.process([item for item, _ in batch], self._fee_rate)
        except UsageStoreError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(UsageStoreError(str(exc)))
        else:
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        finally:
            self._release(lane)


def check_item(item: Item) -> None:
    """What a single event must satisfy before it is queued."""
    check_merchant(item.merchant_id, item.body)
    if len({p.billable_metric_id for p in item.body.properties}) != len(item.body.properties):
        raise invalid(
            "properties", "names a billableMetricId twice; send one property per metric", "duplicate"
        )
