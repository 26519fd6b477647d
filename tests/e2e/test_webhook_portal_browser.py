"""A merchant in a real browser: Playwright drives Debian's chromium (headless) through the hosted webhook
portal that `GET /v0/webhooks/portal` links to, served over real HTTP by uvicorn, with the production worker
delivering on the session's Temporal dev server to a real receiver (tests/webhook_receiver.py) that verifies
every request with the svix and standardwebhooks libraries.

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
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from db.merchants import NewMerchant
from domain.webhook_events import EVENT_TYPES
from settings import Settings
from tests.conftest import free_port
from tests.e2e.dev_server import DevServer
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.webhook_receiver import WebhookReceiver
from worker import build_worker
from workflows.client import connect, ensure_search_attributes


@pytest.fixture
async def accrue(
    temporal_dev_server: DevServer, engine: AsyncEngine, settings: Settings
) -> AsyncIterator[str]:
    """The real app over HTTP and the production worker, on the dev server, on a task queue of their own."""
    task_queue = f"webhook-portal-{uuid4()}"
    port = free_port()
    overrides = {"task_queue": task_queue, "api_port": port, "temporal_address": temporal_dev_server.address}
    app = create_app(settings.model_copy(update=overrides))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "API server did not start"
        await asyncio.sleep(0.05)
    client = await connect(temporal_dev_server.address, temporal_dev_server.namespace)
    await ensure_search_attributes(client)
    try:
        async with build_worker(
            client, engine, task_queue, secret_key=settings.secret_key.get_secret_value()
        ):
            yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def reload_until(page: Page, selector: str, text: str, within: float = 30) -> str:
    """The selector's text once it shows `text`: the log shows an attempt once the worker recorded it."""
    deadline = time.monotonic() + within
    while True:
        shown = await page.inner_text(selector)
        if text in shown:
            return shown
        assert time.monotonic() < deadline, f"{text!r} never showed in {selector}: {shown}"
        await asyncio.sleep(0.3)
        await page.reload()


async def test_manage_an_endpoint_in_chromium_and_receive_its_test_event(
    accrue: str, merchant: NewMerchant, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("ACCRUE_SCREENSHOT_DIR") or tmp_path)
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    with WebhookReceiver() as receiver:
        async with httpx.AsyncClient(base_url=accrue, headers=headers, timeout=30) as api:
            assert (await api.post("/v0/webhooks")).status_code == 201
            link = (await api.get("/v0/webhooks/portal")).json()
            assert link["url"].startswith(f"{accrue}/webhooks/portal/")

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    await page.goto(link["url"])
                    assert "No endpoints yet" in await page.inner_text("body")

                    # Add an endpoint at the receiver, for invoices only.
                    await page.fill("#url", receiver.url("/hook"))
                    await page.fill("#description", "Billing receiver")
                    await page.check("input[name=filter][value='invoice.paid.v0']")
                    await page.check("input[name=filter][value='invoice.issued.v0']")
                    await page.get_by_role("button", name="Add endpoint").click()
                    await page.wait_for_url("**/endpoints/ep_*")
                    assert "Endpoint added" in await page.inner_text("[data-testid=notice]")
                    endpoint_id = await page.inner_text("[data-testid=endpoint-id]")
                    got = (await api.get(f"/v0/webhooks/endpoints/{endpoint_id}")).json()
                    assert got["url"] == receiver.url("/hook") and got["description"] == "Billing receiver"
                    assert sorted(got["filterTypes"]) == ["invoice.issued.v0", "invoice.paid.v0"]

                    # The secret, revealed on request, is what the API says; the receiver verifies with it.
                    await page.get_by_role("button", name="Reveal secret").click()
                    secret = await page.inner_text("[data-testid=secret]")
                    api_secret = (await api.get(f"/v0/webhooks/endpoints/{endpoint_id}/secret")).json()["key"]
                    assert secret == api_secret and secret.startswith("whsec_")
                    receiver.configure("/hook", secrets=[secret])
                    await page.screenshot(path=str(shots / "accrue-webhook-endpoint.png"), full_page=True)

                    # Send a test event: it arrives signed, with the catalog's example data.
                    await page.select_option("select[name=event_type]", "invoice.paid.v0")
                    await page.get_by_role("button", name="Send test event").click()
                    await page.wait_for_url("**done=test_sent**")
                    message_id = page.url.split("message=")[1]
                    (arrived,) = await receiver.wait_for(1, "/hook")
                    assert arrived.verified and arrived.svix_id == message_id
                    assert arrived.payload["eventType"] == "invoice.paid.v0"
                    assert arrived.payload["data"] == EVENT_TYPES["invoice.paid.v0"].example

                    # The log shows it delivered, with its attempt.
                    await page.get_by_role("link", name="← All endpoints").click()
                    row = await reload_until(page, f"tr[data-message='{message_id}']", "delivered")
                    assert "invoice.paid.v0" in row and "1 attempt" in row, row
                    await page.screenshot(path=str(shots / "accrue-webhook-portal.png"), full_page=True)
                    await page.click(f"tr[data-message='{message_id}'] a")
                    attempts = await page.inner_text("[data-testid=attempts]")
                    assert "HTTP 200" in attempts and "ok" in attempts, attempts

                    # Resend it: the receiver gets it again (same svix-id), and the log a manual attempt.
                    await page.get_by_role("button", name="Resend").click()
                    await page.wait_for_url("**done=resent")
                    await receiver.wait_for(2, "/hook")
                    assert receiver.duplicates("/hook") == {message_id: 2}
                    attempts = await reload_until(page, "[data-testid=attempts]", "(resend)")
                    assert attempts.count("HTTP 200") == 2, attempts
                    await page.screenshot(path=str(shots / "accrue-webhook-message.png"), full_page=True)

                    # Rotate the secret: the next test event verifies with the new secret alone.
                    await page.goto(f"{link['url']}/endpoints/{endpoint_id}")
                    await page.get_by_role("button", name="Rotate secret").click()
                    await page.wait_for_url("**done=rotated")
                    assert "Secret rotated" in await page.inner_text("[data-testid=notice]")
                    await page.get_by_role("button", name="Reveal secret").click()
                    rotated = await page.inner_text("[data-testid=secret]")
                    assert rotated.startswith("whsec_") and rotated != secret
                    receiver.configure("/hook", secrets=[rotated])
                    await page.select_option("select[name=event_type]", "invoice.issued.v0")
                    await page.get_by_role("button", name="Send test event").click()
                    await page.wait_for_url("**done=test_sent**")
                    latest = await receiver.wait_for(3, "/hook")
                    assert latest[-1].verified and latest[-1].payload["eventType"] == "invoice.issued.v0"

                    # Disable it: marked on the page and in the API, and it takes no test event.
                    await page.get_by_role("button", name="Disable endpoint").click()
                    await page.wait_for_url("**done=disabled")
                    assert "by hand" in await page.inner_text("[data-testid=endpoint-status]")
                    assert (await api.get(f"/v0/webhooks/endpoints/{endpoint_id}")).json()["disabled"] is True
                    await page.get_by_role("button", name="Send test event").click()
                    assert "enable it" in await page.inner_text("[data-testid=error]")
                    await page.screenshot(path=str(shots / "accrue-webhook-disabled.png"), full_page=True)
                finally:
                    await browser.close()
