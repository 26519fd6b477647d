"""Customer portal links: `POST /v0/subscriptions/{id}/portal` (SDK and raw HTTP) and the signed, expiring,
read-only page it opens. Rows come from tests.factories; the page is fetched like a browser would, with no
API key."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from api import portal_tokens
from api.pages import portal as portal_page
from db.merchants import NewMerchant
from db.models import MeterEvent, PaymentSession, PlanPrice, Price, Subscription
from domain.ids import new_id
from domain.pricing import Rate
from settings import Settings
from tests.factories import ANCHOR, Factory
from tests.helpers import assert_error, field_errors

PERIOD_2 = (ANCHOR + timedelta(days=28), ANCHOR + timedelta(days=56))


@pytest.fixture
async def aclient(api_url: str, merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as c:
        yield c


@pytest.fixture
async def browser(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as c:
        yield c


@pytest.fixture
def factory(engine: AsyncEngine, merchant: NewMerchant) -> Factory:
    return Factory(engine, merchant)


@dataclass
class Portfolio:
    subscription: Subscription
    other_subscription: Subscription
    payment_session_id: str


async def portfolio(factory: Factory) -> Portfolio:
    """A subscription with Invoice 0 paid, invoice 1 issued and awaiting payment, period 2 running with
    three API calls so far, and a second subscription of the same customer that must not show."""
    plan = await factory.plan(name="Pro monthly")
    metric = await factory.metric(name="API calls", unit="calls", aggregation="COUNT", event_type="api.call")
    price = await factory.add(
        Price(
            id=new_id("price"), **factory.tenant, billable_metric_id=metric.id, model="standard",
            payment_term="in_arrears", properties={"unitPrice": "0.50"}, invoice_display_name="API calls",
        )
    )  # fmt: skip
    await factory.add(PlanPrice(plan_id=plan.id, price_id=price.id, position=0))
    customer = await factory.customer()
    sub = await factory.subscription(plan, customer, name="Pro <for> Acme", current_period=2)
    await factory.invoice(
        sub, sequence_number=0, status="PAID", invoice_number="INV-PORTAL-0000", subtotal=Decimal(49),
        grand_total=Decimal(49), paid_amount=Decimal(49),
    )  # fmt: skip
    issued = await factory.invoice(
        sub, sequence_number=1, status="ISSUED", invoice_number="INV-PORTAL-0001", subtotal=Decimal("12.5"),
        grand_total=Decimal("12.5"),
    )  # fmt: skip
    payment = await factory.add(
        PaymentSession(
            id=new_id("payment_session"), **factory.tenant, subscription_id=sub.id, invoice_id=issued.id,
            status="open", amount=Decimal("12.5"), currency="USD",
            expires_at=datetime.now(UTC) + timedelta(days=30),
        )
    )  # fmt: skip
    await factory.update(issued, payment_session_id=payment.id)
    await factory.invoice(
        sub, sequence_number=2, status="ACTIVE", invoice_number="INV-PORTAL-0002",
        period_start=PERIOD_2[0], period_end=PERIOD_2[1],
    )  # fmt: skip
    for n in range(3):
        await factory.add(
            MeterEvent(
                id=new_id("event"), **factory.tenant, type="api.call", source="tests", subject=customer.id,
                data={}, timestamp=PERIOD_2[0] + timedelta(days=n + 1), idempotency_key=new_id("event"),
            )
        )  # fmt: skip
    other = await factory.subscription(await factory.plan(name="Other plan"), customer, name="Other")
    await factory.invoice(other, sequence_number=0, status="PAID", invoice_number="INV-OTHER-0000")
    return Portfolio(sub, other, payment.id)


def token_of(url: str) -> str:
    return url.rsplit("/portal/", 1)[1]


def close_to(when: datetime, expected: datetime) -> bool:
    return abs((when - expected).total_seconds()) <= 5


# ---- generating links -------------------------------------------------------------------------------------


async def test_sdk_link_opens_a_page_with_that_subscription_only(
    sdk: Paygentic, factory: Factory, browser: httpx.AsyncClient, api_url: str
) -> None:
    world = await portfolio(factory)
    sub = world.subscription
    link = await sdk.subscriptions.generate_portal_link_async(id=sub.id)
    assert link.object == "subscriptionPortal" and link.url.startswith(f"{api_url}/portal/")
    assert close_to(link.expires_at, datetime.now(UTC) + timedelta(minutes=10))

    page = await browser.get(link.url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for text in (
        sub.id,
        "Pro &lt;for&gt; Acme",  # escaped, never markup
        "Pro monthly",
        "Test Merchant",
        "SANDBOX",
        "Jan 31, 2026",  # started
        "Feb 28, 2026 – Mar 28, 2026",  # current period
        "INV-PORTAL-0000",
        "49.00 USD",
        "INV-PORTAL-0001",
        "12.50 USD",
        f'href="/checkout/{world.payment_session_id}"',
        "INV-PORTAL-0002",
        "API calls",
        "3 calls",  # usage so far this period
        "1.50 USD",
    ):
        assert text in html, text
    assert "<for>" not in html
    assert html.count('href="/checkout/') == 1  # only the issued invoice is payable
    for text in (world.other_subscription.id, "INV-OTHER-0000", "Other plan"):
        assert text not in html
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        ("PT1H", timedelta(hours=1)),
        ("PT90M", timedelta(minutes=90)),
        ("P1D", timedelta(days=1)),
        ("P1W", timedelta(days=7)),
        ("P7D", timedelta(days=7)),
        ("P6DT23H59M59S", timedelta(days=7) - timedelta(seconds=1)),
        ("PT1S", timedelta(seconds=1)),
    ],
)
async def test_expires_in_within_bounds(
    aclient: httpx.AsyncClient, factory: Factory, expires_in: str, lifetime: timedelta
) -> None:
    sub = await factory.subscription()
    response = await aclient.post(f"/v0/subscriptions/{sub.id}/portal", json={"expiresIn": expires_in})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"object", "url", "expiresAt"} and body["object"] == "subscriptionPortal"
    expires_at = datetime.fromisoformat(body["expiresAt"])
    assert close_to(expires_at, datetime.now(UTC) + lifetime)
    assert body["expiresAt"].endswith("Z")


@pytest.mark.parametrize(
    ("expires_in", "says"),
    [
        ("P7DT1S", "maximum of P7D"),
        ("P8D", "maximum of P7D"),
        ("P1M", "maximum of P7D"),
        ("P1Y", "maximum of P7D"),
        ("PT0S", "too short"),
        ("P0D", "too short"),
        ("1 hour", "not an ISO-8601 duration"),
        ("-PT1H", "negative"),
        ("PT1.5H", "fractional"),
        ("", "not an ISO-8601 duration"),
        (3600, "must be a string"),
        (True, "must be a string"),
    ],
)
async def test_expires_in_out_of_bounds_is_400(
    aclient: httpx.AsyncClient, factory: Factory, expires_in: Any, says: str
) -> None:
    sub = await factory.subscription()
    response = await aclient.post(f"/v0/subscriptions/{sub.id}/portal", json={"expiresIn": expires_in})
    message = field_errors(response)["expiresIn"]
    assert says in message, message


async def test_body_is_optional(aclient: httpx.AsyncClient, factory: Factory) -> None:
    sub = await factory.subscription()
    bodies: list[dict[str, Any]] = [{}, {"json": {}}, {"json": {"expiresIn": None}}, {"json": {"unknown": 1}}]
    for kwargs in bodies:
        response = await aclient.post(f"/v0/subscriptions/{sub.id}/portal", **kwargs)
        assert response.status_code == 200, (kwargs, response.text)
        expires_at = datetime.fromisoformat(response.json()["expiresAt"])
        assert close_to(expires_at, datetime.now(UTC) + timedelta(minutes=10))


async def test_other_merchants_and_unknown_subscriptions_are_404(
    aclient: httpx.AsyncClient, other_client: httpx.Client, factory: Factory, api_url: str
) -> None:
    sub = await factory.subscription()
    response = await asyncio.to_thread(other_client.post, f"/v0/subscriptions/{sub.id}/portal", json={})
    assert_error(response, 404, "not_found")
    missing = await aclient.post(f"/v0/subscriptions/{new_id('subscription')}/portal", json={})
    assert_error(missing, 404, "not_found")
    async with httpx.AsyncClient(base_url=api_url) as anonymous:
        assert_error(await anonymous.post(f"/v0/subscriptions/{sub.id}/portal", json={}), 401)


# ---- the usage estimate -----------------------------------------------------------------------------------


async def usage_page(
    factory: Factory,
    aclient: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    unit: str,
    price: str,
    events: int,
) -> str:
    """The portal page of a subscription whose current period has `events` events of a COUNT metric."""
    plan = await factory.plan(name="Forms")
    metric = await factory.metric(
        name="Submissions", unit=unit, aggregation="COUNT", event_type="form.submit"
    )
    row = await factory.add(
        Price(
            id=new_id("price"), **factory.tenant, billable_metric_id=metric.id, model="standard",
            payment_term="in_arrears", properties={"unitPrice": price}, invoice_display_name="Submissions",
        )
    )  # fmt: skip
    await factory.add(PlanPrice(plan_id=plan.id, price_id=row.id, position=0))
    customer = await factory.customer()
    sub = await factory.subscription(plan, customer, current_period=2)
    await factory.invoice(
        sub, sequence_number=2, status="ACTIVE", period_start=PERIOD_2[0], period_end=PERIOD_2[1]
    )
    for n in range(events):
        await factory.add(
            MeterEvent(
                id=new_id("event"), **factory.tenant, type="form.submit", source="tests", subject=customer.id,
                data={}, timestamp=PERIOD_2[0] + timedelta(hours=n + 1), idempotency_key=new_id("event"),
            )
        )  # fmt: skip
    link = (await aclient.post(f"/v0/subscriptions/{sub.id}/portal", json={})).json()["url"]
    page = await browser.get(link)
    assert page.status_code == 200
    usage = page.text.split("Usage this period", 1)[1].split("Invoices", 1)[0]
    return usage


async def test_sub_cent_estimates_show_their_digits_and_the_unit_price(
    factory: Factory, aclient: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    usage = await usage_page(factory, aclient, browser, "submissions", "0.000012", 3)
    assert "3 submissions" in usage
    assert "0.000012 USD per submission" in usage
    assert "0.000036 USD" in usage and "0.00 USD" not in usage


async def test_one_unit_is_singular(
    factory: Factory, aclient: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    usage = await usage_page(factory, aclient, browser, "submissions", "0.5", 1)
    assert "1 submission<" in usage and "1 submissions" not in usage
    assert "0.50 USD per submission" in usage and "0.50 USD<" in usage


@pytest.mark.parametrize(
    ("quantity", "unit", "text"),
    [
        ("1", "submissions", "1 submission"),
        ("2", "submissions", "2 submissions"),
        ("0", "submissions", "0 submissions"),
        ("1.5", "submissions", "1.5 submissions"),
        ("1", "queries", "1 query"),
        ("1", "batches", "1 batch"),
        ("1", "boxes", "1 box"),
        ("1", "API calls", "1 API call"),
        ("3", "call", "3 calls"),
        ("3", "query", "3 queries"),
        ("3", "day", "3 days"),
        ("3", "batch", "3 batches"),
        ("1", "USD", "1 USD"),
        ("2", "kWh", "2 kWh"),
        ("1", "bus", "1 bus"),
        ("1", "access", "1 access"),
        ("1", "", "1"),
    ],
)
def test_quantities_read_naturally(quantity: str, unit: str, text: str) -> None:
    assert portal_page.quantity_text(Decimal(quantity), unit) == text


@pytest.mark.parametrize(
    ("rate", "unit", "text"),
    [
        (Rate(Decimal("0.000012")), "tokens", "0.000012 USD per token"),
        (Rate(Decimal("0.5")), "calls", "0.50 USD per call"),
        (Rate(Decimal("5"), per=Decimal("1000")), "calls", "5.00 USD per 1000 calls"),
        (Rate(Decimal("5"), per=Decimal("1")), "calls", "5.00 USD per call"),
        (Rate(Decimal("4.980198020"), average=True), "calls", "average 4.98019802 USD per call"),
        (Rate(Decimal("0.029"), share=True), "USD", "2.9% of each amount"),
        (Rate(Decimal("2")), "", "2.00 USD per unit"),
    ],
)
def test_unit_prices_read_naturally(rate: Rate, unit: str, text: str) -> None:
    assert portal_page.rate_text(rate, unit, "USD") == text


# ---- opening links ----------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


async def test_tampered_links_are_403(
    aclient: httpx.AsyncClient, browser: httpx.AsyncClient, factory: Factory
) -> None:
    world = await portfolio(factory)
    response = await aclient.post(f"/v0/subscriptions/{world.subscription.id}/portal", json={})
    token = token_of(response.json()["url"])
    payload, signature = token.split(".")
    assert (await browser.get(f"/portal/{token}")).status_code == 200

    claims = _payload(token)
    swapped = _b64(json.dumps(claims | {"sub": world.other_subscription.id}).encode())
    longer = _b64(json.dumps(claims | {"exp": claims["exp"] + 86_400}).encode())
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    foreign = portal_tokens.issue(
        portal_tokens.PortalClaim(
            world.subscription.id,
            world.subscription.merchant_id,
            "sandbox",
            datetime.now(UTC) + timedelta(hours=1),
        ),
        b"some other deployment's key",
    )
    for forged in (
        f"{swapped}.{signature}",
        f"{longer}.{signature}",
        f"{payload}.{flipped}",
        f"{payload}.",
        payload,
        f"{payload}.{signature}.extra",
        "not-a-token",
        foreign,
    ):
        page = await browser.get(f"/portal/{forged}")
        assert page.status_code == 403, forged
        assert "not valid" in page.text and world.subscription.id not in page.text


async def test_expired_links_are_410(
    aclient: httpx.AsyncClient, browser: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    sub = await factory.subscription()
    response = await aclient.post(f"/v0/subscriptions/{sub.id}/portal", json={"expiresIn": "PT1S"})
    url = response.json()["url"]
    await asyncio.sleep(2.1)  # the token carries whole seconds, rounded up
    page = await browser.get(url)
    assert page.status_code == 410 and "expired" in page.text and sub.id not in page.text

    # Signed by this deployment (the API runs in this process, with its per-process key) but long past.
    key = portal_tokens.signing_key(settings)
    stale = portal_tokens.PortalClaim(sub.id, sub.merchant_id, "sandbox", datetime(2026, 1, 1, tzinfo=UTC))
    assert (await browser.get(f"/portal/{portal_tokens.issue(stale, key)}")).status_code == 410


async def test_signed_claim_for_another_tenant_shows_nothing(
    browser: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    sub = await factory.subscription()
    later = datetime.now(UTC) + timedelta(hours=1)
    key = portal_tokens.signing_key(settings)
    for merchant_id, environment in ((new_id("organization"), "sandbox"), (sub.merchant_id, "live")):
        claim = portal_tokens.PortalClaim(sub.id, merchant_id, environment, later)
        page = await browser.get(f"/portal/{portal_tokens.issue(claim, key)}")
        assert page.status_code == 404 and sub.id not in page.text


# ---- tokens -----------------------------------------------------------------------------------------------


def test_tokens_round_trip_and_reject_what_they_must() -> None:
    key = b"k" * 32
    expires = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    claim = portal_tokens.PortalClaim("sub_1", "org_1", "sandbox", expires)
    token = portal_tokens.issue(claim, key)
    assert portal_tokens.verify(token, key, expires - timedelta(seconds=1)) == claim
    with pytest.raises(portal_tokens.TokenExpired):
        portal_tokens.verify(token, key, expires)
    with pytest.raises(portal_tokens.TokenInvalid):
        portal_tokens.verify(token, b"x" * 32, expires - timedelta(seconds=1))
    # A correctly signed payload of the wrong shape is still refused.
    for body in ({"sub": "s", "mer": "m", "env": "sandbox", "exp": "1893499200"}, {"sub": "s"}, [1, 2]):
        payload = _b64(json.dumps(body).encode())
        signature = _b64(portal_tokens._signature(payload, key))
        with pytest.raises(portal_tokens.TokenInvalid):
            portal_tokens.verify(f"{payload}.{signature}", key, expires - timedelta(days=1))


def test_configured_key_is_used(settings: Settings) -> None:
    configured = settings.model_copy(update={"secret_key": SecretStr("s3cret")})
    assert portal_tokens.signing_key(configured) == b"s3cret"
    assert len(portal_tokens.signing_key(settings)) == 32
