"""A payer completes a one-off payment by card on the Stripe provider's hosted page in a real browser:
Debian's chromium through Playwright, Stripe.js from the Stripe fake (localstripe), Accrue confirming the
PaymentIntent on the server; a declined card goes to failureRedirectUrl and leaves the payment pending, a
good one to successRedirectUrl; the payment is completed once (payment.completed.v0), and localstripe's
signed webhook reaches the real endpoint, deduped into the same outcome.

Set ACCRUE_SCREENSHOT_DIR to keep a screenshot of each page."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
from playwright.async_api import async_playwright
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import OutboxEvent, Payment, StripeEvent
from db.session import session_factory
from settings import Settings
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_browser import merchant_site as merchant_site
from tests.e2e.test_browser import time_skipping as time_skipping
from tests.e2e.test_stripe_checkout_browser import DECLINED, GOOD, enter_card
from tests.e2e.test_stripe_checkout_browser import accrue as accrue
from tests.e2e.test_stripe_checkout_browser import payments as payments


async def test_complete_a_one_off_payment_by_card_in_chromium(
    accrue: str,
    merchant: NewMerchant,
    merchant_site: str,
    payments: Settings,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    shots = Path(os.environ.get("ACCRUE_SCREENSHOT_DIR") or tmp_path)
    success_url, failure_url = f"{merchant_site}/thanks", f"{merchant_site}/sorry"
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=accrue, headers=headers, timeout=30) as api:
        response = await api.post(
            "/v0/payments",
            json={
                "amount": "75.00",
                "currency": "USD",
                "reference": "Order 2001",
                "lineItems": [{"description": "Consulting hour", "amount": "75.00"}],
                "successRedirectUrl": success_url,
                "failureRedirectUrl": failure_url,
            },
        )
        assert response.status_code == 201, response.text
        payment = response.json()

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(payment["paymentUrl"])
                body = await page.inner_text("body")
                assert "TEST MODE" in body and "Consulting hour" in body and "Order 2001" in body
                assert "Pay (test)" not in body
                assert await page.get_by_test_id("amount").inner_text() == "75.00 USD"
                await page.get_by_test_id("card-element").locator('input[placeholder="number"]').wait_for()
                await page.screenshot(path=str(shots / "accrue-one-off-stripe.png"), full_page=True)

                await enter_card(page, DECLINED)
                await page.get_by_test_id("pay").click()
                await page.wait_for_url(failure_url)
                assert (await api.get(f"/v0/payments/{payment['id']}")).json()["status"] == "pending"

                await page.goto(payment["paymentUrl"])
                assert "was declined" in await page.inner_text("body")
                await enter_card(page, GOOD)
                await page.get_by_test_id("pay").click()
                await page.wait_for_url(success_url)
                assert "Welcome aboard" in await page.inner_text("h1")
                assert errors == []

                await page.goto(payment["paymentUrl"])
                assert "Payment received" in await page.inner_text("body")
            finally:
                await browser.close()
        got = (await api.get(f"/v0/payments/{payment['id']}")).json()
        assert got["status"] == "completed"

    async with session_factory(engine)() as session:
        row = await session.get_one(Payment, payment["id"])
    assert row.provider == "stripe" and row.provider_reference is not None
    deadline = time.monotonic() + 15
    while True:
        async with session_factory(engine)() as session:
            found = await session.scalar(
                select(StripeEvent.owner_kind).where(
                    StripeEvent.object_id == row.provider_reference,
                    StripeEvent.type == "payment_intent.succeeded",
                )
            )
        if found is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert found == "payment"
    await asyncio.sleep(0.5)  # the webhook's signal, if it changed anything, would be recorded by now
    async with session_factory(engine)() as session:
        sent = list(
            await session.scalars(
                select(OutboxEvent.payload).where(
                    OutboxEvent.merchant_id == merchant.merchant_id,
                    OutboxEvent.event_type == "payment.completed.v0",
                )
            )
        )
    assert [p["id"] for p in sent] == [payment["id"]]
