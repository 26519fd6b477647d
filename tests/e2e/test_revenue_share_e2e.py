"""Seed 000 (revenue share with Stripe) end to end through paygentic-sdk 0.1.34 against `accrue dev`, with
the Stripe fake (tests/stripe_fake.py, through the real `stripe` library) as the customer's Stripe account:
the product, the `revenue_usd` metric (USD), a 5 % percentage plan, a manual source, a webhook endpoint
whose receiver verifies every message with the svix and standardwebhooks libraries, a signup link (on a
test clock, so the test moves time) opened in Chromium, where the customer subscribes and connects their
Stripe key in the portal's Sources section, invoices paid in the fake, the clock advanced so the
installation polls, the imported events pending, one approved, one rejected, the rest bulk-approved; then
the clock past the period's end and grace window: the period invoice bills exactly 5 % of the approved
revenue, and the receiver got source.activated.v0 and the source_event pending, processed and rejected
messages, each `data` what the API shows."""

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
from paygentic_sdk import Paygentic, models
from playwright.sync_api import sync_playwright

from accrue.embedded_db import postmaster_pid
from domain.ids import has_prefix
from tests.conftest import free_port
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_dev_stack import Dev, Ports, Ready
from tests.e2e.test_quickstart import TIMEOUT_MS, one_month_later
from tests.stripe_fake import new_key, pay_invoices
from tests.webhook_receiver import WebhookReceiver

SOURCE_TYPES = [
    "source.activated.v0",
    "source.activation_failed.v0",
    "source.disconnected.v0",
    "source_event.pending.v0",
    "source_event.processed.v0",
    "source_event.failed.v0",
    "source_event.rejected.v0",
]
# The customer's paid Stripe invoices, in cents: one approved alone, one rejected, the rest bulk-approved.
BIG, SMALL, REJECTED, ODD = 125_000, 48_000, 9_900, 31_420


@pytest.fixture
def dev_stack(tmp_path: Path, stripe_fake: str) -> Iterator[tuple[str, Ready]]:
    """`accrue dev` as test_quickstart starts it, with every Stripe call going to the Stripe fake."""
    data_dir = tmp_path / "accrue"
    ports = Ports(api=free_port(), temporal=free_port(), ui=free_port())
    dev = Dev(data_dir, ports, env={"ACCRUE_STRIPE_API_BASE": stripe_fake})
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


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def wait_until(check: Any, within: float = 30) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


def sign_up_and_connect(url: str, name: str, stripe_key: str) -> str:
    """The customer's side in Chromium: the signup page, then the portal's Sources section; returns the
    source's status as the portal shows it after the connect."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            page.fill("#name", name)
            page.fill("#country", "US")
            page.fill("#zipCode", "78701")
            page.click("button:has-text('Subscribe')")
            page.wait_for_url("**/portal/**", timeout=30_000)
            page.fill("input[name=stripeSecretKey]", stripe_key)
            page.click("button:has-text('Connect Stripe')")
            page.wait_for_selector("[data-testid=source-status] >> text=/active/i", timeout=30_000)
            return page.inner_text("[data-testid=source-status]")
        finally:
            browser.close()


def test_revenue_share_seed_000(dev_stack: tuple[str, Ready], stripe_fake: str) -> None:
    base, ready = dev_stack
    merchant = ready.merchant_id
    with (
        WebhookReceiver() as receiver,
        Paygentic(server_url=base, bearer_auth=ready.api_key, timeout_ms=TIMEOUT_MS) as sdk,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {ready.api_key}"}, timeout=120
        ) as http,
    ):
        # Webhooks: one endpoint for the source and source-event types, verified with its own secret.
        ok(http.post("/v0/webhooks", json={}), 201)
        endpoint = ok(
            http.post(
                "/v0/webhooks/endpoints", json={"url": receiver.url("/hook"), "filterTypes": SOURCE_TYPES}
            ),
            201,
        )
        receiver.configure(
            "/hook", secrets=[ok(http.get(f"/v0/webhooks/endpoints/{endpoint['id']}/secret"))["key"]]
        )

        # The merchant's product, the revenue metric in USD and the 5 % postpaid plan.
        product = sdk.products.create(
            merchant_id=merchant,
            name="ProspectAI Agent",
            description="AI-powered prospect research that charges 5% of generated revenue",
        )
        revenue_usd = sdk.billable_metrics.create(
            merchant_id=merchant, product_id=product.id, name="revenue_usd",
            description="Total revenue in USD from Stripe", unit="USD", aggregation="SUM",
            event_type="stripe.revenue", value_property="$.amount",
        )  # fmt: skip
        share = sdk.prices.create(
            billable_metric_id=revenue_usd.id,
            model="percentage",
            payment_term="in_arrears",
            invoice_display_name="Revenue share",
            # 5 %, at most $10,000 of share per Stripe invoice
            properties=models.PriceProperties4(percentage="0.05", min_charge="0.00", max_charge="10000.00"),
        )
        plan = sdk.plans.create(
            merchant_id=merchant, product_id=product.id, name="ProspectAI Revenue Share", currency="USD",
            billing_interval="monthly", billing_version=1, prices=[share.id],
        )  # fmt: skip

        # The Stripe revenue source, manual: every invoice waits for review.
        source = sdk.sources.create(
            plan_id=plan.id, type_="stripe_revenue", name="Customer Stripe Revenue", processing_mode="manual",
            metadata={"billableMetricMapping": {"revenue": revenue_usd.id}},
        )  # fmt: skip
        assert (source.processing_mode, source.enabled, source.plan_id) == ("manual", True, plan.id)

        # The customer and their subscription, on a test clock so the test moves time.
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        clock = sdk.test_clocks.create(current_time=start, name="revenue share")
        email = f"billing+{uuid4().hex[:8]}@acme.example"
        link = ok(
            http.post(
                f"/v0/plans/{plan.id}/authorizationLinks", json={"email": email, "testClockId": clock.id}
            ),
            201,
        )
        assert link["status"] == "pending" and link["subscriptionId"] is None

        # The customer opens the signup link, subscribes, and connects their Stripe test key in the portal.
        key = new_key()
        status_text = sign_up_and_connect(link["url"], "Acme Corp", key)
        assert "active" in status_text.lower(), status_text
        signed_up = ok(http.get(f"/v0/plans/{plan.id}/authorizationLinks/{link['id']}"))
        assert signed_up["status"] == "completed"
        sub = sdk.subscriptions.get(id=signed_up["subscriptionId"])
        assert (sub.status, sub.test_clock_id, sub.plan_id) == (
            "active",
            clock.id,
            plan.id,
        )  # Invoice 0 is 0.00
        listed = ok(http.get(f"/v0/sources/{source.id}/installations", params={"subscriptionId": sub.id}))
        [installation] = listed["data"]
        assert has_prefix(installation["id"], "source_installation")
        assert (installation["status"], installation["keyMode"], installation["keyLast4"]) == (
            "active",
            "test",
            key[-4:],
        )
        assert installation["customerId"] == signed_up["customerId"] and key not in str(listed)

        # Revenue: four invoices paid in the customer's Stripe account after the connect.
        paid = pay_invoices(
            stripe_fake, key, [BIG, SMALL, REJECTED, ODD], email="ap@acme.example", name="Acme"
        )
        by_cents = dict(zip([BIG, SMALL, REJECTED, ODD], paid, strict=True))

        # The installation polls on the clock (every 5 minutes by default): past the next poll time, the
        # four are pending.
        sdk.test_clocks.advance(id=clock.id, request_body={"advance_by": "PT10M"})
        pending = sdk.sources.events.list(id=source.id, status="pending", limit=100).data
        assert sorted(e.external_event_id for e in pending) == sorted(paid)
        event = {e.external_event_id: e for e in pending}
        ids = {cents: event[invoice].id for cents, invoice in by_cents.items()}
        synced = ok(http.get(f"/v0/sources/{source.id}/installations/{installation['id']}"))
        assert synced["status"] == "active" and synced["lastSyncAt"] is not None

        # Review: one approved, one rejected, the rest in one bulk approval (the rejected one fails there).
        approved = sdk.sources.events.approve(id=source.id, event_id=ids[BIG])
        assert approved.status == "processed" and len(approved.usage_event_ids or []) == 1
        assert approved.processed_by not in (None, "system")
        rejected = sdk.sources.events.reject(id=source.id, event_id=ids[REJECTED])
        assert rejected.status == "rejected" and not rejected.usage_event_ids
        bulk = sdk.sources.events.bulk_approve(id=source.id, event_ids=[ids[SMALL], ids[ODD], ids[REJECTED]])
        assert (bulk.processed, bulk.failed) == (2, 1)
        assert bulk.details is not None
        assert sorted(bulk.details.processed or []) == sorted([ids[SMALL], ids[ODD]])
        assert [f.id for f in bulk.details.failed or []] == [ids[REJECTED]]
        assert sdk.sources.events.list(id=source.id, status="pending").data == []
        processed = sdk.sources.events.list(id=source.id, status="processed", limit=100).data
        assert sorted(e.id for e in processed) == sorted([ids[BIG], ids[SMALL], ids[ODD]])

        # Past the period's end and its grace window: period 1's invoice is issued.
        sdk.test_clocks.advance(id=clock.id, request_body={"advance_by": "P1M"})
        sdk.test_clocks.advance(id=clock.id, request_body={"advance_by": "PT24H"})
        invoices = sdk.invoices_v2.list(request={"subscription_id": sub.id, "limit": 10}).data
        [period1] = [i for i in invoices if i.sequence_number == 1]
        first = sdk.invoices_v2.get(id=period1.id, expand="lineItems")

        def arrived() -> bool:
            got = {r.payload["eventType"] for r in receiver.delivered("/hook")}
            return {"source.activated.v0", "source_event.rejected.v0"} <= got and len(
                [
                    r
                    for r in receiver.delivered("/hook")
                    if r.payload["eventType"] == "source_event.processed.v0"
                ]
            ) == 3

        assert wait_until(arrived), [r.payload["eventType"] for r in receiver.received("/hook")]
        final_events = {e.id: e for e in sdk.sources.events.list(id=source.id, limit=100).data}

    # The period invoice bills exactly 5 % of the approved revenue, once.
    approved_revenue = sum(Decimal(c) / 100 for c in (BIG, SMALL, ODD))
    assert approved_revenue == Decimal("2044.20")
    end = one_month_later(start)
    assert first.status == "ISSUED" and (first.period_start, first.period_end) == (start, end)
    assert first.line_items is not None
    [line] = first.line_items.line_items
    assert line.invoice_display_name == "Revenue share"
    assert (Decimal(str(line.quantity)), Decimal(line.unit_price)) == (approved_revenue, Decimal("0.05"))
    assert Decimal(line.total_price) == approved_revenue * Decimal("0.05") == Decimal("102.21")
    assert Decimal(first.grand_total) == Decimal("102.21")

    # The receiver got every lifecycle message, verified by both libraries, each once, with the API's data.
    delivered = receiver.delivered("/hook")
    assert (
        delivered
        and all(r.verified for r in receiver.received("/hook"))
        and receiver.duplicates("/hook") == {}
    )

    def data(event_type: str) -> list[dict[str, Any]]:
        return [r.payload["data"] for r in delivered if r.payload["eventType"] == event_type]

    [activated] = data("source.activated.v0")
    # As the installation was at activation: its first poll (right after) set lastSyncAt later.
    assert activated["status"] == "active" and activated["lastSyncAt"] is None
    moved = ("lastSyncAt", "updatedAt")
    assert {k: v for k, v in activated.items() if k not in moved} == {
        k: v for k, v in installation.items() if k not in moved
    }
    assert sorted(d["id"] for d in data("source_event.pending.v0")) == sorted(ids.values())
    assert all(d["status"] == "pending" for d in data("source_event.pending.v0"))
    assert sorted(d["id"] for d in data("source_event.processed.v0")) == sorted(
        [ids[BIG], ids[SMALL], ids[ODD]]
    )
    [rejected_data] = data("source_event.rejected.v0")
    assert rejected_data["id"] == ids[REJECTED] and rejected_data["status"] == "rejected"
    for d in data("source_event.processed.v0"):
        shown = final_events[d["id"]]
        assert (d["status"], d["usageEventIds"], d["processedBy"]) == (
            "processed",
            shown.usage_event_ids,
            shown.processed_by,
        )
    assert data("source.activation_failed.v0") == data("source_event.failed.v0") == []
