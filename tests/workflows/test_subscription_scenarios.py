"""Subscription scenarios on the time-skipping server, through the API and the production worker: calendars,
Invoice 0 outcomes, termination, endingAt, startedAt in the past and the future, the grace window, every price
model with taxes, and continue-as-new. Most run on test clocks; the `real time` ones on workflow timers."""

from __future__ import annotations

import asyncio
import calendar
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowExecutionStatus

from db.merchants import NewMerchant
from db.models import MeterEvent, PaymentSession
from db.session import session_factory
from settings import Settings
from tests.workflows.billing_harness import GRACE, Billing, assert_recomputable, billing_stack, eventually
from tests.workflows.conftest import time_skipping_server
from workflows.subscription import CONTINUE_AS_NEW_PERIODS

D = Decimal


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def months_after(anchor: datetime, n: int) -> datetime:
    """anchor + n months on the anchor's day, or the month's last day (written apart from domain.periods)."""
    year, month = divmod(anchor.month - 1 + n, 12)
    year, month = anchor.year + year, month + 1
    return anchor.replace(year=year, month=month, day=min(anchor.day, calendar.monthrange(year, month)[1]))


@pytest.fixture
async def timers(engine: AsyncEngine, settings: Settings, merchant: NewMerchant) -> AsyncIterator[Billing]:
    """A stack on a fresh time-skipping server, for the real-time scenarios: skipping months on the session's
    server would leave its clock far ahead of the wall clock (which the API stamps checkout expiry with),
    and this test's timers firing later on a queue without a worker would pause its time skipping."""
    async for env in time_skipping_server():
        async for stack in billing_stack(env, engine, settings, merchant):
            yield stack


async def calls_plan(
    billing: Billing, *, unit_price: str = "1.00", cadence: str = "P1M", fee: str | None = None, **plan: Any
) -> tuple[str, str, str]:
    """A plan billing each `calls` event at `unit_price` in arrears, plus an in-advance fee when given.
    Returns (plan id, event type, metric id)."""
    product = await billing.product()
    event_type = "calls"  # each test has a merchant of its own
    metric = await billing.metric(product, event_type, aggregation="COUNT", unit="calls")
    prices = [
        await billing.price(
            billableMetricId=metric, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Calls",
            properties={"unitPrice": unit_price},
        )
    ]  # fmt: skip
    if fee is not None:
        fee_id = await billing.fee(product)
        prices.append(
            await billing.price(
                feeId=fee_id, paymentTerm="in_advance", billingCadence=cadence,
                invoiceDisplayName="Platform fee", properties={"unitPrice": fee},
            )
        )  # fmt: skip
    return await billing.plan(product, prices, billingCadence=cadence, **plan), event_type, metric


async def issued_lines(billing: Billing, subscription_id: str, n: int) -> list[tuple[str, D, D]]:
    invoice = (await billing.invoices(subscription_id))[n]
    lines = await billing.lines(invoice.id)
    assert_recomputable(invoice, lines)
    return [(line.display_name, D(line.quantity or 0), line.subtotal) for line in lines]


# ---- calendars and continue-as-new ---------------------------------------------------------------------

FEB29 = utc(2028, 2, 29)
CALENDARS = {
    "monthly from Feb 29": (
        "P1M",
        FEB29,
        [utc(2028, m, 29) for m in range(3, 13)] + [utc(2029, 1, 29), utc(2029, 2, 28), utc(2029, 3, 29)],
    ),
    "monthly from Jan 31 10:45 (anchored on the hour)": (
        "P1M",
        datetime(2028, 1, 31, 10, 45, 30, tzinfo=UTC),
        [utc(2028, 2, 29, 10), utc(2028, 3, 31, 10), utc(2028, 4, 30, 10)],
    ),
    "quarterly from Aug 31": (
        "P3M",
        utc(2027, 8, 31),
        [utc(2027, 11, 30), utc(2028, 2, 29), utc(2028, 5, 31), utc(2028, 8, 31), utc(2028, 11, 30)],
    ),
    "quarterly from Nov 30": (
        "P3M",
        utc(2027, 11, 30),
        [utc(2028, 2, 29), utc(2028, 5, 30), utc(2028, 8, 30), utc(2028, 11, 30)],
    ),
    "yearly from Feb 29": (
        "P1Y",
        FEB29,
        [utc(2029, 2, 28), utc(2030, 2, 28), utc(2031, 2, 28), utc(2032, 2, 29)],
    ),
}


@pytest.mark.parametrize("cadence,started,ends", CALENDARS.values(), ids=CALENDARS.keys())
async def test_periods_follow_the_calendar_in_one_run_of_bounded_history(
    billing: Billing, cadence: str, started: datetime, ends: list[datetime]
) -> None:
    plan, event_type, _ = await calls_plan(billing, cadence=cadence)
    customer = await billing.customer()
    clock = await billing.clock(started)
    sub = await billing.subscribe(plan, customer, started, testClockId=clock)
    assert sub["status"] == "active"  # nothing in advance: Invoice 0 is 0.00 and paid
    handle = billing.handle(sub["id"])
    anchor = started.replace(minute=0, second=0)
    bounds = list(itertools.pairwise([anchor, *ends]))
    run_ids = [(await handle.describe()).run_id]
    for n, (start, end) in enumerate(bounds, 1):
        for _ in range(n):  # n events in period n: its invoice is n × 1.00
            await billing.event(customer, event_type, start + timedelta(hours=1))
        await billing.advance(clock, end + GRACE)
        run_ids.append((await handle.describe()).run_id)
        # A run holds up to CONTINUE_AS_NEW_PERIODS periods of work, each a bounded number of events.
        assert len((await handle.fetch_history()).events) < 30 + 25 * ((n - 1) % CONTINUE_AS_NEW_PERIODS + 1)

    invoices = await billing.invoices(sub["id"])
    count = len(bounds)
    assert [i.status for i in invoices] == ["PAID"] + ["ISSUED"] * count + ["ACTIVE"]
    assert [(i.period_start, i.period_end) for i in invoices[1:-1]] == bounds
    assert [i.grand_total for i in invoices[1:-1]] == [D(n) for n in range(1, count + 1)]
    assert [i.grace_period_end for i in invoices[1:-1]] == [end + GRACE for end in ends]
    assert invoices[-1].period_start == ends[-1]
    # A new run every CONTINUE_AS_NEW_PERIODS periods, not after each one.
    assert len(set(run_ids)) == 1 + count // CONTINUE_AS_NEW_PERIODS


async def test_real_time_quarterly_periods_on_workflow_timers(timers: Billing) -> None:
    billing, workflow_env = timers, timers.env
    plan, event_type, _ = await calls_plan(billing, cadence="P3M", unit_price="2.50")
    customer = await billing.customer()
    start = (await workflow_env.get_current_time()).replace(minute=0, second=0, microsecond=0)
    sub = await billing.subscribe(plan, customer, start)
    await billing.event(customer, event_type, start + timedelta(days=1))
    await billing.event(customer, event_type, months_after(start, 3) + timedelta(hours=2))
    await workflow_env.sleep(months_after(start, 6) - start + GRACE + timedelta(hours=1))

    async def two_issued() -> None:
        statuses = [i.status for i in await billing.invoices(sub["id"])]
        assert statuses == ["PAID", "ISSUED", "ISSUED", "ACTIVE"], statuses

    await eventually(two_issued)
    invoices = await billing.invoices(sub["id"])
    assert [(i.period_start, i.period_end, i.grand_total) for i in invoices[1:3]] == [
        (start, months_after(start, 3), D("2.50")),
        (months_after(start, 3), months_after(start, 6), D("2.50")),
    ]


# ---- Invoice 0 ------------------------------------------------------------------------------------------


async def payment_session(billing: Billing, session_id: str) -> PaymentSession:
    async with session_factory(billing.engine)() as session:
        found = await session.get(PaymentSession, session_id)
        assert found is not None
        return found


@pytest.mark.parametrize("then", ["paid", "expired"])
async def test_declined_invoice0_stays_pending_until_paid_or_expired(billing: Billing, then: str) -> None:
    plan, event_type, _ = await calls_plan(billing, fee="49.00")
    customer = await billing.customer()
    start = utc(2028, 1, 10)
    clock = await billing.clock(start)
    sub = await billing.subscribe(plan, customer, start, testClockId=clock, sessionExpiryMinutes=120)
    session_id = sub["payment"]["paymentSessionId"]
    await billing.pay(sub, succeed=False)

    async def declined() -> None:
        assert (await payment_session(billing, session_id)).status == "declined"

    await eventually(declined)
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert (got["status"], got["payment"]["status"], got["payment"]["amount"]) == (
        "pending_payment",
        "pending",
        "49.00",
    )
    [invoice0] = await billing.invoices(sub["id"])
    assert (invoice0.status, invoice0.paid_at, invoice0.paid_amount) == ("ISSUED", None, 0)
    await billing.advance(clock, start + timedelta(minutes=60))  # still inside the checkout's 2 hours
    assert await billing.status(sub["id"]) == "pending_payment"

    if then == "paid":
        await billing.activate(sub)
        await billing.event(customer, event_type, start + timedelta(days=2))
        await billing.advance(clock, utc(2028, 2, 10) + GRACE)
        invoices = await billing.invoices(sub["id"])
        assert [(i.status, i.grand_total) for i in invoices] == [
            ("PAID", D("49.00")),
            ("ISSUED", D("50.00")),  # the call, and period 2's fee in advance
            ("ACTIVE", D(0)),
        ]
        assert invoices[0].paid_amount == D("49.00")
        assert (await payment_session(billing, session_id)).status == "completed"
    else:
        await billing.advance(clock, start + timedelta(minutes=121))
        got = await billing.get(f"/v0/subscriptions/{sub['id']}")
        assert (got["status"], got["terminatedBy"], ts(got["terminatedAt"])) == (
            "terminated",
            "system",
            utc(2028, 1, 10, 2),
        )
        assert [i.status for i in await billing.invoices(sub["id"])] == ["CANCELLED"]
        assert (await payment_session(billing, session_id)).status == "expired"
        await billing.handle(sub["id"]).result()  # nothing left to do: the workflow has completed


async def test_real_time_unpaid_invoice0_expires_on_a_timer(timers: Billing) -> None:
    billing = timers
    plan, _, _ = await calls_plan(billing, fee="10.00")
    start = await billing.env.get_current_time()  # a fresh server: its clock is the wall clock
    sub = await billing.subscribe(plan, await billing.customer(), start, sessionExpiryMinutes=30)
    await billing.env.sleep(timedelta(minutes=20))
    assert await billing.status(sub["id"]) == "pending_payment"
    await billing.env.sleep(timedelta(minutes=15))

    async def expired() -> None:
        assert await billing.status(sub["id"]) == "terminated"

    await eventually(expired)
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert got["terminatedBy"] == "system"
    assert [i.status for i in await billing.invoices(sub["id"])] == ["CANCELLED"]


# ---- termination and endingAt ---------------------------------------------------------------------------


async def test_terminating_before_activation_cancels_invoice0_and_twice_is_409(billing: Billing) -> None:
    plan, event_type, _ = await calls_plan(billing, fee="49.00")
    customer = await billing.customer()
    start = utc(2028, 3, 1)
    clock = await billing.clock(start)
    sub = await billing.subscribe(plan, customer, start, testClockId=clock)
    await billing.advance(clock, start + timedelta(hours=1))
    done = await billing.post(f"/v0/subscriptions/{sub['id']}/termination", {"reason": "Changed mind"}, 200)
    assert (done["status"], ts(done["terminatedAt"]), done["terminatedBy"]) == (
        "terminated",
        utc(2028, 3, 1, 1),
        billing.merchant.merchant_id,
    )
    again = await billing.http.post(f"/v0/subscriptions/{sub['id']}/termination", json={"reason": "again"})
    assert again.status_code == 409, again.text
    await billing.handle(sub["id"]).result()

    await billing.event(customer, event_type, start + timedelta(days=2))
    await billing.advance(clock, utc(2028, 5, 1))
    [invoice0] = await billing.invoices(sub["id"])
    assert (invoice0.status, invoice0.paid_at) == ("CANCELLED", None)
    assert (await payment_session(billing, sub["payment"]["paymentSessionId"])).status == "cancelled"
    cancelled = await billing.outbox("invoice.cancelled.v0")
    assert [p["id"] for p in cancelled] == [invoice0.id]


@pytest.mark.parametrize("status", ["active", "pending_payment"])
async def test_concurrent_terminations_one_wins_the_others_are_409(billing: Billing, status: str) -> None:
    plan, event_type, _ = await calls_plan(billing, fee="5.00" if status == "pending_payment" else None)
    customer = await billing.customer()
    start = utc(2028, 3, 1)
    clock = await billing.clock(start)
    sub = await billing.subscribe(plan, customer, start, testClockId=clock, sessionExpiryMinutes=10_080)
    assert sub["status"] == status
    await billing.event(customer, event_type, start + timedelta(days=1))
    await billing.advance(clock, start + timedelta(days=5))
    path = f"/v0/subscriptions/{sub['id']}/termination"
    answers = await asyncio.gather(*(billing.http.post(path, json={"reason": f"r{i}"}) for i in range(3)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409], [a.text for a in answers]
    assert len(await billing.outbox("subscription.cancelled.v0")) == 1
    if status == "pending_payment":
        await billing.handle(sub["id"]).result()
        assert [i.status for i in await billing.invoices(sub["id"])] == ["CANCELLED"]
        return
    await billing.advance(clock, start + timedelta(days=5) + GRACE)
    invoices = await billing.invoices(sub["id"])
    assert [(i.status, i.period_end, i.grand_total) for i in invoices[1:]] == [
        ("ISSUED", start + timedelta(days=5), D("1.00"))
    ]


async def test_terminating_inside_the_grace_window_still_bills_the_started_period(billing: Billing) -> None:
    """Period 2 began before the termination, so invoice 1 bills its in-advance fee as D11 says; only the
    final invoice (period 2, cut at terminatedAt) has none, whether the grace window had passed or not."""
    plan, event_type, _ = await calls_plan(billing, fee="20.00")
    customer = await billing.customer()
    start = utc(2028, 3, 1)
    clock = await billing.clock(start)
    sub = await billing.subscribe(plan, customer, start, testClockId=clock)
    await billing.activate(sub)
    await billing.event(customer, event_type, start + timedelta(days=3))
    cut = utc(2028, 4, 1, 6)  # six hours into period 2, inside invoice 1's grace window
    await billing.advance(clock, cut)
    await billing.post(f"/v0/subscriptions/{sub['id']}/termination", {"reason": "Moving on"}, 200)
    await billing.event(customer, event_type, utc(2028, 4, 1, 2))
    await billing.advance(clock, cut + GRACE)
    invoices = await billing.invoices(sub["id"])
    assert [(i.status, i.period_start, i.period_end, i.is_final) for i in invoices[1:]] == [
        ("ISSUED", start, utc(2028, 4, 1), False),
        ("ISSUED", utc(2028, 4, 1), cut, True),
    ]
    assert await issued_lines(billing, sub["id"], 1) == [("Calls", 1, D("1.00")), ("Platform fee", 1, D(20))]
    assert await issued_lines(billing, sub["id"], 2) == [("Calls", 1, D("1.00"))]


async def test_ending_at_makes_period_three_final_and_completes_the_workflow(billing: Billing) -> None:
    plan, event_type, _ = await calls_plan(billing, fee="10.00")
    customer = await billing.customer()
    start = utc(2028, 3, 15)
    ending = utc(2028, 6, 1, 12)  # inside period 3, May 15 → Jun 15
    clock = await billing.clock(start)
    sub = await billing.subscribe(plan, customer, start, testClockId=clock, endingAt=ending.isoformat())
    await billing.activate(sub)
    for day in (utc(2028, 3, 20), utc(2028, 4, 20), utc(2028, 5, 20), utc(2028, 6, 1, 11)):
        await billing.event(customer, event_type, day)
    await billing.event(customer, event_type, utc(2028, 6, 1, 13))  # after endingAt: never billed
    await billing.advance(clock, utc(2028, 5, 15) + GRACE)
    assert await billing.status(sub["id"]) == "active"
    await billing.advance(clock, ending + timedelta(hours=1))
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert (got["status"], ts(got["terminatedAt"]), got["terminatedBy"]) == (
        "terminated",
        ending,
        "system",
    )
    await billing.advance(clock, ending + GRACE)
    await billing.handle(sub["id"]).result()
    assert (await billing.handle(sub["id"]).describe()).status == WorkflowExecutionStatus.COMPLETED

    invoices = await billing.invoices(sub["id"])
    assert [(i.sequence_number, i.status, i.is_final) for i in invoices] == [
        (0, "PAID", False),
        (1, "ISSUED", False),
        (2, "ISSUED", False),
        (3, "ISSUED", True),
    ]
    assert (invoices[3].period_start, invoices[3].period_end) == (utc(2028, 5, 15), ending)
    assert await issued_lines(billing, sub["id"], 2) == [("Calls", 1, D(1)), ("Platform fee", 1, D(10))]
    assert await issued_lines(billing, sub["id"], 3) == [("Calls", 2, D(2))]  # no fee for a next period
    assert len(await billing.outbox("subscription.cancelled.v0")) == 1


async def test_real_time_ending_at_terminates_on_a_timer(timers: Billing) -> None:
    billing, workflow_env = timers, timers.env
    plan, event_type, _ = await calls_plan(billing)
    customer = await billing.customer()
    start = (await workflow_env.get_current_time()).replace(minute=0, second=0, microsecond=0)
    ending = months_after(start, 1) + timedelta(days=3, hours=5)
    sub = await billing.subscribe(plan, customer, start, endingAt=ending.isoformat())
    await billing.event(customer, event_type, months_after(start, 1) + timedelta(days=1))
    await workflow_env.sleep(ending - start + timedelta(hours=1))

    async def terminated() -> None:
        assert await billing.status(sub["id"]) == "terminated"

    await eventually(terminated)
    await workflow_env.sleep(GRACE)
    await billing.handle(sub["id"]).result()
    invoices = await billing.invoices(sub["id"])
    assert [(i.status, i.period_end, i.is_final, i.grand_total) for i in invoices[1:]] == [
        ("PAID", months_after(start, 1), False, D(0)),  # nothing to collect
        ("ISSUED", ending, True, D(1)),
    ]


# ---- startedAt in the past and in the future ------------------------------------------------------------


async def test_started_in_the_past_closes_elapsed_periods_at_once_in_order(billing: Billing) -> None:
    plan, event_type, _ = await calls_plan(billing)
    customer = await billing.customer()
    now = utc(2028, 6, 15, 10)
    started = utc(2028, 3, 15, 10)  # three months ago on the clock
    for when, count in ((utc(2028, 3, 20), 1), (utc(2028, 4, 20), 2), (utc(2028, 6, 1), 3)):
        for _ in range(count):
            await billing.event(customer, event_type, when)
    clock = await billing.clock(now)
    sub = await billing.subscribe(plan, customer, started, testClockId=clock)
    await billing.advance(clock, now)  # returns once the workflow has caught up with the clock

    invoices = await billing.invoices(sub["id"])
    assert [(i.sequence_number, i.status, i.period_start) for i in invoices] == [
        (0, "PAID", started),
        (1, "ISSUED", started),
        (2, "ISSUED", utc(2028, 4, 15, 10)),
        (3, "CLOSING", utc(2028, 5, 15, 10)),  # ended just now; its grace window runs
        (4, "ACTIVE", now),
    ]
    assert [i.grand_total for i in invoices[1:3]] == [D(1), D(2)]
    # Processed in time order, each at its own business time.
    assert [i.issued_at for i in invoices[1:3]] == [utc(2028, 4, 16, 10), utc(2028, 5, 16, 10)]
    issued = [p["id"] for p in await billing.outbox("invoice.issued.v0")]
    assert issued == [invoices[1].id, invoices[2].id]
    await billing.advance(clock, now + GRACE)
    assert (await billing.invoices(sub["id"]))[3].grand_total == D(3)


async def test_started_in_the_future_bills_nothing_before_it(billing: Billing) -> None:
    plan, event_type, _ = await calls_plan(billing)
    customer = await billing.customer()
    now = utc(2028, 4, 1)
    started = datetime(2028, 4, 10, 8, 30, tzinfo=UTC)
    clock = await billing.clock(now)
    sub = await billing.subscribe(plan, customer, started, testClockId=clock)
    await billing.event(customer, event_type, utc(2028, 4, 5))  # before the subscription starts
    await billing.advance(clock, utc(2028, 4, 9))
    assert [i.status for i in await billing.invoices(sub["id"])] == ["PAID", "ACTIVE"]
    await billing.event(customer, event_type, utc(2028, 4, 12))
    await billing.advance(clock, utc(2028, 5, 10, 8) + GRACE)
    invoices = await billing.invoices(sub["id"])
    assert [(i.status, i.period_start, i.period_end, i.grand_total) for i in invoices[1:]] == [
        ("ISSUED", utc(2028, 4, 10, 8), utc(2028, 5, 10, 8), D(1)),
        ("ACTIVE", utc(2028, 5, 10, 8), utc(2028, 6, 10, 8), D(0)),
    ]


# ---- the grace window (D8) ------------------------------------------------------------------------------


async def test_late_events_count_until_the_grace_window_ends(billing: Billing) -> None:
    plan, event_type, _ = await calls_plan(billing)
    customer = await billing.customer()
    start, end = utc(2028, 3, 1), utc(2028, 4, 1)
    clock = await billing.clock(start)
    sub = await billing.subscribe(plan, customer, start, testClockId=clock)
    await billing.event(customer, event_type, utc(2028, 3, 10))
    await billing.advance(clock, end + timedelta(hours=1))
    assert [i.status for i in await billing.invoices(sub["id"])][1:] == ["CLOSING", "ACTIVE"]

    # Sent inside the grace window: one for period 1 (billed there), one for period 2.
    await billing.event(customer, event_type, end - timedelta(minutes=1))
    await billing.event(customer, event_type, end + timedelta(minutes=30))
    await billing.advance(clock, end + GRACE)
    first = (await billing.invoices(sub["id"]))[1]
    assert (first.status, first.grand_total) == ("ISSUED", D(2))
    lines = [(line.id, line.quantity, line.subtotal) for line in await billing.lines(first.id)]

    # Sent after the grace window: stored, but the issued invoice never changes and nothing re-bills it.
    await billing.event(customer, event_type, end - timedelta(minutes=2))
    async with session_factory(billing.engine)() as session:
        stored = await session.scalar(
            select(func.count()).where(MeterEvent.merchant_id == billing.merchant.merchant_id)
        )
    assert stored == 4
    await billing.advance(clock, utc(2028, 5, 1) + GRACE)
    invoices = await billing.invoices(sub["id"])
    assert (invoices[1].grand_total, invoices[1].updated_at) == (D(2), first.updated_at)
    assert [(line.id, line.quantity, line.subtotal) for line in await billing.lines(first.id)] == lines
    assert invoices[2].grand_total == D(1)


# ---- price models and taxes -----------------------------------------------------------------------------

# (metric unit, price model, properties, events' data, expected line (quantity, unitPrice, subtotal))
PRICE_MODELS: dict[str, tuple[str, str, dict[str, Any], list[dict[str, Any]], tuple[D, D, D]]] = {
    "standard, rounded half-up": (
        "tokens", "standard", {"unitPrice": "0.0015"}, [{"value": 333}, {"value": 1000}],
        (D(1333), D("0.0015"), D("2.00")),  # 1.9995
    ),
    "percentage, per-record minCharge and maxCharge": (
        "USD", "percentage", {"percentage": "0.1", "minCharge": "0.50", "maxCharge": "3.00"},
        [{"value": 2}, {"value": 20}, {"value": 100}],
        (D(122), D("0.1"), D("5.50")),  # 0.50 (raised from 0.20) + 2.00 + 3.00 (capped from 10.00)
    ),
    "volume, inside its bounds": (
        "tokens", "volume",
        {"default": "0.10", "parameters": {"function": "linear", "gradient": "-0.00001", "min": "0.02",
                                           "max": "0.10"}},
        [{"value": 3000}, {"value": 2000}],
        (D(5000), D("0.05"), D("250.00")),  # 0.10 − 0.00001 × 5000, on every unit
    ),
    "volume, held to its minimum": (
        "tokens", "volume",
        {"default": "0.10", "parameters": {"function": "linear", "gradient": "-0.00001", "min": "0.02",
                                           "max": "0.10"}},
        [{"value": 9000}, {"value": 3000}],
        (D(12000), D("0.02"), D("240.00")),  # 0.10 − 0.12 < min
    ),
    "dynamic, prices held to [minPrice, maxPrice]": (
        "tokens", "dynamic", {"minPrice": "0.01", "maxPrice": "0.10"},
        [{"value": 100, "price": "0.05"}, {"value": 10, "price": "0.50"}, {"value": 200, "price": "0.001"},
         {"value": 50}],
        # 5.00 + 10 × 0.10 (capped) + 200 × 0.01 (raised) + 50 × 0.01 (no price: minPrice)
        (D(360), D("0.023611111"), D("8.50")),
    ),
}  # fmt: skip


@pytest.mark.parametrize("unit,model,properties,events,expected", PRICE_MODELS.values(), ids=PRICE_MODELS)
async def test_each_price_model_on_a_period_invoice(
    billing: Billing,
    unit: str,
    model: str,
    properties: dict[str, Any],
    events: list[dict[str, Any]],
    expected: tuple[D, D, D],
) -> None:
    product = await billing.product()
    event_type = f"usage.{model}"
    metric = await billing.metric(product, event_type, unit=unit)
    price = await billing.price(
        billableMetricId=metric, model=model, paymentTerm="in_arrears", invoiceDisplayName="Usage",
        properties=properties,
    )  # fmt: skip
    plan = await billing.plan(product, [price])
    customer = await billing.customer()
    start = utc(2028, 1, 1)
    clock = await billing.clock(start)
    sub = await billing.subscribe(plan, customer, start, testClockId=clock)
    for i, data in enumerate(events):
        await billing.event(customer, event_type, start + timedelta(days=i + 1), **data)
    await billing.advance(clock, utc(2028, 2, 1) + GRACE)

    invoice = (await billing.invoices(sub["id"]))[1]
    [line] = await billing.lines(invoice.id)
    assert (line.quantity, line.unit_price, line.subtotal) == expected
    assert (invoice.status, invoice.grand_total) == ("ISSUED", expected[2])
    assert_recomputable(invoice, [line])


# customer taxRates keys: "metric" and "plan" are replaced by the ids created in the test.
# (plan tax, customer taxRates, taxExempt, Invoice 0 (tax, total), period invoice [(line, rate, tax)], totals)
TaxCase = tuple[dict[str, Any], dict[str, float] | None, bool, tuple[D, D], list[Any], tuple[D, D, D]]
TAXES: dict[str, TaxCase] = {
    "plan defaultTaxRate, exclusive": (
        {"defaultTaxRate": 10}, None, False, (D("4.90"), D("53.90")),
        [("Tokens", D("0.1"), D("0.43")), ("Platform fee", D("0.1"), D("4.90"))],
        (D("53.32"), D("5.33"), D("58.65")),
    ),
    "customer rates: metric beats plan beats default": (
        {"defaultTaxRate": 10}, {"metric": 5, "plan": 15, "default": 20}, False, (D("7.35"), D("56.35")),
        [("Tokens", D("0.05"), D("0.22")), ("Platform fee", D("0.15"), D("7.35"))],
        (D("53.32"), D("7.57"), D("60.89")),
    ),
    "customer default rate beats the plan's": (
        {"defaultTaxRate": 10}, {"default": 20}, False, (D("9.80"), D("58.80")),
        [("Tokens", D("0.2"), D("0.86")), ("Platform fee", D("0.2"), D("9.80"))],
        (D("53.32"), D("10.66"), D("63.98")),
    ),
    "taxExempt pays none": (
        {"defaultTaxRate": 10}, {"default": 20}, True, (D(0), D("49.00")),
        [("Tokens", D(0), D(0)), ("Platform fee", D(0), D(0))],
        (D("53.32"), D(0), D("53.32")),
    ),
    "inclusive plan: tax is inside the price": (
        {"defaultTaxRate": 10, "taxBehavior": "inclusive"}, None, False, (D("4.45"), D("49.00")),
        [("Tokens", D("0.1"), D("0.39")), ("Platform fee", D("0.1"), D("4.45"))],
        (D("48.48"), D("4.84"), D("53.32")),  # 4.32 − 4.32 / 1.1 = 0.3927…; 49 − 49 / 1.1 = 4.4545…
    ),
}  # fmt: skip


@pytest.mark.parametrize("plan_tax,rates,exempt,invoice0,lines,totals", TAXES.values(), ids=TAXES.keys())
async def test_taxes_on_invoice0_and_period_invoices(
    billing: Billing,
    plan_tax: dict[str, Any],
    rates: dict[str, float] | None,
    exempt: bool,
    invoice0: tuple[D, D],
    lines: list[tuple[str, D, D]],
    totals: tuple[D, D, D],
) -> None:
    plan, tokens = await billing.quickstart_catalog(**plan_tax)
    keys = {"metric": tokens, "plan": plan, "default": "default"}
    extra: dict[str, Any] = {"taxRates": {keys[k]: v for k, v in rates.items()}} if rates else {}
    customer = await billing.customer(**extra)
    start = utc(2028, 1, 1)
    clock = await billing.clock(start)
    sub = await billing.subscribe(plan, customer, start, testClockId=clock, taxExempt=exempt)
    first = (await billing.invoices(sub["id"]))[0]
    assert (first.total_tax, first.grand_total) == invoice0
    assert sub["payment"]["amount"] == str(invoice0[1])
    assert_recomputable(first, await billing.lines(first.id), plan_tax.get("taxBehavior", "exclusive"))
    await billing.activate(sub)
    for value in (1321, 3000):
        await billing.event(customer, "llm.tokens", start + timedelta(days=3), value=value)
    await billing.advance(clock, utc(2028, 2, 1) + GRACE)

    invoice = (await billing.invoices(sub["id"]))[1]
    got = await billing.lines(invoice.id)
    assert [(line.display_name, line.tax_rate, line.tax_total) for line in got] == lines
    assert (invoice.subtotal, invoice.total_tax, invoice.grand_total) == totals
    assert_recomputable(invoice, got, plan_tax.get("taxBehavior", "exclusive"))
