"""The hosted webhook portal: the signed link of `GET /v0/webhooks/portal` and the pages it opens, fetched
and posted like a browser would (no API key). Every form action is checked in the database; refused forms,
foreign links and hostile endpoint fields are checked on the page. The session's API has no Temporal, so
every write here also stands when waking the endpoint's workflow fails."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api import portal_tokens
from db import outbox
from db import webhooks as store
from db.merchants import NewMerchant
from db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage
from db.session import session_factory
from domain.ids import new_id
from domain.webhook_events import EVENT_TYPES
from integrations.secret_box import SecretBox
from settings import Settings
from tests.conftest import new_merchant
from tests.helpers import relay_all

RECEIVER = "https://hooks.example.com/accrue"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---- tokens -----------------------------------------------------------------------------------------------


def test_webhook_portal_tokens_round_trip_and_reject_what_they_must() -> None:
    key = b"k" * 32
    expires = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    token = portal_tokens.issue_webhooks_portal("org_1", "live", expires, key)
    claim = portal_tokens.verify_webhooks_portal(token, key, expires - timedelta(seconds=1))
    assert claim == portal_tokens.WebhooksPortalClaim("org_1", "live", expires)
    with pytest.raises(portal_tokens.TokenExpired):
        portal_tokens.verify_webhooks_portal(token, key, expires)
    with pytest.raises(portal_tokens.TokenInvalid):
        portal_tokens.verify_webhooks_portal(token, b"x" * 32, expires - timedelta(seconds=1))
    payload, signature = token.split(".")
    for forged in (f"{payload}.", payload, f"{payload}.{signature}.x", "not-a-token", f"{payload}.é"):
        with pytest.raises(portal_tokens.TokenInvalid):
            portal_tokens.verify_webhooks_portal(forged, key, expires - timedelta(days=1))
    # A correctly signed payload of the wrong shape is still refused.
    for body in ({"mer": "m", "env": "live", "exp": "1893499200"}, {"mer": "m"}, [1, 2], "x"):
        payload = _b64(json.dumps(body).encode())
        signature = _b64(portal_tokens._signature(payload, key, portal_tokens._WEBHOOKS_PREFIX))
        with pytest.raises(portal_tokens.TokenInvalid):
            portal_tokens.verify_webhooks_portal(f"{payload}.{signature}", key, expires - timedelta(days=1))


def test_customer_and_webhook_portal_tokens_never_open_each_other() -> None:
    key = b"k" * 32
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    before = expires - timedelta(days=1)
    customer = portal_tokens.issue(portal_tokens.PortalClaim("sub_1", "org_1", "sandbox", expires), key)
    webhooks = portal_tokens.issue_webhooks_portal("org_1", "sandbox", expires, key)
    with pytest.raises(portal_tokens.TokenInvalid):
        portal_tokens.verify_webhooks_portal(customer, key, before)
    with pytest.raises(portal_tokens.TokenInvalid):
        portal_tokens.verify(webhooks, key, before)
    # Not even a webhook payload re-signed as a customer one, with a `sub` added.
    payload = _b64(json.dumps({"sub": "sub_1", "mer": "org_1", "env": "sandbox", "exp": 1893456000}).encode())
    as_customer = f"{payload}.{_b64(portal_tokens._signature(payload, key))}"
    assert portal_tokens.verify(as_customer, key, before).subscription_id == "sub_1"
    with pytest.raises(portal_tokens.TokenInvalid):
        portal_tokens.verify_webhooks_portal(as_customer, key, before)


def test_webhook_portal_tokens_expire_in_wall_clock_time_by_default() -> None:
    key = b"k" * 32
    past = datetime.now(UTC) - timedelta(seconds=1)
    stale = portal_tokens.issue_webhooks_portal("o", "sandbox", past, key)
    with pytest.raises(portal_tokens.TokenExpired):
        portal_tokens.verify_webhooks_portal(stale, key)
    later = datetime.now(UTC) + portal_tokens.WEBHOOKS_PORTAL_LIFETIME
    token = portal_tokens.issue_webhooks_portal("o", "sandbox", later, key)
    assert portal_tokens.verify_webhooks_portal(token, key).merchant_id == "o"


# ---- the page ---------------------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


@dataclass(frozen=True)
class Link:
    """A webhook portal link, as GET /v0/webhooks/portal hands it out."""

    path: str  # /webhooks/portal/<token>
    owner: store.Owner


async def open_link(
    engine: AsyncEngine,
    settings: Settings,
    merchant_id: str,
    environment: str = "sandbox",
    *,
    enable: bool = True,
) -> Link:
    owner = store.Owner(merchant_id, environment)
    if enable:
        async with session_factory(engine)() as session:
            await store.enable_app(session, owner)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    token = portal_tokens.issue_webhooks_portal(
        merchant_id, environment, expires, portal_tokens.signing_key(settings)
    )
    return Link(f"/webhooks/portal/{token}", owner)


@pytest.fixture
async def browser(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser: no API key, and redirects shown rather than followed."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as c:
        yield c


@pytest.fixture
async def link(engine: AsyncEngine, settings: Settings, merchant: NewMerchant) -> Link:
    return await open_link(engine, settings, merchant.merchant_id)


async def endpoints_of(engine: AsyncEngine, owner: store.Owner) -> list[WebhookEndpoint]:
    async with session_factory(engine)() as session:
        return await store.live_endpoints(session, owner)


async def endpoint_row(engine: AsyncEngine, endpoint_id: str) -> WebhookEndpoint:
    async with session_factory(engine)() as session:
        return await session.get_one(WebhookEndpoint, endpoint_id)


async def add(browser: httpx.AsyncClient, link: Link, **form: Any) -> str:
    """Add an endpoint through the page's form; its id."""
    response = await browser.post(f"{link.path}/endpoints", data={"url": RECEIVER} | form)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(f"{link.path}/endpoints/ep_") and location.endswith("?done=created")
    return location.removeprefix(f"{link.path}/endpoints/").split("?")[0]


async def post(browser: httpx.AsyncClient, url: str, **form: Any) -> httpx.Response:
    return await browser.post(url, data=form)


async def record_attempt(
    engine: AsyncEngine,
    message_id: str,
    endpoint_id: str,
    *,
    status_code: int | None,
    response: str,
    retry_in: timedelta | None,
) -> None:
    """An attempt as the endpoint workflow's delivery activity records it, with the delivery's new state."""
    async with session_factory(engine)() as session:
        delivery = await session.get_one(WebhookDelivery, await delivery_id(session, message_id, endpoint_id))
        now = datetime.now(UTC)
        succeeded = status_code is not None and 200 <= status_code < 300
        delivery.attempts += 1
        delivery.round_attempts += 1
        delivery.status = "delivered" if succeeded else ("pending" if retry_in else "failed")
        delivery.next_attempt_at = now + retry_in if retry_in else None
        session.add(
            WebhookAttempt(
                id=new_id("webhook_attempt"), delivery_id=delivery.id, message_id=message_id,
                endpoint_id=endpoint_id, attempt=delivery.attempts, trigger="scheduled", succeeded=succeeded,
                status_code=status_code, response=response, duration_ms=137, created_at=now,
                next_attempt_at=delivery.next_attempt_at,
            )
        )  # fmt: skip
        await session.commit()


async def test_the_apis_link_opens_the_portal(
    api_url: str, browser: httpx.AsyncClient, merchant: NewMerchant
) -> None:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as api:
        assert (await api.post("/v0/webhooks")).status_code == 201
        link = (await api.get("/v0/webhooks/portal")).json()
    assert link["object"] == "webhookPortal"
    page = await browser.get(link["url"])
    assert page.status_code == 200, page.text
    assert (
        "Webhook endpoints" in page.text and "Test Merchant" in page.text and "No endpoints yet" in page.text
    )
    # A capability URL: never cached, never sent on as a referrer, never framed, forms post only here.
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    csp = page.headers["content-security-policy"]
    assert "form-action 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert merchant.api_key not in page.text


async def test_tampered_expired_and_foreign_links_open_nothing(
    browser: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, merchant: NewMerchant, link: Link
) -> None:
    ep = await add(browser, link)
    token = link.path.removeprefix("/webhooks/portal/")
    payload, signature = token.split(".")
    key = portal_tokens.signing_key(settings)
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    swapped = _b64(json.dumps(claims | {"mer": new_id("organization")}).encode())
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    later = datetime.now(UTC) + timedelta(hours=1)
    customer = portal_tokens.issue(
        portal_tokens.PortalClaim("sub_1", merchant.merchant_id, "sandbox", later), key
    )
    foreign = portal_tokens.issue_webhooks_portal(merchant.merchant_id, "sandbox", later, b"another key")
    for forged in (f"{swapped}.{signature}", f"{payload}.{flipped}", payload, "x.y", customer, foreign):
        for method, path in (("GET", ""), ("GET", f"/endpoints/{ep}"), ("POST", f"/endpoints/{ep}/disable")):
            page = await browser.request(method, f"/webhooks/portal/{forged}{path}")
            assert page.status_code == 403, (forged, path)
            assert "not valid" in page.text and ep not in page.text and RECEIVER not in page.text
    assert not (await endpoint_row(engine, ep)).disabled

    stale = portal_tokens.issue_webhooks_portal(
        merchant.merchant_id, "sandbox", datetime.now(UTC) - timedelta(seconds=1), key
    )
    for method, path in (("GET", ""), ("POST", f"/endpoints/{ep}/rotate")):
        page = await browser.request(method, f"/webhooks/portal/{stale}{path}")
        assert page.status_code == 410 and "expired" in page.text and ep not in page.text


async def test_a_merchant_without_webhooks_gets_a_page_saying_so(
    browser: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> None:
    link = await open_link(engine, settings, merchant.merchant_id, enable=False)
    page = await browser.get(link.path)
    assert page.status_code == 404 and "not enabled" in page.text
    response = await browser.post(f"{link.path}/endpoints", data={"url": RECEIVER})
    assert response.status_code == 404 and await endpoints_of(engine, link.owner) == []


async def test_adding_an_endpoint(
    browser: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, link: Link
) -> None:
    ep = await add(
        browser,
        link,
        description="Billing service",
        filter=["invoice.paid.v0", "subscription.created.v0"],
        rate_limit="25",
    )
    row = await endpoint_row(engine, ep)
    assert (row.url, row.description, row.rate_limit, row.disabled) == (
        RECEIVER,
        "Billing service",
        25,
        False,
    )
    assert row.filter_types == ["invoice.paid.v0", "subscription.created.v0"]
    assert row.merchant_id == link.owner.merchant_id and row.environment == "sandbox"
    secret = await read_secret(engine, settings, link.owner, ep)
    assert secret.startswith("whsec_") and secret not in row.secret  # sealed at rest

    page = await browser.get(f"{link.path}/endpoints/{ep}?done=created")
    assert page.status_code == 200 and "Endpoint added" in page.text and RECEIVER in page.text
    assert secret not in page.text  # shown only on request
    overview = await browser.get(link.path)
    assert f'data-endpoint="{ep}"' in overview.text and "Billing service" in overview.text

    # Nothing ticked, no rate limit: every event type, unlimited.
    every = await add(browser, link, rate_limit="")
    row = await endpoint_row(engine, every)
    assert row.filter_types is None and row.rate_limit is None and row.description == ""
    assert "all event types" in (await browser.get(f"{link.path}/endpoints/{every}")).text


def box(settings: Settings) -> SecretBox:
    """What the test session's API seals secrets with."""
    return SecretBox(settings.secret_key.get_secret_value())


async def read_secret(engine: AsyncEngine, settings: Settings, owner: store.Owner, endpoint_id: str) -> str:
    async with session_factory(engine)() as session:
        return await store.read_secret(session, owner, box(settings), endpoint_id)


@pytest.mark.parametrize(
    ("environment", "form", "field", "message"),
    [
        ("sandbox", {"url": ""}, "url", "Enter the URL"),
        ("sandbox", {"url": "ftp://example.com/hook"}, "url", "must be an http:// or https:// URL"),
        ("sandbox", {"url": "https://exa mple.com/"}, "url", "must not contain spaces"),
        ("live", {"url": "http://example.com/hook"}, "url", "must use https://"),
        ("live", {"url": "https://169.254.169.254/latest"}, "url", "metadata address"),
        ("live", {"url": "https://metadata.google.internal/x"}, "url", "metadata service"),
        ("sandbox", {"description": "d" * 1025}, "description", "at most 1024 characters"),
        ("sandbox", {"filter": ["invoice.paid.v0", "invoice.eaten.v0"]}, "filter", "invoice.eaten.v0"),
        ("sandbox", {"rate_limit": "0"}, "rate_limit", "from 1 to 10000"),
        ("sandbox", {"rate_limit": "10001"}, "rate_limit", "from 1 to 10000"),
        ("sandbox", {"rate_limit": "2.5"}, "rate_limit", "whole number"),
        ("sandbox", {"rate_limit": "١٢"}, "rate_limit", "whole number"),  # digits, but not ASCII ones
    ],
)
async def test_the_form_refuses_what_the_api_refuses(
    browser: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    environment: str,
    form: dict[str, Any],
    field: str,
    message: str,
) -> None:
    merchant = await new_merchant(engine, environment)
    link = await open_link(engine, settings, merchant.merchant_id, environment)
    typed = {"url": RECEIVER, "description": "kept as typed"} | form
    page = await browser.post(f"{link.path}/endpoints", data=typed)
    assert page.status_code == 400 and "was not added" in page.text
    assert f'data-testid="error-{field}"' in page.text and message in page.text, page.text
    assert f'value="{html.escape(typed["url"])}"' in page.text  # the form comes back as typed
    assert await endpoints_of(engine, link.owner) == []

    # The same rules when editing; the endpoint stays as it was.
    if environment == "live":
        ep = await add(browser, link, url="https://hooks.example.com/live")
    else:
        ep = await add(browser, link)
    before = await endpoint_row(engine, ep)
    page = await browser.post(f"{link.path}/endpoints/{ep}", data=typed)
    assert page.status_code == 400 and "was not saved" in page.text and message in page.text
    after = await endpoint_row(engine, ep)
    assert (after.url, after.description, after.filter_types, after.rate_limit) == (
        before.url, before.description, before.filter_types, before.rate_limit,
    )  # fmt: skip


async def test_sandbox_endpoints_may_be_local_http(
    browser: httpx.AsyncClient, engine: AsyncEngine, link: Link
) -> None:
    ep = await add(browser, link, url="http://localhost:8000/hooks")
    assert (await endpoint_row(engine, ep)).url == "http://localhost:8000/hooks"


async def test_editing_an_endpoint(browser: httpx.AsyncClient, engine: AsyncEngine, link: Link) -> None:
    ep = await add(browser, link, filter=["invoice.paid.v0"], rate_limit="5")
    form = {"url": "https://other.example.com/h", "description": "New", "filter": ["customer.created.v0"]}
    response = await browser.post(f"{link.path}/endpoints/{ep}", data=form | {"rate_limit": "9"})
    assert response.status_code == 303 and response.headers["location"].endswith(
        f"/endpoints/{ep}?done=updated"
    )
    row = await endpoint_row(engine, ep)
    assert (row.url, row.description, row.filter_types, row.rate_limit) == (
        "https://other.example.com/h", "New", ["customer.created.v0"], 9,
    )  # fmt: skip
    page = await browser.get(f"{link.path}/endpoints/{ep}")
    assert 'value="customer.created.v0" checked' in page.text and 'value="invoice.paid.v0">' in page.text

    # Every box unticked and the limit emptied: every event type, no limit.
    await browser.post(
        f"{link.path}/endpoints/{ep}", data={"url": row.url, "description": "", "rate_limit": ""}
    )
    row = await endpoint_row(engine, ep)
    assert row.filter_types is None and row.rate_limit is None and row.description == ""


async def test_disabling_and_enabling(browser: httpx.AsyncClient, engine: AsyncEngine, link: Link) -> None:
    ep = await add(browser, link)
    response = await browser.post(f"{link.path}/endpoints/{ep}/disable")
    assert response.status_code == 303 and response.headers["location"].endswith("?done=disabled")
    row = await endpoint_row(engine, ep)
    assert row.disabled and row.disabled_reason == "manual"
    page = await browser.get(f"{link.path}/endpoints/{ep}")
    assert (
        "by hand" in page.text
        and "Enable endpoint" in page.text
        and 'data-testid="auto-disabled"' not in page.text
    )

    await browser.post(f"{link.path}/endpoints/{ep}/enable")
    row = await endpoint_row(engine, ep)
    assert not row.disabled and row.disabled_reason is None
    assert "Disable endpoint" in (await browser.get(f"{link.path}/endpoints/{ep}")).text


async def test_an_endpoint_disabled_for_failing_is_marked(
    browser: httpx.AsyncClient, engine: AsyncEngine, link: Link
) -> None:
    ep = await add(browser, link)
    since = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    async with session_factory(engine)() as session:
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == ep)
            .values(disabled=True, disabled_reason="failing", failing_since=since)
        )
        await session.commit()
    overview = await browser.get(link.path)
    row = overview.text.split(f'data-endpoint="{ep}"')[1].split("</tr>")[0]
    assert "disabled" in row and "after 5 days of failed deliveries" in row and "Mar 1, 2026 09:30:00" in row
    page = await browser.get(f"{link.path}/endpoints/{ep}")
    assert 'data-testid="auto-disabled"' in page.text and "every delivery failed for 5 days" in page.text

    # Enabling it clears the streak: five fresh days.
    await browser.post(f"{link.path}/endpoints/{ep}/enable")
    row_ = await endpoint_row(engine, ep)
    assert not row_.disabled and row_.disabled_reason is None and row_.failing_since is None


async def test_revealing_and_rotating_the_secret(
    browser: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, link: Link
) -> None:
    ep = await add(browser, link)
    first = await read_secret(engine, settings, link.owner, ep)
    page = await browser.post(f"{link.path}/endpoints/{ep}/secret")
    assert page.status_code == 200 and f'<code data-testid="secret">{first}</code>' in page.text

    response = await browser.post(f"{link.path}/endpoints/{ep}/rotate")
    assert response.status_code == 303 and response.headers["location"].endswith("?done=rotated")
    second = await read_secret(engine, settings, link.owner, ep)
    assert second.startswith("whsec_") and second != first
    row = await endpoint_row(engine, ep)
    assert box(settings).open(row.previous_secret or "") == first
    assert row.previous_secret_expires_at is not None
    assert timedelta(hours=23) < row.previous_secret_expires_at - datetime.now(UTC) <= timedelta(hours=24)
    page = await browser.get(f"{link.path}/endpoints/{ep}?done=rotated")
    assert (
        "previous secret also signs until" in page.text and first not in page.text and second not in page.text
    )
    assert second in (await browser.post(f"{link.path}/endpoints/{ep}/secret")).text


async def test_deleting_an_endpoint(browser: httpx.AsyncClient, engine: AsyncEngine, link: Link) -> None:
    ep = await add(browser, link)
    response = await browser.post(f"{link.path}/endpoints/{ep}/delete")
    assert response.status_code == 303 and response.headers["location"] == f"{link.path}?done=deleted"
    assert (await endpoint_row(engine, ep)).deleted_at is not None
    assert f'data-endpoint="{ep}"' not in (await browser.get(link.path)).text
    assert (await browser.get(f"{link.path}/endpoints/{ep}")).status_code == 404


async def test_sending_a_test_event(browser: httpx.AsyncClient, engine: AsyncEngine, link: Link) -> None:
    ep = await add(browser, link, filter=["invoice.paid.v0"])
    await add(browser, link, url="https://other.example.com/h")
    page = await browser.get(f"{link.path}/endpoints/{ep}")
    # The endpoint's own event types are offered.
    assert '<option value="invoice.paid.v0">' in page.text and "customer.created.v0</option>" not in page.text

    response = await browser.post(f"{link.path}/endpoints/{ep}/test", data={"event_type": "invoice.paid.v0"})
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert "?done=test_sent&message=msg_" in location
    message_id = location.split("message=")[1]
    async with session_factory(engine)() as session:
        message = await session.get_one(WebhookMessage, message_id)
        deliveries = list(
            await session.scalars(select(WebhookDelivery).where(WebhookDelivery.message_id == message_id))
        )
    assert (message.merchant_id, message.environment, message.event_type) == (
        link.owner.merchant_id, "sandbox", "invoice.paid.v0",
    )  # fmt: skip
    assert message.payload["data"] == EVENT_TYPES["invoice.paid.v0"].example
    assert (
        message.payload["eventType"] == "invoice.paid.v0" and message.payload["eventId"] == message.event_id
    )
    assert message.event_id.startswith("evt_") and message.resource_key == f"test:{message_id}"
    # To that endpoint only, due now.
    assert [(d.endpoint_id, d.status, d.next_attempt_at) for d in deliveries] == [(ep, "pending", None)]
    page = await browser.get(location)
    assert "Test event queued" in page.text and f"/messages/{message_id}" in page.text
    overview = await browser.get(link.path)
    assert f'data-message="{message_id}"' in overview.text
    assert "other.example.com" not in overview.text.split(f'data-message="{message_id}"')[1].split("</tr>")[0]

    # An unknown type, or a disabled endpoint, sends nothing.
    before = await message_count(engine)
    page = await browser.post(f"{link.path}/endpoints/{ep}/test", data={"event_type": "invoice.eaten.v0"})
    assert page.status_code == 400 and "Choose one of the listed event types" in page.text
    await browser.post(f"{link.path}/endpoints/{ep}/disable")
    page = await browser.post(f"{link.path}/endpoints/{ep}/test", data={"event_type": "invoice.paid.v0"})
    assert page.status_code == 400 and "enable it, then send the test event" in page.text
    assert await message_count(engine) == before


async def message_count(engine: AsyncEngine) -> int:
    async with session_factory(engine)() as session:
        return int(await session.scalar(select(func.count()).select_from(WebhookMessage)) or 0)


async def test_the_message_log_shows_attempts_and_resends(
    browser: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant, link: Link
) -> None:
    ep = await add(browser, link, description="primary")
    late = await add(browser, link, filter=["customer.created.v0"])
    async with session_factory(engine)() as session:
        row = outbox.record(
            session, merchant.merchant_id, "sandbox", "invoice.paid.v0", {"id": "inv_p", "object": "invoice"}
        )
        await session.commit()
    await relay_all(session_factory(engine))
    msg = row.id
    await record_attempt(
        engine, msg, ep, status_code=503, response=f"upstream down {HOSTILE}", retry_in=timedelta(minutes=5)
    )

    overview = await browser.get(link.path)
    log_row = overview.text.split(f'data-message="{msg}"')[1].split("</tr>")[0]
    assert "invoice.paid.v0" in log_row and "pending" in log_row and "1 attempt" in log_row

    page = await browser.get(f"{link.path}/messages/{msg}")
    assert page.status_code == 200 and html.escape('"id": "inv_p"') in page.text
    attempt_row = page.text.split("data-attempt=")[1].split("</tr>")[0]
    assert "HTTP 503" in attempt_row and "137 ms" in attempt_row and "upstream down" in attempt_row
    assert HOSTILE not in page.text and html.escape(HOSTILE) in attempt_row
    assert "failed" in attempt_row  # this attempt failed; a retry is due
    delivery_row = page.text.split(f'data-delivery="{ep}"')[1].split("</tr>")[0]
    assert "pending" in delivery_row and "Resend" in delivery_row
    # The endpoint that filtered it out can be sent it by hand.
    assert "Send" in page.text.split(f'data-delivery="{late}"')[1].split("</tr>")[0]

    # A failed delivery resent: pending again, on a fresh schedule, attempts kept.
    await record_attempt(engine, msg, ep, status_code=None, response="connection refused", retry_in=None)
    response = await browser.post(f"{link.path}/messages/{msg}/resend", data={"endpoint": ep})
    assert response.status_code == 303 and response.headers["location"].endswith(
        f"/messages/{msg}?done=resent"
    )
    delivery = await delivery_of(engine, msg, ep)
    assert (delivery.status, delivery.round_attempts, delivery.attempts, delivery.next_attempt_at) == (
        "pending", 0, 2, None,
    )  # fmt: skip
    # ... and one the endpoint never had is created.
    await browser.post(f"{link.path}/messages/{msg}/resend", data={"endpoint": late})
    assert (await delivery_of(engine, msg, late)).status == "pending"
    page = await browser.get(f"{link.path}/messages/{msg}?done=resent")
    assert "queued again" in page.text and "no response" in page.text and "connection refused" in page.text


async def delivery_id(session: AsyncSession, message_id: str, endpoint_id: str) -> int | None:
    return await session.scalar(
        select(WebhookDelivery.id).where(
            WebhookDelivery.message_id == message_id, WebhookDelivery.endpoint_id == endpoint_id
        )
    )


async def delivery_of(engine: AsyncEngine, message_id: str, endpoint_id: str) -> WebhookDelivery:
    async with session_factory(engine)() as session:
        return await session.get_one(WebhookDelivery, await delivery_id(session, message_id, endpoint_id))


async def test_one_merchants_link_never_shows_or_changes_anothers(
    browser: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, merchant: NewMerchant, link: Link
) -> None:
    mine = await add(browser, link)
    other = await new_merchant(engine)
    theirs_link = await open_link(engine, settings, other.merchant_id)
    theirs = await add(browser, theirs_link, url="https://theirs.example.com/secret-path")
    response = await browser.post(
        f"{theirs_link.path}/endpoints/{theirs}/test", data={"event_type": "invoice.paid.v0"}
    )
    their_message = response.headers["location"].split("message=")[1]
    # The same merchant's live environment is another world too.
    live_link = await open_link(engine, settings, merchant.merchant_id, "live")
    live = await add(browser, live_link, url="https://live.example.com/h")

    overview = await browser.get(link.path)
    assert mine in overview.text and theirs not in overview.text and live not in overview.text
    assert "theirs.example.com" not in overview.text and their_message not in overview.text
    before = await endpoint_row(engine, theirs)
    for ep in (theirs, live):
        assert (await browser.get(f"{link.path}/endpoints/{ep}")).status_code == 404
        for action, form in (
            ("", {"url": "https://attacker.example.com/"}),
            ("/disable", {}),
            ("/delete", {}),
            ("/rotate", {}),
            ("/secret", {}),
            ("/test", {"event_type": "invoice.paid.v0"}),
        ):
            page = await browser.post(f"{link.path}/endpoints/{ep}{action}", data=form)
            assert page.status_code == 404, (ep, action)
            assert "whsec_" not in page.text
    after = await endpoint_row(engine, theirs)
    assert (after.url, after.disabled, after.deleted_at, after.secret) == (
        before.url,
        False,
        None,
        before.secret,
    )
    assert (await browser.get(f"{link.path}/messages/{their_message}")).status_code == 404
    page = await browser.post(f"{link.path}/messages/{their_message}/resend", data={"endpoint": mine})
    assert page.status_code == 404
    page = await browser.post(f"{theirs_link.path}/messages/{their_message}/resend", data={"endpoint": mine})
    assert page.status_code == 404  # their link, my endpoint
    async with session_factory(engine)() as session:
        targets = await session.scalars(
            select(WebhookDelivery.endpoint_id).where(WebhookDelivery.message_id == their_message)
        )
        assert list(targets) == [theirs]


async def test_hostile_descriptions_and_urls_are_escaped(
    browser: httpx.AsyncClient, engine: AsyncEngine, link: Link
) -> None:
    url = 'https://x.example/?q="><svg/onload=alert(1)>'
    ep = await add(browser, link, url=url, description=HOSTILE)
    assert (await endpoint_row(engine, ep)).url == url
    for path in ("", f"/endpoints/{ep}"):
        page = await browser.get(f"{link.path}{path}")
        assert HOSTILE not in page.text and "<svg/onload" not in page.text
        assert html.escape(HOSTILE) in page.text and html.escape(url) in page.text
    # Refused forms echo what was typed, escaped as well.
    page = await browser.post(
        f"{link.path}/endpoints", data={"url": f"ftp://{HOSTILE}", "description": HOSTILE}
    )
    assert page.status_code == 400 and HOSTILE not in page.text


async def test_posts_from_another_site_are_refused(
    browser: httpx.AsyncClient, engine: AsyncEngine, link: Link
) -> None:
    ep = await add(browser, link)
    for headers in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "null"},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://other.127.0.0.1.nip.io"},
    ):
        page = await browser.post(f"{link.path}/endpoints/{ep}/disable", headers=headers)
        assert page.status_code == 403 and "another site" in page.text
        page = await browser.post(f"{link.path}/endpoints", data={"url": RECEIVER}, headers=headers)
        assert page.status_code == 403
    assert not (await endpoint_row(engine, ep)).disabled and len(await endpoints_of(engine, link.owner)) == 1
    # The page's own forms: as Chromium posts them (its Origin is null under the no-referrer policy), and
    # as a browser without Sec-Fetch-Site does.
    chromium = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    response = await browser.post(f"{link.path}/endpoints/{ep}/disable", headers=chromium)
    assert response.status_code == 303 and (await endpoint_row(engine, ep)).disabled
    own = str(browser.base_url).rstrip("/")
    response = await browser.post(f"{link.path}/endpoints/{ep}/enable", headers={"Origin": own})
    assert response.status_code == 303 and not (await endpoint_row(engine, ep)).disabled
