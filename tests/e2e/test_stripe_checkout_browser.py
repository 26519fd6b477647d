"""A payer pays Invoice 0 by card on the Stripe checkout page in a real browser: Playwright drives Debian's
chromium through Accrue's hosted page, served over real HTTP by uvicorn, which loads Stripe.js from the Stripe
fake (localstripe serves its own at /js.stripe.com/v3/), tokenizes the card there and has Accrue confirm the
PaymentIntent; localstripe then delivers its signed webhook to Accrue's real endpoint. The subscription's
workflow runs on a time-skipping Temporal test server with the production worker.

Set ACCRUE_SCREENSHOT_DIR to keep a screenshot of each page."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
import uvicorn
from playwright.async_api import Page, async_playwright
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from db.merchants import NewMerchant
from db.models import PaymentSession, StripeEvent
from db.session import session_factory
from settings import Settings
from tests.conftest import free_port
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, setup_subscription
from tests.e2e.test_browser import merchant_site as merchant_site
from tests.e2e.test_browser import time_skipping as time_skipping
from tests.stripe_fake import new_key
from worker import build_worker

DECLINED, GOOD = "4000000000000002", "4242424242424242"


@pytest.fixture
def payments(settings: Settings, stripe_fake: str) -> Settings:
    key = new_key()
    return settings.model_copy(
        update={
            "payment_provider": "stripe",
            "stripe_secret_key": SecretStr(key),
            "stripe_publishable_key": "pk_" + key[3:],
            "stripe_webhook_secret": SecretStr(f"whsec_{uuid4().hex}"),
            "stripe_api_base": stripe_fake,
            "stripe_js_url": f"{stripe_fake}/js.stripe.com/v3/",
        }
    )


@pytest.fixture
async def accrue(
    time_skipping: WorkflowEnvironment,
    engine: AsyncEngine,
    payments: Settings,
) -> AsyncIterator[str]:
    """The real app over HTTP on the Stripe provider, its webhook endpoint registered at the fake."""
    task_queue = f"stripe-browser-{uuid4()}"
    port = free_port()
    settings = payments.model_copy(update={"task_queue": task_queue, "api_port": port})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "API server did not start"
        await asyncio.sleep(0.05)
    app.state.temporal = time_skipping.client  # after startup: the lifespan resets it
    base = f"http://127.0.0.1:{port}"
    hook = uuid4().hex
    async with httpx.AsyncClient() as http:
        registered = await http.post(
            f"{payments.stripe_api_base}/_config/webhooks/{hook}",
            data={
                "url": f"{base}/v0/stripe/webhooks",
                "secret": payments.stripe_webhook_secret.get_secret_value(),
                "events[0]": "payment_intent.succeeded",
                "events[1]": "payment_intent.payment_failed",
            },
        )
        assert registered.status_code == 200, registered.text
    try:
        async with build_worker(
            time_skipping.client, engine, task_queue, base_url=base, payment_settings=settings
        ):
            yield base
    finally:
        server.should_exit = True
        thread.join(10)


async def enter_card(page: Page, number: str) -> None:
    """localstripe's card Element: one input per field, named by placeholder."""
    element = page.get_by_test_id("card-element")
    for field, value in (("number", number), ("exp_month", "12"), ("exp_year", "30"), ("cvc", "123")):
        box = element.locator(f'input[placeholder="{field}"]')
        await box.fill("")
        await box.type(value)
    await element.locator('input[placeholder="postal_code"]').fill("78701")


async def test_pay_invoice0_by_card_on_the_stripe_checkout_in_chromium(
    accrue: str,
    merchant: NewMerchant,
    merchant_site: str,
    payments: Settings,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    shots = Path(os.environ.get("ACCRUE_SCREENSHOT_DIR") or tmp_path)
    success_url = f"{merchant_site}/welcome"
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=accrue, headers=headers, timeout=30) as api:
        sub = await setup_subscription(api, merchant.merchant_id, success_url)
        assert sub["status"] == "pending_payment" and sub["payment"]["amount"] == "49.00"
        # No failure URL: a declined card stays on the page.
        session_id = sub["payment"]["paymentSessionId"]

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(sub["payment"]["checkoutUrl"])
                body = await page.inner_text("body")
                assert "TEST MODE" in body and "Platform fee" in body and "49.00 USD" in body
                assert "Pay (test)" not in body
                await page.get_by_test_id("card-element").locator('input[placeholder="number"]').wait_for()
                await page.screenshot(path=str(shots / "accrue-stripe-checkout.png"), full_page=True)

                # The redirect URLs of setup_subscription include onFailure: a declined card goes there.
                await enter_card(page, DECLINED)
                await page.get_by_test_id("pay").click()
                await page.wait_for_url(f"{success_url}-failed")
                got = (await api.get(f"/v0/subscriptions/{sub['id']}")).json()
                assert got["status"] == "pending_payment"

                await page.goto(sub["payment"]["checkoutUrl"])
                assert "was declined" in await page.inner_text("body")
                await enter_card(page, GOOD)
                await page.get_by_test_id("pay").click()
                await page.wait_for_url(success_url)
                assert "Welcome aboard" in await page.inner_text("h1")
                assert errors == []

                got = (await api.get(f"/v0/subscriptions/{sub['id']}")).json()
                assert got["status"] == "active" and got["payment"]["status"] == "paid"
                await page.goto(sub["payment"]["checkoutUrl"])
                assert "Payment received" in await page.inner_text("body")
                await page.screenshot(path=str(shots / "accrue-stripe-paid.png"), full_page=True)
            finally:
                await browser.close()

    # localstripe's own signed webhook reached the endpoint and verified (a second, deduped confirmation).
    async with session_factory(engine)() as session:
        row = await session.get_one(PaymentSession, session_id)
    assert row.status == "completed" and row.provider_reference is not None
    deadline = time.monotonic() + 15
    while True:
        async with session_factory(engine)() as session:
            found = await session.scalar(
                select(StripeEvent.type).where(
                    StripeEvent.object_id == row.provider_reference,
                    StripeEvent.type == "payment_intent.succeeded",
                )
            )
        if found is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert found == "payment_intent.succeeded"
