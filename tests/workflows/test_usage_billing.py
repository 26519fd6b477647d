"""Legacy usage events on the period invoice (D4, D5), end to end on the time-skipping server: a
billingVersion 0 plan with an instant price and two in-arrears prices (standard and percentage); usage
through POST /v0/usage; the test clock crosses the period and its grace window; the subscription workflow's
calculation bills exactly the period's non-refunded in-arrears usage, marks those events billed, and a
refund of a billed event becomes a refund line on the next invoice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

from sqlalchemy import select

from db import ledger as records
from db.models import UsageEvent
from db.session import session_factory
from domain import ledger
from domain.ids import new_id
from tests.workflows.billing_harness import GRACE, Billing, assert_recomputable

D = Decimal
DOLLAR = 10**9
START = datetime(2028, 3, 1, tzinfo=UTC)
PERIOD_END = datetime(2028, 4, 1, tzinfo=UTC)


async def metric(billing: Billing, product: str, name: str, unit: str) -> str:
    body = {
        "merchantId": billing.merchant.merchant_id,
        "productId": product,
        "name": name,
        "description": name,
        "unit": unit,
        "aggregation": "SUM",
        "valueProperty": "$.value",
    }
    return str((await billing.post("/v0/billableMetrics", body))["id"])


async def usage(billing: Billing, customer: str, at: datetime, *props: tuple[str, int]) -> Any:
    body = {
        "merchantId": billing.merchant.merchant_id,
        "customerId": customer,
        "idempotencyKey": uuid4().hex,
        "timestamp": at.isoformat(),
        "properties": [{"billableMetricId": m, "quantity": q} for m, q in props],
    }
    return await billing.post("/v0/usage", body, status=201)


async def test_in_arrears_usage_is_billed_on_the_period_invoice_exactly(billing: Billing) -> None:
    product = await billing.product()
    calls = await metric(billing, product, "Calls", "calls")
    runs = await metric(billing, product, "Runs", "runs")
    revenue = await metric(billing, product, "Revenue", "USD")
    prices = [
        await billing.price(
            billableMetricId=calls, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Calls",
            properties={"unitPrice": "0.01"},
        ),
        await billing.price(
            billableMetricId=runs, model="standard", paymentTerm="instant", invoiceDisplayName="Runs",
            properties={"unitPrice": "0.5"},
        ),
        await billing.price(
            billableMetricId=revenue, model="percentage", paymentTerm="in_arrears",
            invoiceDisplayName="Revenue share", properties={"percentage": "0.05", "minCharge": "0.10",
                                                             "maxCharge": "100"},
        ),
    ]  # fmt: skip
    plan = await billing.plan(product, prices, billingVersion=0)
    customer = await billing.customer()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, customer, START, testClockId=clock)
    assert sub["status"] == "active"  # nothing due in advance: Invoice 0 is 0.00 and PAID
    async with session_factory(billing.engine)() as session:
        await records.post(
            session,
            billing.merchant.merchant_id,
            "sandbox",
            ledger.funding(billing.merchant.merchant_id, customer, "USD", 10 * DOLLAR),
            idempotency_key=f"topup:{new_id('invoice')}",
        )
        await session.commit()

    day = timedelta(days=1)
    billed = [
        await usage(billing, customer, START + day, (calls, 100), (runs, 2)),  # 1.00 debited at once
        await usage(billing, customer, START + 2 * day, (calls, 50), (revenue, 30)),  # 5 % of 30 = 1.50
        await usage(billing, customer, START + 3 * day, (revenue, 1)),  # 0.05 → minCharge 0.10
    ]
    refunded = await usage(billing, customer, START + 4 * day, (calls, 1000))
    later = await usage(billing, customer, PERIOD_END + day, (calls, 700))  # period 2
    response = await billing.http.patch(f"/v0/usage/{refunded['id']}", json={"refunded": True})
    assert response.status_code == 200, response.text
    assert billed[0]["billing"]["billingEventId"].startswith("txn_")

    await billing.advance(clock, PERIOD_END + GRACE + timedelta(hours=1))
    invoices = {i.sequence_number: i for i in await billing.invoices(sub["id"])}
    first = invoices[1]
    assert first.status in ("ISSUED", "PAID"), first.status
    lines = await billing.lines(first.id)
    assert [(line.display_name, line.quantity, line.subtotal) for line in lines] == [
        ("Calls", D("150"), D("1.50")),  # 100 + 50; the refunded 1,000 are not billed
        ("Revenue share", D("31"), D("1.60")),  # 1.50 + 0.10, each event held to its bounds
    ]
    assert first.grand_total == D("3.10")
    assert_recomputable(first, lines)

    async with session_factory(billing.engine)() as session:
        rows = {
            r.id: r.invoice_id
            for r in await session.scalars(select(UsageEvent).where(UsageEvent.customer_id == customer))
        }
    assert rows[billed[1]["id"]] == rows[billed[2]["id"]] == first.id
    assert rows[billed[0]["id"]] == first.id  # its Calls part was billed here
    assert rows[refunded["id"]] is None and rows[later["id"]] is None
    got = await billing.get(f"/v0/usage/{billed[1]['id']}")
    assert got["billing"]["invoiceId"] == first.id

    # A refund of an event already billed: a refund line on the open invoice (period 2).
    response = await billing.http.patch(f"/v0/usage/{billed[1]['id']}", json={"refunded": True})
    assert response.status_code == 200, response.text
    second = invoices[2]
    analytics = await billing.get(f"/v2/invoices/{second.id}/lineItems")
    refunds = [line for line in analytics["lineItems"] if line["lineItemType"] == "refund"]
    assert [(r["totalPrice"], r["quantity"]) for r in refunds] == [("-0.50", -50), ("-1.50", -30)], refunds
    items = await billing.get("/v2/invoices/lineItems", subscriptionId=sub["id"], status="pending")
    assert sorted(i["type"] for i in items["data"]) == ["refund", "refund"]

    await billing.advance(clock, PERIOD_END + timedelta(days=30) + GRACE + timedelta(hours=1))
    second = {i.sequence_number: i for i in await billing.invoices(sub["id"])}[2]
    lines = await billing.lines(second.id)
    assert sorted((line.display_name, line.subtotal) for line in lines) == [
        ("Calls", D("7.00")),
        (f"Refund of usage event {billed[1]['id']}", D("-1.50")),
        (f"Refund of usage event {billed[1]['id']}", D("-0.50")),
    ]
    assert second.grand_total == D("5.00")
    assert_recomputable(second, lines)
    async with session_factory(billing.engine)() as session:
        assert await records.audit(session, billing.merchant.merchant_id) == []
        wallet = await records.balances(session, billing.merchant.merchant_id, "sandbox", customer, "USD")
    assert wallet == {("USD", "customer_main"): 9 * DOLLAR}
