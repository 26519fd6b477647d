"""A payer in a real browser: Playwright drives Debian's chromium (headless; Playwright downloads no browser)
through the hosted checkout and the customer portal, served over real HTTP by uvicorn, with the subscription
workflows running on a time-skipping Temporal test server.

Set ACCRUE_SCREENSHOT_DIR to keep a screenshot of each page."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import uvicorn
from playwright.async_api import async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from db.merchants import NewMerchant
from settings import Settings
from tests.conftest import free_port
from tests.workflows import conftest as workflow_tests
from worker import build_worker
from workflows.client import ensure_search_attributes

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class MerchantSite(BaseHTTPRequestHandler):
    """The merchant's own site, where the checkout sends the payer afterwards."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>Welcome</title><h1>Welcome aboard</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def merchant_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), MerchantSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(10)


@pytest.fixture
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=workflow_tests.test_server_path()
    )
    await ensure_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def accrue(
    time_skipping: WorkflowEnvironment, engine: AsyncEngine, settings: Settings
) -> AsyncIterator[str]:
    """The real app over HTTP, its Temporal client the test server's, with the production worker."""
    task_queue = f"browser-{uuid4()}"
    port = free_port()
    app = create_app(settings.model_copy(update={"task_queue": task_queue, "api_port": port}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "API server did not start"
        await asyncio.sleep(0.05)
    app.state.temporal = time_skipping.client  # after startup: the lifespan resets it
    try:
        async with build_worker(time_skipping.client, engine, task_queue):
            yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def setup_subscription(api: httpx.AsyncClient, merchant_id: str, success_url: str) -> dict[str, Any]:
    async def post(path: str, body: dict[str, Any]) -> Any:
        response = await api.post(path, json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    product = await post("/v0/products", {"merchantId": merchant_id, "name": "Inference", "description": "x"})
    fee = await post(
        "/v0/fees",
        {"merchantId": merchant_id, "productId": product["id"], "name": "Platform", "description": "x"},
    )
    price = await post(
        "/v0/prices",
        {
            "feeId": fee["id"],
            "paymentTerm": "in_advance",
            "billingCadence": "P1M",
            "invoiceDisplayName": "Platform fee",
            "properties": {"unitPrice": "49.00"},
        },
    )
    plan = await post(
        "/v0/plans",
        {
            "merchantId": merchant_id,
            "name": "Pro",
            "currency": "USD",
            "productId": product["id"],
            "prices": [price["id"]],
            "billingVersion": 1,
        },
    )
    return dict(
        await post(
            "/v0/subscriptions",
            {
                "name": "Acme - Pro",
                "planId": plan["id"],
                "customer": {
                    "name": "Acme",
                    "email": f"billing+{uuid4().hex[:8]}@acme.example",
                    "address": {"country": "US", "state": "TX", "zipCode": "78701"},
                },
                "startedAt": datetime.now(UTC).isoformat(),
                "redirectUrls": {"onSuccess": success_url, "onFailure": f"{success_url}-failed"},
            },
        )
    )


async def test_pay_the_checkout_then_open_the_portal_in_chromium(
    accrue: str, merchant: NewMerchant, merchant_site: str, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("ACCRUE_SCREENSHOT_DIR") or tmp_path)
    success_url = f"{merchant_site}/welcome"
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=accrue, headers=headers, timeout=30) as api:
        sub = await setup_subscription(api, merchant.merchant_id, success_url)
        assert sub["status"] == "pending_payment" and sub["payment"]["amount"] == "49.00"

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(sub["payment"]["checkoutUrl"])
                body = await page.inner_text("body")
                assert "SANDBOX" in body and "Platform fee" in body and "49.00 USD" in body
                await page.screenshot(path=str(shots / "accrue-checkout.png"), full_page=True)

                await page.get_by_role("button", name="Pay (test)").click()
                await page.wait_for_url(success_url)
                assert "Welcome aboard" in await page.inner_text("h1")

                got = (await api.get(f"/v0/subscriptions/{sub['id']}")).json()
                assert got["status"] == "active" and got["payment"]["status"] == "paid"

                link = (await api.post(f"/v0/subscriptions/{sub['id']}/portal", json={})).json()
                await page.goto(link["url"])
                body = await page.inner_text("body")
                assert sub["id"] in body
                invoice0 = (await api.get("/v2/invoices", params={"subscriptionId": sub["id"]})).json()
                number = next(i for i in invoice0["data"] if i["sequenceNumber"] == 0)["invoiceNumber"]
                row = await page.locator("tr", has_text=number).inner_text()
                assert "PAID" in row and "49.00 USD" in row, row
                await page.screenshot(path=str(shots / "accrue-portal.png"), full_page=True)
            finally:
                await browser.close()
