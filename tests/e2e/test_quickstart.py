"""The quickstart (seed 002) end to end through paygentic-sdk 0.1.34 against `accrue dev`, on a test clock:
product, metric, prices, plan (billingVersion 1), customer, subscription, Invoice 0 paid, meter events,
one month plus the grace window, and an ISSUED invoice whose lines and totals are exact."""

from __future__ import annotations

import signal
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
from paygentic_sdk import Paygentic, models

from accrue.embedded_db import postmaster_pid
from tests.conftest import free_port
from tests.e2e.test_dev_stack import Dev, Ports, Ready

TIMEOUT_MS = 120_000  # advancing a clock waits for every bound subscription to catch up
GRACE = timedelta(hours=24)  # the dev stack's default invoice grace period
TOKENS = (120_000, 1_000_000, 114_567)  # 1,234,567 tokens × $0.00002 = $24.69134 → $24.69


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[tuple[str, Ready]]:
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
            except Exception:
                dev.kill()
        pid = postmaster_pid(data_dir / "postgres")
        if pid is not None:
            psutil.Process(pid).send_signal(signal.SIGINT)


def one_month_later(at: datetime) -> datetime:
    """Calendar month with month-end clamping, written out here so the test does not trust domain/."""
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    for day in range(at.day, 0, -1):
        try:
            return at.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def wait_for(check: Any, within: float = 30) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_quickstart_on_a_test_clock(dev_stack: tuple[str, Ready]) -> None:
    base, ready = dev_stack
    merchant = ready.merchant_id
    with (
        Paygentic(server_url=base, bearer_auth=ready.api_key, timeout_ms=TIMEOUT_MS) as sdk,
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ready.api_key}"}, timeout=60) as http,
    ):
        # 1. Product.
        product = sdk.products.create(
            merchant_id=merchant, name="LLM Inference Engine", description="Hosted LLM inference"
        )
        # 2. Pricing: a metric summing $.tokens, a $49 monthly platform fee in advance, tokens in arrears.
        metric = sdk.billable_metrics.create(
            merchant_id=merchant, product_id=product.id, name="Input tokens", description="Prompt tokens",
            unit="tokens", aggregation="SUM", event_type="llm.tokens", value_property="$.tokens",
        )  # fmt: skip
        fee = sdk.fees.create(
            merchant_id=merchant, product_id=product.id, name="Platform fee", description="Monthly access"
        )
        platform = sdk.prices.create(
            fee_id=fee.id, model="standard", payment_term="in_advance", billing_cadence="P1M",
            invoice_display_name="Platform fee", properties={"unit_price": "49.00"},
        )  # fmt: skip
        tokens = sdk.prices.create(
            billable_metric_id=metric.id, model="standard", payment_term="in_arrears",
            invoice_display_name="Input tokens", properties={"unit_price": "0.00002"},
        )  # fmt: skip
        plan = sdk.plans.create(
            merchant_id=merchant, product_id=product.id, name="Pro", currency="USD",
            billing_interval="monthly", billing_version=1, prices=[platform.id, tokens.id],
        )  # fmt: skip
        assert plan.billing_version == 1

        # 3. Customer, test clock and subscription: Invoice 0 gates activation.
        customer = sdk.customers.create(
            merchant_id=merchant,
            consumer={
                "name": "Acme Corp",
                "email": f"billing+{uuid4().hex[:8]}@acme.example",
                "address": {"country": "US", "state": "TX", "zip_code": "78701"},
            },
        )
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        clock = sdk.test_clocks.create(current_time=start, name="quickstart")
        sub = sdk.subscriptions.create(
            name="Acme - LLM Inference",
            plan_id=plan.id,
            customer_id=customer.customer_id,
            started_at=start,
            test_clock_id=clock.id,
        )
        assert sub.status == "pending_payment" and sub.test_clock_id == clock.id
        payment = sub.payment
        assert isinstance(payment, models.PaymentPending), payment
        assert (payment.amount, payment.breakdown.upfront_charges) == ("49.00", "49.00")
        checkout = httpx.get(payment.checkout_url, timeout=30)
        assert checkout.status_code == 200 and "49.00" in checkout.text

        # Pay Invoice 0 as the checkout page's button does (sandbox provider).
        paid = http.post(f"/v0/paymentSessions/{payment.payment_session_id}/complete")
        assert paid.status_code == 200, paid.text
        assert wait_for(lambda: sdk.subscriptions.get(id=sub.id).status == "active")
        invoice0 = sdk.invoices_v2.get(id=payment.invoice_id)
        assert (invoice0.sequence_number, invoice0.status, invoice0.grand_total) == (0, "PAID", "49.00")

        # 4. Usage: meter events inside period 1, one of them sent twice (stored once).
        for i, count in enumerate(TOKENS):
            at = start + timedelta(days=i + 1, hours=3)
            for _ in range(2 if i == 0 else 1):
                sdk.events.ingest(
                    type_="llm.tokens", source="quickstart", subject=customer.customer_id,
                    data={"tokens": count, "model": "large"}, timestamp=at, idempotency_key=f"quickstart-{i}",
                )  # fmt: skip

        # One month: period 1 ends and its invoice is CLOSING; the grace window (PT24H) then closes it.
        sdk.test_clocks.advance(id=clock.id, request_body={"advance_by": "P1M"})
        sdk.test_clocks.advance(id=clock.id, request_body={"advance_by": "PT24H"})

        invoices = sdk.invoices_v2.list(request={"subscription_id": sub.id, "limit": 10})
        by_sequence = {i.sequence_number: i for i in invoices.data}
        assert sorted(by_sequence) == [0, 1, 2]
        assert (by_sequence[0].status, by_sequence[2].status) == ("PAID", "ACTIVE")
        first = sdk.invoices_v2.get(id=by_sequence[1].id, expand="lineItems")

    end = one_month_later(start)
    assert first.status == "ISSUED" and first.currency == "USD"
    assert (first.period_start, first.period_end) == (start, end)
    assert first.grace_period_end == end + GRACE
    quantity = sum(TOKENS)
    token_total = (Decimal(quantity) * Decimal("0.00002")).quantize(Decimal("0.01"))
    assert token_total == Decimal("24.69")
    assert first.line_items is not None
    lines = sorted(
        (
            line.invoice_display_name,
            Decimal(str(line.quantity)),
            Decimal(line.unit_price),
            line.total_price,
            line.total_tax,
            line.total_amount,
        )
        for line in first.line_items.line_items
    )
    assert lines == [
        ("Input tokens", Decimal(quantity), Decimal("0.00002"), "24.69", "0.00", "24.69"),
        ("Platform fee", Decimal(1), Decimal("49.00"), "49.00", "0.00", "49.00"),  # the next month's fee
    ]
    assert (first.subtotal, first.total_tax, first.grand_total) == ("73.69", "0.00", "73.69")
    assert (first.paid_amount, first.unpaid_amount, first.item_count) == ("0.00", "73.69", 2)
