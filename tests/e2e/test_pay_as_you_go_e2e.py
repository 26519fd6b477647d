"""Seed 001 ("Monetizing an API", pay-as-you-go) end to end through paygentic-sdk 0.1.34 against `accrue dev`:
the product with three metrics priced `instant` on a Legacy (billingVersion 0) plan with a one-time setup
fee; the customer created by email (the repeat answers 200 with the same id); a subscription with
`minimumAccountBalance`, whose Invoice 0 (setup fee + wallet top-up) is paid on the checkout page in
Chromium; an entitlement reserving funds, used with `entitlementId` until the reservation runs out (the
next use is refused); usage without it against the wallet; one refund; one dispute accepted; the portal in
Chromium showing the balance and the usage; and `GET /v0/revenue` adding up to the cent.
docs/pay-as-you-go.md walks the same steps."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psutil
import pytest
from paygentic_sdk import Paygentic, errors, models
from playwright.sync_api import Browser, sync_playwright

from accrue.embedded_db import postmaster_pid
from tests.conftest import free_port
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_dev_stack import Dev, Ports, Ready

TIMEOUT_MS = 60_000
NANOS = 10**9


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[tuple[str, Ready]]:
    """`accrue dev` on free ports in a fresh data directory, stopped with Ctrl-C afterwards."""
    data_dir = tmp_path / "accrue"
    ports = Ports(api=free_port(), temporal=free_port(), ui=free_port())
    dev = Dev(data_dir, ports)
    try:
        yield f"http://127.0.0.1:{ports.api}", dev.wait_ready()
    finally:
        if dev.process.poll() is None:
            dev.process.send_signal(signal.SIGINT)
            try:
                dev.process.wait(60)
            except subprocess.TimeoutExpired:
                dev.kill()
        pid = postmaster_pid(data_dir / "postgres")
        if pid is not None:
            psutil.Process(pid).send_signal(signal.SIGINT)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def wait_until(check: Any, within: float = 30) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


def pay_in_browser(browser: Browser, checkout_url: str) -> str:
    """The customer pays Invoice 0 on the hosted checkout page; returns what the page says afterwards."""
    page = browser.new_page()
    try:
        page.goto(checkout_url)
        assert "Wallet top-up" in page.content()
        page.click("button:has-text('Pay (test)')")
        page.wait_for_selector("h1:has-text('paid to')", timeout=30_000)
        return page.inner_text("h1")
    finally:
        page.close()


def test_pay_as_you_go_seed_001(dev_stack: tuple[str, Ready], browser: Browser) -> None:
    base, ready = dev_stack
    merchant = ready.merchant_id
    with (
        Paygentic(server_url=base, bearer_auth=ready.api_key, timeout_ms=TIMEOUT_MS) as sdk,
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ready.api_key}"}, timeout=60) as http,
    ):
        # Merchant onboarding: the product, a metric per API tier, and the usage plan with its prices.
        product = sdk.products.create(
            merchant_id=merchant, name="Code Execution API", description="Run code in a sandbox"
        )

        def metric(name: str, unit: str) -> str:
            return sdk.billable_metrics.create(
                merchant_id=merchant, product_id=product.id, name=name, description=name, unit=unit,
                aggregation="COUNT",
            ).id  # fmt: skip

        basic = metric("Basic Submissions", "submissions")
        premium = metric("Premium Submissions", "submissions")
        seconds = metric("Execution Time", "seconds")

        def instant(metric_id: str, name: str, unit_price: str) -> str:
            return sdk.prices.create(
                billable_metric_id=metric_id, model="standard", payment_term="instant",
                invoice_display_name=name, properties={"unit_price": unit_price},
            ).id  # fmt: skip

        setup_fee = sdk.fees.create(
            merchant_id=merchant, product_id=product.id, name="Setup", description="One-time setup"
        )
        prices = [
            instant(basic, "Basic submissions", "0.001"),
            instant(premium, "Premium submissions", "0.005"),
            instant(seconds, "Execution time", "0.0001"),
            sdk.prices.create(
                fee_id=setup_fee.id, model="standard", payment_term="in_advance", billing_cadence="P0D",
                invoice_display_name="Setup fee", properties={"unit_price": "5.00"},
            ).id,
        ]  # fmt: skip
        plan = sdk.plans.create(
            merchant_id=merchant, product_id=product.id, name="Pay as you go", currency="USD",
            billing_interval="monthly", billing_version=0, prices=prices,
        )  # fmt: skip
        assert plan.billing_version == 0

        # Customer onboarding: created by email, idempotently.
        consumer = {
            "name": "Jane Developer",
            "email": f"jane+{uuid4().hex[:8]}@devshop.example",
            "address": {"country": "US", "state": "CA", "zip_code": "94107"},
        }
        first = sdk.customers.create(merchant_id=merchant, consumer=consumer)
        again = sdk.customers.create(merchant_id=merchant, consumer=consumer)
        assert isinstance(first, models.CreateCustomerResponseBody2), first  # 201
        assert isinstance(again, models.CreateCustomerResponseBody1), again  # 200: it already exists
        customer = first.customer_id
        assert again.customer_id == customer

        # The subscription with a prefund: the checkout collects the setup fee and the wallet top-up.
        sub = sdk.subscriptions.create(
            name="Jane - Code Execution API",
            plan_id=plan.id,
            customer_id=customer,
            started_at=datetime.now(UTC),
            minimum_account_balance="20.00",
        )
        assert sub.status == "pending_payment"
        payment = sub.payment
        assert isinstance(payment, models.PaymentPending), payment
        assert (payment.amount, payment.breakdown.upfront_charges, payment.breakdown.wallet_charge) == (
            "25.00",
            "5.00",
            "20.00",
        )
        assert "25.00" in pay_in_browser(browser, payment.checkout_url)
        assert wait_until(lambda: sdk.subscriptions.get(id=sub.id).status == "active")
        active = ok(http.get(f"/v0/subscriptions/{sub.id}"))
        assert active["walletId"].startswith("acc_") and active["walletBalance"] == "20.00"

        # Pre-authorization: 40 basic submissions at $0.001 reserved, for at most 4 uses.
        entitlement = sdk.entitlements_v0.create(
            customer_id=customer,
            merchant_id=merchant,
            entitlement_data=[{"billable_metric_id": basic, "quantity": 40, "price": "0.001"}],
            max_uses=4,
        )
        assert entitlement.id is not None and entitlement.remaining_balance == str(40_000_000)
        listed = sdk.entitlements_v0.list_active(customer_id=customer)
        assert entitlement.id in [e.id for e in listed.data or []]
        assert ok(http.get(f"/v0/customers/{customer}"))["wallets"][0]["reservedBalance"] == "0.04"

        def report(metric_id: str, quantity: int, **extra: Any) -> models.UsageEvent:
            return sdk.usage_events.create(
                customer_id=customer, merchant_id=merchant, idempotency_key=str(uuid4()),
                timestamp=datetime.now(UTC),
                properties=[{"billable_metric_id": metric_id, "quantity": quantity}], **extra,
            )  # fmt: skip

        # Usage with the entitlement until the reservation runs out ...
        reserved = [report(basic, 10, entitlement_id=entitlement.id) for _ in range(4)]
        assert all(e.subscription_id == sub.id for e in reserved)
        with pytest.raises(errors.PaygenticError) as refused:
            report(basic, 10, entitlement_id=entitlement.id)
        assert refused.value.status_code == 422
        assert entitlement.id not in [
            e.id for e in sdk.entitlements_v0.list_active(customer_id=customer).data or []
        ]
        # ... then against the wallet.
        key = str(uuid4())
        premium_event = sdk.usage_events.create(
            customer_id=customer, merchant_id=merchant, idempotency_key=key, timestamp=datetime.now(UTC),
            properties=[{"billable_metric_id": premium, "quantity": 4}],
        )  # fmt: skip
        duplicate = sdk.usage_events.create(
            customer_id=customer, merchant_id=merchant, idempotency_key=key, timestamp=datetime.now(UTC),
            properties=[{"billable_metric_id": premium, "quantity": 4}],
        )  # fmt: skip
        assert duplicate.id == premium_event.id  # the same event, debited once
        seconds_event = report(seconds, 300)

        # One refund, and one dispute the merchant accepts (it refunds the event through the same path).
        refunded = sdk.usage_events.refund(id=premium_event.id, reason="Customer request")
        assert refunded.id == premium_event.id
        dispute = sdk.disputes.create(
            usage_event_id=seconds_event.id, message="The job failed but was charged"
        )
        with pytest.raises(errors.PaygenticError) as twice:
            sdk.disputes.create(usage_event_id=seconds_event.id, message="Disputing it once more")
        assert twice.value.status_code == 409
        ok(http.patch(f"/v0/disputes/{dispute.id}", json={"status": "accepted"}))

        # $20 prefund − 4 × $0.01 from the reservation − $0.02 − $0.03, both given back: $19.96.
        wallet = ok(http.get(f"/v0/customers/{customer}"))["wallets"]
        assert wallet == [
            {"walletId": active["walletId"], "currency": "USD", "balance": "19.96", "reservedBalance": "0.00"}
        ]
        got = ok(http.get(f"/v0/subscriptions/{sub.id}"))
        assert (got["walletBalance"], got["reservedBalance"]) == ("19.96", "0.00")

        # The customer portal: balance and usage in Chromium.
        link = sdk.subscriptions.generate_portal_link(id=sub.id, expires_in="PT1H")
        page = browser.new_page()
        try:
            page.goto(link.url)
            page.wait_for_selector("[data-testid=track-spending]")
            assert page.inner_text("[data-testid=wallet-balance]") == "19.96 USD"
            assert page.inner_text("[data-testid=reserved-funds]") == "0.00 USD"
            charges = page.inner_text("[data-testid=usage-charges]")
            assert charges.count("Basic Submissions × 10") == 4 and "Reserved funds" in charges
            assert "Premium Submissions × 4" in charges and "Execution Time × 300" in charges
            assert charges.count("refunded") == 2
            assert "Top-up" in page.inner_text("[data-testid=wallet-activity]")
            assert "Usage this period" not in page.content()  # all instant: nothing accrues to an invoice
        finally:
            page.close()

        # Revenue, to the cent: the $5 setup fee (the top-up is the customer's money, not revenue) plus
        # $0.09 of instant usage, less the $0.05 refunded.
        now = datetime.now(UTC)
        revenue = sdk.revenue.get(
            start_time=now - timedelta(days=1), end_time=now + timedelta(days=1), merchant_id=merchant
        )
        assert Decimal(revenue.net_revenue) == Decimal("5.04")
        assert (revenue.invoices.paid.count, revenue.invoices.paid.amount) == (1, "25.00")
        raw = ok(
            http.get(
                "/v0/revenue",
                params={
                    "startTime": (now - timedelta(days=1)).isoformat(),
                    "endTime": (now + timedelta(days=1)).isoformat(),
                    "merchantId": merchant,
                },
            )
        )
        assert raw["walletFunding"]["amount"] == "20.00"
        assert (raw["instantUsage"]["amount"], raw["instantUsage"]["refundAmount"]) == ("0.09", "0.05")
        assert sum(Decimal(b["revenue"]) for b in raw["trend"]) == Decimal("5.04")
