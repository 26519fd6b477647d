"""/docs and /redoc render the API's operations in a real browser that cannot reach the internet: every
script, stylesheet and font comes from the API itself (Debian's chromium through Playwright, as in
tests/e2e/test_browser.py). ReDoc's "API docs by Redocly" badge is an image on Redocly's CDN; offline it is
missing, and nothing else is."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from playwright.async_api import Route, async_playwright

from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS


@pytest.mark.parametrize(
    ("path", "operation"),
    [("/docs", ".opblock-summary-path"), ("/redoc", "[data-section-id^='tag/'], [id^='operation/']")],
)
async def test_docs_render_operations_without_internet(api_url: str, path: str, operation: str) -> None:
    local = urlparse(api_url).netloc
    outside: list[str] = []  # what the page needed from elsewhere to work: scripts, styles, fonts, data

    async def offline(route: Route) -> None:
        url = route.request.url
        if urlparse(url).netloc == local or url.startswith("data:"):
            await route.continue_()
        else:
            if route.request.resource_type != "image":
                outside.append(url)
            await route.abort("internetdisconnected")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.route("**/*", offline)
            await page.goto(f"{api_url}{path}")
            await page.wait_for_selector(operation, timeout=20_000)
            text = await page.inner_text("body")
        finally:
            await browser.close()
    assert outside == []
    assert "Ingest a meter event" in text or "/v0/events" in text
