"""Funding at subscription create (behavior §4.5, D10): `minimumAccountBalance` / `prefundAmount` add a wallet
top-up to Invoice 0 (`payment.breakdown.walletCharge`, a line of its own), and paying Invoice 0 credits the
wallet exactly once, in the transaction that records it PAID. Real API, workflow, database and ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select

from activities.subscription import SubscriptionActivities
from db import ledger as ledger_db
from db.funding import credit_topup
from db.models import Invoice, LedgerTransaction, UsageEvent
from db.session import session_factory
from domain import ledger
from domain.ids import new_id
from tests.workflows.billing_harness import GRACE, Billing, assert_recomputable, eventually
from workflows.subscription_messages import RecordPayment

JAN31 = datetime(2026, 1, 31, tzinfo=UTC)
NANOS = 10**9


async def legacy_plan(billing: Billing, **extra: Any) -> str:
    """Billing version 0 (pay-as-you-go): $49 platform fee in advance, tokens in arrears."""
    plan, _ = await billing.quickstart_catalog(billingVersion=0, **extra)
    return plan


async def metered_only_plan(billing: Billing) -> str:
    product = await billing.product()
    calls = await billing.metric(product, "api.calls", aggregation="COUNT", unit="calls")
    price = await billing.price(
        billableMetricId=calls, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Calls",
        properties={"unitPrice": "0.001"},
    )  # fmt: skip
    return await billing.plan(product, [price], billingVersion=0)


async def balances(billing: Billing, customer_id: str) -> dict[tuple[str, str], int]:
    async with session_factory(billing.engine)() as session:
        merchant = billing.merchant
        return await ledger_db.balances(session, merchant.merchant_id, "sandbox", customer_id)


async def audit(billing: Billing) -> list[str]:
    async with session_factory(billing.engine)() as session:
        return await ledger_db.audit(session, billing.merchant.merchant_id)


async def topup_credits(billing: Billing, invoice_id: str) -> int:
    async with session_factory(billing.engine)() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(LedgerTransaction)
                .where(
                    LedgerTransaction.merchant_id == billing.merchant.merchant_id,
                    LedgerTransaction.idempotency_key == f"topup:{invoice_id}",
                    LedgerTransaction.kind == "funding",
                )
            )
            or 0
        )


async def fund(billing: Billing, customer_id: str, amount: str) -> None:
    """Money already in the customer's wallet (an earlier top-up)."""
    async with session_factory(billing.engine)() as session:
        merchant = billing.merchant.merchant_id
        nanos = int(Decimal(amount) * NANOS)
        txn = ledger.funding(merchant, customer_id, "USD", nanos)
        await ledger_db.post(session, merchant, "sandbox", txn, idempotency_key=f"test-fund:{customer_id}")
        await session.commit()


async def test_invoice0_adds_the_top_up_and_paying_it_credits_the_wallet_once(billing: Billing) -> None:
    plan = await legacy_plan(billing, defaultTaxRate=10)
    customer = await billing.customer()
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(plan, customer, JAN31, testClockId=clock, minimumAccountBalance="20.00")
    assert sub["status"] == "pending_payment"
    payment = sub["payment"]
    # $49 fee with 10 % tax, and the $20 top-up, which is not taxed (it is not a sale).
    assert payment["status"] == "pending"
    assert payment["breakdown"] == {"upfrontCharges": "53.90", "walletCharge": "20.00"}
    assert payment["amount"] == "73.90"
    assert sub["minimumAccountBalance"] == "20000000000"
    assert (sub["walletId"], sub["walletBalance"], sub["reservedBalance"]) == (None, "0.00", "0.00")

    invoice0 = (await billing.invoices(sub["id"]))[0]
    lines = await billing.lines(invoice0.id)
    assert [(li.type, li.display_name, li.subtotal, li.tax_total, li.total) for li in lines] == [
        ("fee", "Platform fee", Decimal("49.00"), Decimal("4.90"), Decimal("53.90")),
        ("fee", "Wallet top-up", Decimal("20.00"), Decimal("0.00"), Decimal("20.00")),
    ]
    assert lines[1].idempotency_key == f"topup:{invoice0.id}" and lines[1].price_id is None
    assert lines[1].payment_term == "in_advance" and lines[1].quantity == 1
    assert_recomputable(invoice0, lines)
    assert invoice0.grand_total == Decimal("73.90")
    # The API's line items say the same (the contract's types, so every amount recomputes from them).
    listed = await billing.get("/v2/invoices/lineItems", invoiceId=invoice0.id)
    assert [(i["type"], i["displayName"], i["total"]) for i in listed["data"]] == [
        ("fee", "Platform fee", "53.90"),
        ("fee", "Wallet top-up", "20.00"),
    ]
    view = await billing.get(f"/v2/invoices/{invoice0.id}/lineItems")
    assert [(i["eventType"], i["invoiceDisplayName"], i["totalAmount"]) for i in view["lineItems"]] == [
        ("fee", "Platform fee", "53.90"),
        ("fee", "Wallet top-up", "20.00"),
    ]
    assert await balances(billing, customer) == {}
    assert (await billing.get(f"/v0/customers/{customer}"))["wallets"] == []

    # The payment signal, then the same signal again and again (a retried webhook, a double click).
    for _ in range(3):
        await billing.pay(sub)

    async def credited() -> None:
        assert await billing.status(sub["id"]) == "active"
        assert await balances(billing, customer) == {("USD", "customer_main"): 20 * NANOS}

    await eventually(credited)
    await billing.advance(clock, JAN31 + timedelta(hours=1))  # the workflow has handled every signal
    assert await balances(billing, customer) == {("USD", "customer_main"): 20 * NANOS}
    assert await topup_credits(billing, invoice0.id) == 1
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert got["walletId"].startswith("acc_")
    assert (got["walletBalance"], got["reservedBalance"]) == ("20.00", "0.00")
    # The customer shows its wallets (extension), on GET and on the list.
    wallet = {"walletId": got["walletId"], "currency": "USD", "balance": "20.00", "reservedBalance": "0.00"}
    assert (await billing.get(f"/v0/customers/{customer}"))["wallets"] == [wallet]
    listed = await billing.get("/v0/customers", organizationId=billing.merchant.merchant_id)
    assert {c["id"]: c["wallets"] for c in listed["data"]}[customer] == [wallet]
    assert present(got["payment"]) == {"status": "paid", "invoiceId": invoice0.id, "amount": "73.90"}
    paid = (await billing.invoices(sub["id"]))[0]
    assert paid.status == "PAID" and paid.paid_amount == Decimal("73.90")
    # The webhook of the activation shows the credited wallet.
    activated = (await billing.outbox("subscription.activated.v0"))[-1]
    assert activated["walletBalance"] == "20.00" and activated["walletId"] == got["walletId"]
    assert await audit(billing) == []


async def test_a_retried_record_payment_and_a_second_credit_move_nothing(billing: Billing) -> None:
    plan = await metered_only_plan(billing)
    customer = await billing.customer()
    sub = await billing.subscribe(plan, customer, JAN31, prefundAmount="5")
    # Nothing upfront but the prefund: Invoice 0 is the top-up alone.
    assert sub["status"] == "pending_payment"
    assert sub["payment"]["breakdown"] == {"upfrontCharges": "0.00", "walletCharge": "5.00"}
    assert sub["payment"]["amount"] == "5.00" and sub["prefundAmount"] == "5000000000"
    await billing.activate(sub)
    await eventually(lambda: _expect(balances(billing, customer), {("USD", "customer_main"): 5 * NANOS}))
    # The activity again, as Temporal retries it after a commit whose answer was lost.
    activities = SubscriptionActivities(billing.engine, GRACE, "http://accrue.test")
    outcome = await activities.record_payment(
        RecordPayment(
            subscription_id=sub["id"],
            invoice_id=sub["payment"]["invoiceId"],
            payment_session_id=sub["payment"]["paymentSessionId"],
            at=datetime.now(UTC),
            succeeded=True,
        )
    )
    assert (outcome.applied, outcome.activated) == (False, True)
    # And the credit itself, called twice more: the ledger's key keeps it at one.
    async with session_factory(billing.engine)() as session:
        invoice = await session.get_one(Invoice, sub["payment"]["invoiceId"])
        again = await credit_topup(session, invoice)
        assert again is not None and again.created is False
        await session.commit()
    assert await balances(billing, customer) == {("USD", "customer_main"): 5 * NANOS}
    assert await topup_credits(billing, sub["payment"]["invoiceId"]) == 1
    assert await audit(billing) == []


def present(payment: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payment.items() if v is not None}


async def _expect(got: Any, want: Any) -> None:
    assert await got == want


async def test_the_top_up_is_what_the_wallet_lacks(billing: Billing) -> None:
    plan = await metered_only_plan(billing)

    async def charge_for(funded: str | None, minimum: str) -> dict[str, Any]:
        customer = await billing.customer()
        if funded is not None:
            await fund(billing, customer, funded)
        return dict(await billing.subscribe(plan, customer, JAN31, minimumAccountBalance=minimum))

    short = await charge_for("15.00", "20.00")
    assert short["payment"]["breakdown"]["walletCharge"] == "5.00"
    assert (short["walletBalance"], short["status"]) == ("15.00", "pending_payment")
    # $0.50 short is below the processor's minimum charge: raised to $1.00.
    tiny = await charge_for("19.50", "20.00")
    assert tiny["payment"]["breakdown"]["walletCharge"] == "1.00" and tiny["payment"]["amount"] == "1.00"
    # Enough already: no top-up, and a zero Invoice 0 behaves as always (paid, active at once).
    enough = await charge_for("25.00", "20.00")
    assert enough["status"] == "active" and enough["payment"]["amount"] == "0.00"
    invoice0 = (await billing.invoices(enough["id"]))[0]
    assert invoice0.status == "PAID" and await billing.lines(invoice0.id) == []
    # "0" disables it.
    off = await charge_for(None, "0")
    assert off["status"] == "active" and present(off["payment"]) == {
        "status": "paid",
        "invoiceId": off["payment"]["invoiceId"],
        "amount": "0.00",
    }
    assert await audit(billing) == []


async def test_minimum_balance_bounds_are_400(billing: Billing) -> None:
    plan = await metered_only_plan(billing)
    customer = await billing.customer()
    for field, value in (
        ("minimumAccountBalance", "5000.01"),
        ("minimumAccountBalance", "20.005"),
        ("prefundAmount", "10000"),
    ):
        body = {"name": "x", "planId": plan, "customerId": customer, "startedAt": JAN31.isoformat()}
        response = await billing.http.post("/v0/subscriptions", json=body | {field: value})
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["field"] == field


async def test_declined_then_expired_checkout_credits_nothing(billing: Billing) -> None:
    plan = await legacy_plan(billing)
    customer = await billing.customer()
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(
        plan, customer, JAN31, testClockId=clock, minimumAccountBalance="20", sessionExpiryMinutes=60
    )
    assert sub["payment"]["amount"] == "69.00"
    declined = await billing.http.post(
        f"/checkout/{sub['payment']['paymentSessionId']}/decline", headers={"Authorization": ""}
    )
    assert declined.status_code == 303
    assert (await billing.get(f"/v0/paymentSessions/{sub['payment']['paymentSessionId']}"))[
        "status"
    ] == "declined"
    assert await balances(billing, customer) == {}
    await billing.advance(clock, JAN31 + timedelta(minutes=61))
    assert await billing.status(sub["id"]) == "terminated"
    assert [i.status for i in await billing.invoices(sub["id"])] == ["CANCELLED"]
    # The expired checkout refuses a late payment, and nothing was credited.
    late = await billing.http.post(
        f"/checkout/{sub['payment']['paymentSessionId']}/complete", headers={"Authorization": ""}
    )
    assert late.status_code == 410
    assert await balances(billing, customer) == {}
    assert await topup_credits(billing, sub["payment"]["invoiceId"]) == 0
    assert await audit(billing) == []


async def test_paying_on_the_checkout_page_credits_the_wallet(billing: Billing) -> None:
    plan = await metered_only_plan(billing)
    customer = await billing.customer()
    sub = await billing.subscribe(plan, customer, JAN31, minimumAccountBalance="12.34")
    session_id = sub["payment"]["paymentSessionId"]
    page = await billing.http.get(f"/checkout/{session_id}", headers={"Authorization": ""})
    assert page.status_code == 200 and "Wallet top-up" in page.text and "12.34" in page.text
    done = await billing.http.post(f"/checkout/{session_id}/complete", headers={"Authorization": ""})
    assert done.status_code == 303
    assert await balances(billing, customer) == {("USD", "customer_main"): 12_340_000_000}
    assert await billing.status(sub["id"]) == "active"
    assert await audit(billing) == []


async def test_the_portal_tracks_spending(billing: Billing) -> None:
    plan = await metered_only_plan(billing)
    customer = await billing.customer()
    sub = await billing.subscribe(plan, customer, datetime.now(UTC), minimumAccountBalance="20.00")
    link = await billing.post(f"/v0/subscriptions/{sub['id']}/portal", {}, 200)
    path = httpx.URL(link["url"]).raw_path.decode()
    # Before Invoice 0 is paid: a pay-as-you-go plan shows its (empty) wallet.
    before = await billing.http.get(path, headers={"Authorization": ""})
    assert before.status_code == 200 and "Track spending" in before.text
    assert '<dd data-testid="wallet-balance">0.00 USD</dd>' in before.text
    assert "No usage charged yet." in before.text
    await billing.activate(sub)
    await eventually(lambda: _expect(balances(billing, customer), {("USD", "customer_main"): 20 * NANOS}))

    # One usage charge of $0.003 from the wallet, as POST /v0/usage writes it (event and ledger together).
    metric = await billing.get("/v0/billableMetrics", merchantId=billing.merchant.merchant_id)
    calls = next(m for m in metric["data"] if m["name"] == "api.calls")
    async with session_factory(billing.engine)() as session:
        merchant = billing.merchant.merchant_id
        event_id = new_id("usage_event")
        charge = ledger.usage(merchant, customer, "USD", 3_000_000, Decimal(0))
        posted = await ledger_db.post(
            session, merchant, "sandbox", charge, idempotency_key=f"usage:{event_id}"
        )
        session.add(
            UsageEvent(
                id=event_id, merchant_id=merchant, environment="sandbox", customer_id=customer,
                consumer_id="org_x", subscription_id=sub["id"], idempotency_key=event_id,
                timestamp=datetime.now(UTC), currency="USD",
                properties=[{"billableMetricId": calls["id"], "quantity": 3}],
                price=Decimal("0.003"), total_amount=Decimal("0.003"), instant_amount=Decimal("0.003"),
                transaction_id=posted.transaction_id,
            )
        )  # fmt: skip
        await session.commit()

    page = await billing.http.get(path, headers={"Authorization": ""})
    html = page.text
    assert page.status_code == 200
    assert '<dd data-testid="wallet-balance">19.997 USD</dd>' in html
    assert '<dd data-testid="reserved-funds">0.00 USD</dd>' in html
    assert "api.calls × 3" in html and "0.003 USD" in html and "Wallet" in html
    assert "Top-up" in html and "+20.00 USD" in html and "Usage charge" in html
    assert "Usage this period" in html  # the plan's in-arrears price still shows its estimate
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert got["walletBalance"] == "19.997"
    assert await audit(billing) == []


async def test_a_standard_plan_without_a_wallet_shows_no_spending(billing: Billing) -> None:
    plan, _ = await billing.quickstart_catalog()
    sub = await billing.subscribe(plan, await billing.customer(), datetime.now(UTC))
    link = await billing.post(f"/v0/subscriptions/{sub['id']}/portal", {}, 200)
    page = await billing.http.get(httpx.URL(link["url"]).raw_path.decode(), headers={"Authorization": ""})
    assert page.status_code == 200 and "Track spending" not in page.text
