"""A payer completes a one-off payment (POST /v0/payments) on the sandbox provider's hosted page in a real
browser (Debian's chromium through Playwright), the API over real HTTP and the payment workflow on a
time-skipping Temporal test server: a declined try lands on failureRedirectUrl and leaves the link payable,
the paid one on successRedirectUrl; the payment is completed and GET /v0/revenue counts it.

Set ACCRUE_SCREENSHOT_DIR to keep a screenshot of each page."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

from db.merchants import NewMerchant
from tests.e2e.test_browser import (  # noqa: F401  (fixtures)
    CHROMIUM,
    CHROMIUM_ARGS,
    accrue,
    merchant_site,
    time_skipping,
)


async def test_complete_a_one_off_payment_in_chromium(
    accrue: str,  # noqa: F811
    merchant: NewMerchant,
    merchant_site: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    shots = Path(os.environ.get("ACCRUE_SCREENSHOT_DIR") or tmp_path)
    success_url, failure_url = f"{merchant_site}/thanks", f"{merchant_site}/sorry"
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=accrue, headers=headers, timeout=30) as api:
        response = await api.post(
            "/v0/payments",
            json={
                "amount": "149.00",
                "currency": "USD",
                "reference": "Order 1042",
                "lineItems": [
                    {"description": "Onboarding workshop", "amount": "99.00"},
                    {"description": "Seat", "amount": "25.00", "quantity": 2},
                ],
                "successRedirectUrl": success_url,
                "failureRedirectUrl": failure_url,
                "idempotencyKey": "order-1042",
            },
        )
        assert response.status_code == 201, response.text
        payment = response.json()
        started = datetime.now(UTC)

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(payment["paymentUrl"])
                body = await page.inner_text("body")
                assert "SANDBOX" in body and "Onboarding workshop" in body and "Order 1042" in body
                assert await page.get_by_test_id("amount").inner_text() == "149.00 USD"
                assert "50.00 USD" in await page.locator("tr", has_text="Seat").inner_text()
                await page.screenshot(path=str(shots / "accrue-one-off-payment.png"), full_page=True)

                await page.get_by_role("button", name="Decline (test)").click()
                await page.wait_for_url(failure_url)
                got = (await api.get(f"/v0/payments/{payment['id']}")).json()
                assert got["status"] == "pending"

                await page.goto(payment["paymentUrl"])
                assert "was declined" in await page.inner_text("body")
                await page.get_by_role("button", name="Pay (test)").click()
                await page.wait_for_url(success_url)
                assert "Welcome aboard" in await page.inner_text("h1")

                await page.goto(payment["paymentUrl"])
                assert "Payment received" in await page.inner_text("body")
                await page.screenshot(path=str(shots / "accrue-one-off-paid.png"), full_page=True)
            finally:
                await browser.close()

        got = (await api.get(f"/v0/payments/{payment['id']}")).json()
        assert got["status"] == "completed"
        revenue = (
            await api.get(
                "/v0/revenue",
                params={
                    "merchantId": merchant.merchant_id,
                    "startTime": (started - timedelta(days=1)).isoformat(),
                    "endTime": (started + timedelta(days=1)).isoformat(),
                },
            )
        ).json()
        assert revenue["netRevenue"] == "149.00"
        assert (revenue["payments"]["completedCount"], revenue["payments"]["completedAmount"]) == (
            1,
            "149.00",
        )
        assert sum(Decimal(b["completedPayments"]) for b in revenue["trend"]) == Decimal("149.00")
