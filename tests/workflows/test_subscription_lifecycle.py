"""Subscriptions end to end on the time-skipping server: Invoice 0 gating, periods, grace, termination."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.workflows.billing_harness import GRACE, Billing, eventually

JAN31 = datetime(2026, 1, 31, tzinfo=UTC)


async def quickstart_plan(billing: Billing) -> tuple[str, str]:
    """Seed 002: a $49 monthly platform fee paid in advance and tokens at $0.001 in arrears."""
    plan, _ = await billing.quickstart_catalog()
    return plan, "llm.tokens"


async def test_invoice0_paid_then_first_period_invoiced(billing: Billing) -> None:
    plan, event_type = await quickstart_plan(billing)
    customer = await billing.customer()
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(plan, customer, JAN31, testClockId=clock)
    assert sub["status"] == "pending_payment"
    assert sub["payment"]["status"] == "pending" and sub["payment"]["amount"] == "49.00"
    assert sub["payment"]["checkoutUrl"].endswith(sub["payment"]["paymentSessionId"])

    await billing.pay(sub)

    async def active() -> Any:
        got = await billing.get(f"/v0/subscriptions/{sub['id']}")
        assert got["status"] == "active", got
        return got

    paid = await eventually(active)
    assert paid["payment"] == {
        "status": "paid",
        "invoiceId": sub["payment"]["invoiceId"],
        "amount": "49.00",
    } | {k: None for k in ("breakdown", "checkoutUrl", "paymentSessionId")}
    for value, day in ((1000, 2), (2500, 10), (500, 27)):
        await billing.event(customer, event_type, JAN31 + timedelta(days=day), value=value)

    # While period 1 runs its invoice's aggregates are live: the usage so far plus next month's fee.
    open_invoice = (await billing.invoices(sub["id"]))[1]
    live = await billing.get(f"/v2/invoices/{open_invoice.id}")
    assert (live["status"], live["subtotal"], live["grandTotal"], live["itemCount"]) == (
        "ACTIVE",
        "53.00",
        "53.00",
        2,
    )

    # Period 1 is Jan 31 → Feb 28; its invoice closes a day later, at the end of the grace window.
    await billing.advance(clock, datetime(2026, 2, 28, tzinfo=UTC) + GRACE)
    invoices = await billing.invoices(sub["id"])
    assert [(i.sequence_number, i.status) for i in invoices] == [(0, "PAID"), (1, "ISSUED"), (2, "ACTIVE")]
    first = invoices[1]
    assert (first.period_start, first.period_end) == (JAN31, datetime(2026, 2, 28, tzinfo=UTC))
    lines = await billing.lines(first.id)
    assert [(line.display_name, line.quantity, line.subtotal) for line in lines] == [
        ("Tokens", Decimal(4000), Decimal("4.00")),
        ("Platform fee", Decimal(1), Decimal("49.00")),
    ]
    assert (first.subtotal, first.total_tax, first.grand_total) == (Decimal("53.00"), 0, Decimal("53.00"))
    assert (invoices[2].period_start, invoices[2].period_end) == (
        datetime(2026, 2, 28, tzinfo=UTC),
        datetime(2026, 3, 31, tzinfo=UTC),
    )


async def test_zero_invoice0_activates_at_once_and_bills_thirteen_months(billing: Billing) -> None:
    product = await billing.product()
    calls = await billing.metric(product, "api.calls", aggregation="COUNT", unit="calls")
    price = await billing.price(
        billableMetricId=calls, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Calls",
        properties={"unitPrice": "0.50"},
    )  # fmt: skip
    plan = await billing.plan(product, [price])
    customer = await billing.customer()
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(plan, customer, JAN31, testClockId=clock)
    assert (
        sub["status"] == "active"
        and sub["payment"]["status"] == "paid"
        and sub["payment"]["amount"] == "0.00"
    )
    first_run = (await billing.handle(sub["id"]).describe()).run_id

    ends = [JAN31]
    for month in range(1, 14):
        year, m = divmod(month, 12)
        ends.append(_month_end_clamped(2026 + year, m + 1))
    for n in range(1, 14):
        await billing.event(customer, "api.calls", ends[n - 1] + timedelta(hours=1))
        await billing.advance(clock, ends[n] + GRACE)

    invoices = await billing.invoices(sub["id"])
    assert [i.status for i in invoices] == ["PAID"] + ["ISSUED"] * 13 + ["ACTIVE"]
    assert [(i.period_start, i.period_end) for i in invoices[1:14]] == list(itertools.pairwise(ends))
    assert all(i.grand_total == Decimal("0.50") for i in invoices[1:14])
    assert (await billing.handle(sub["id"]).describe()).run_id != first_run  # continued as new


def _month_end_clamped(year: int, month: int) -> datetime:
    """The Jan 31 anchor's period boundaries: the 31st, or the last day of shorter months."""
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    for day in (31, 30, 29, 28):
        try:
            return datetime(year, month, day, tzinfo=UTC)
        except ValueError:
            continue
    raise AssertionError("unreachable")


async def test_unpaid_invoice0_expires_and_terminates(billing: Billing) -> None:
    plan, _ = await quickstart_plan(billing)
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(
        plan, await billing.customer(), JAN31, testClockId=clock, sessionExpiryMinutes=60
    )
    await billing.advance(clock, JAN31 + timedelta(minutes=61))
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert (got["status"], got["terminatedBy"], got["payment"]) == ("terminated", "system", None)
    assert [i.status for i in await billing.invoices(sub["id"])] == ["CANCELLED"]


async def test_terminate_mid_period_bills_usage_so_far_and_twice_is_409(billing: Billing) -> None:
    plan, event_type = await quickstart_plan(billing)
    customer = await billing.customer()
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(plan, customer, JAN31, testClockId=clock)
    await billing.pay(sub)

    async def active() -> None:
        assert (await billing.get(f"/v0/subscriptions/{sub['id']}"))["status"] == "active"

    await eventually(active)
    await billing.event(customer, event_type, JAN31 + timedelta(days=3), value=2000)
    middle = JAN31 + timedelta(days=10)
    await billing.advance(clock, middle)
    done = await billing.post(f"/v0/subscriptions/{sub['id']}/termination", {"reason": "Customer asked"}, 200)
    assert (done["status"], done["terminatedBy"], done["terminationReason"]) == (
        "terminated",
        billing.merchant.merchant_id,
        "Customer asked",
    )
    again = await billing.http.post(f"/v0/subscriptions/{sub['id']}/termination", json={"reason": "again"})
    assert again.status_code == 409 and again.json()["error"] == "conflict"

    await billing.advance(clock, middle + GRACE)
    invoices = await billing.invoices(sub["id"])
    assert [(i.sequence_number, i.status) for i in invoices] == [(0, "PAID"), (1, "ISSUED")]
    final = invoices[1]
    assert final.period_end == middle and final.grand_total == Decimal("2.00")  # no next-period fee
