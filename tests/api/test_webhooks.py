"""Webhooks management API: SDK 0.6.3's `webhooks` resource driven through the SDK itself, and the
extensions (endpoints, secrets and their rotation, messages, attempts, resend, recover, event types) over
HTTP: validation, tenant and environment isolation, and what resend and recover do to delivery rows.

The test session's API has no Temporal (tests/conftest.py): every write here also proves that an
unreachable Temporal leaves the committed write standing instead of answering 5xx."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from svix.webhooks import Webhook, WebhookVerificationError

from api.portal_tokens import signing_key, verify_webhooks_portal
from db import outbox
from db import webhooks as store
from db.merchants import NewMerchant, create_merchant
from db.models import ApiKey, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage
from db.session import session_factory
from domain.api_keys import generate_key, hash_key
from domain.ids import new_id
from domain.webhook_events import EVENT_TYPES
from integrations import webhook_signing
from integrations.secret_box import SecretBox
from settings import Settings
from tests.helpers import assert_error, field_errors, relay_all, sdk063_python

RECEIVER = "https://receiver.example.com/hooks"


async def enable(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/v0/webhooks")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def endpoint(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v0/webhooks/endpoints", json={"url": RECEIVER} | body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def authorized(api_url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture
async def client(api_url: str, merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    async with authorized(api_url, merchant.api_key) as c:
        yield c


@pytest.fixture
async def other_client(api_url: str, other_merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    async with authorized(api_url, other_merchant.api_key) as c:
        yield c


@pytest.fixture
async def enabled(client: httpx.AsyncClient) -> dict[str, Any]:
    return await enable(client)


@pytest.fixture
async def live_merchant(engine: AsyncEngine) -> NewMerchant:
    async with session_factory(engine)() as session:
        return await create_merchant(session, "Live Merchant", "live")


@pytest.fixture
async def live_client(api_url: str, live_merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    async with authorized(api_url, live_merchant.api_key) as c:
        yield c


@pytest.fixture
async def same_merchant_live(
    api_url: str, engine: AsyncEngine, merchant: NewMerchant
) -> AsyncIterator[httpx.AsyncClient]:
    """A live key of the sandbox merchant `client` uses: the same organization, the other environment."""
    secret = generate_key("live")
    async with session_factory(engine)() as session:
        session.add(
            ApiKey(
                id=new_id("api_key"),
                merchant_id=merchant.merchant_id,
                user_id=merchant.user_id,
                environment="live",
                name="live key",
                key_hash=hash_key(secret),
                last4=secret[-4:],
            )
        )
        await session.commit()
    async with authorized(api_url, secret) as c:
        yield c


# ---- SDK 0.6.3 -------------------------------------------------------------------------------------------

SDK063 = """
import json, sys
from paygentic_sdk import Paygentic
url, key, merchant_id = sys.argv[1:4]
out = {}
with Paygentic(server_url=url, bearer_auth=key) as p:
    for name, call in [
        ("get_before", lambda: p.webhooks.get()),
        ("portal_before", lambda: p.webhooks.get_portal()),
        ("update_before", lambda: p.webhooks.update(enabled=False)),
        ("enable", lambda: p.webhooks.enable(request={"merchant_id": merchant_id})),
        ("enable_again", lambda: p.webhooks.enable()),
        ("get", lambda: p.webhooks.get(request={"merchant_id": merchant_id})),
        ("update_off", lambda: p.webhooks.update(enabled=False, merchant_id=merchant_id)),
        ("portal_paused", lambda: p.webhooks.get_portal()),
        ("update_on", lambda: p.webhooks.update(enabled=True)),
        ("disable", lambda: p.webhooks.disable()),
        ("get_disabled", lambda: p.webhooks.get()),
        ("enable_disabled", lambda: p.webhooks.enable()),
        ("resume", lambda: p.webhooks.update(enabled=True)),
        ("portal", lambda: p.webhooks.get_portal(request={"merchant_id": merchant_id})),
        ("get_other", lambda: p.webhooks.get(request={"merchant_id": "org_someoneelse"})),
        ("update_other", lambda: p.webhooks.update(enabled=False, merchant_id="org_someoneelse")),
        ("disable_other", lambda: p.webhooks.disable(request={"merchant_id": "org_someoneelse"})),
        ("portal_other", lambda: p.webhooks.get_portal(request={"merchant_id": "org_someoneelse"})),
    ]:
        try:
            result = call()
            out[name] = None if result is None else result.model_dump(mode="json", by_alias=True)
        except Exception as exc:
            status = getattr(getattr(exc, "raw_response", None), "status_code", None)
            data = getattr(exc, "data", None)
            code = getattr(data, "code", None)
            out[name] = {"raised": type(exc).__name__, "status": status, "code": code}
print(json.dumps(out))
"""


async def test_sdk_063_webhooks_resource(api_url: str, merchant: NewMerchant, settings: Settings) -> None:
    run = await asyncio.to_thread(
        subprocess.run,
        [sdk063_python(), "-c", SDK063, api_url, merchant.api_key, merchant.merchant_id],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])

    # Never enabled: 404 for read, update and the portal.
    for name in ("get_before", "portal_before", "update_before"):
        assert out[name] == {"raised": "Error", "status": 404, "code": None}, (name, out[name])

    enabled = out["enable"]
    assert enabled["object"] == "webhooks" and enabled["enabled"] is True
    assert enabled["applicationId"].startswith("app_") and enabled["merchantId"] == merchant.merchant_id
    assert out["enable_again"] == {"raised": "BadRequest", "status": 400, "code": "DUPLICATE_RESOURCE"}
    assert out["get"] == enabled
    assert out["update_off"]["enabled"] is False
    assert out["update_off"]["applicationId"] == enabled["applicationId"]
    assert out["portal_paused"]["status"] == 404
    assert out["update_on"]["enabled"] is True
    assert out["disable"] is None  # 204
    assert out["get_disabled"]["enabled"] is False
    assert out["enable_disabled"]["code"] == "DUPLICATE_RESOURCE"  # a paused configuration still exists
    assert out["resume"]["enabled"] is True

    portal = out["portal"]
    assert portal["object"] == "webhookPortal"
    prefix = f"{settings.base_url}/webhooks/portal/"
    assert portal["url"].startswith(prefix)
    expires = datetime.fromisoformat(portal["expiresAt"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    claim = verify_webhooks_portal(portal["url"].removeprefix(prefix), signing_key(settings))
    assert (claim.merchant_id, claim.environment) == (merchant.merchant_id, "sandbox")

    for name in ("get_other", "update_other", "disable_other", "portal_other"):
        assert out[name]["status"] == 403, (name, out[name])


async def test_webhooks_are_per_environment(
    client: httpx.AsyncClient, enabled: dict[str, Any], same_merchant_live: httpx.AsyncClient
) -> None:
    assert_error(await same_merchant_live.get("/v0/webhooks"), 404)
    live = (await same_merchant_live.post("/v0/webhooks")).json()
    assert live["applicationId"] != enabled["applicationId"]
    assert (await same_merchant_live.patch("/v0/webhooks", json={"enabled": False})).json()[
        "enabled"
    ] is False
    assert (await client.get("/v0/webhooks")).json()["enabled"] is True


async def test_patch_webhooks_requires_a_boolean(client: httpx.AsyncClient, enabled: dict[str, Any]) -> None:
    assert field_errors(await client.patch("/v0/webhooks", json={})) == {"enabled": "is required"}
    assert "enabled" in field_errors(await client.patch("/v0/webhooks", json={"enabled": "yes"}))


# ---- endpoints -------------------------------------------------------------------------------------------


async def test_endpoints_need_webhooks_enabled(client: httpx.AsyncClient) -> None:
    body = assert_error(await client.post("/v0/webhooks/endpoints", json={"url": RECEIVER}), 409, "conflict")
    assert body["code"] == "WEBHOOKS_NOT_ENABLED" and "POST /v0/webhooks" in body["message"]
    await enable(client)
    await client.patch("/v0/webhooks", json={"enabled": False})
    await endpoint(client)  # paused webhooks still take endpoints


async def test_endpoint_lifecycle(client: httpx.AsyncClient, enabled: dict[str, Any]) -> None:
    created = await endpoint(
        client,
        description="orders service",
        filterTypes=["invoice.paid.v0", "subscription.created.v0", "invoice.paid.v0"],
        rateLimit=50,
    )
    assert created["object"] == "webhookEndpoint" and created["id"].startswith("ep_")
    assert created["url"] == RECEIVER and created["description"] == "orders service"
    assert created["filterTypes"] == ["invoice.paid.v0", "subscription.created.v0"]
    assert (created["disabled"], created["disabledReason"], created["rateLimit"]) == (False, None, 50)
    assert "secret" not in json.dumps(created).lower()
    ep = created["id"]

    assert (await client.get(f"/v0/webhooks/endpoints/{ep}")).json() == created
    second = await endpoint(client, disabled=True)
    assert (second["disabled"], second["disabledReason"], second["filterTypes"]) == (True, "manual", None)
    listed = (await client.get("/v0/webhooks/endpoints", params={"limit": 1})).json()
    assert listed["object"] == "list" and [e["id"] for e in listed["data"]] == [ep]
    assert listed["pagination"] == {"limit": 1, "offset": 0, "total": 2, "hasMore": True}

    off = (await client.patch(f"/v0/webhooks/endpoints/{ep}", json={"disabled": True})).json()
    assert (off["disabled"], off["disabledReason"]) == (True, "manual")
    changed = (
        await client.patch(
            f"/v0/webhooks/endpoints/{ep}",
            json={
                "disabled": False,
                "filterTypes": None,
                "rateLimit": None,
                "url": "https://b.example.com/x",
            },
        )
    ).json()
    assert (changed["disabled"], changed["disabledReason"], changed["filterTypes"]) == (False, None, None)
    assert (changed["rateLimit"], changed["url"]) == (None, "https://b.example.com/x")
    assert changed["description"] == "orders service" and changed["updatedAt"] >= created["updatedAt"]

    delete = await client.delete(f"/v0/webhooks/endpoints/{ep}")
    assert delete.status_code == 204 and delete.content == b""
    for response in (
        (await client.get(f"/v0/webhooks/endpoints/{ep}")),
        (await client.patch(f"/v0/webhooks/endpoints/{ep}", json={"disabled": True})),
        (await client.delete(f"/v0/webhooks/endpoints/{ep}")),
        (await client.get(f"/v0/webhooks/endpoints/{ep}/secret")),
        (await client.post(f"/v0/webhooks/endpoints/{ep}/secret/rotate")),
        (await client.get(f"/v0/webhooks/endpoints/{ep}/attempts")),
    ):
        assert_error(response, 404, "not_found")
    assert [e["id"] for e in (await client.get("/v0/webhooks/endpoints")).json()["data"]] == [second["id"]]


async def test_a_write_stands_when_temporal_is_unreachable(
    client: httpx.AsyncClient,
    enabled: dict[str, Any],
    engine: AsyncEngine,
    merchant: NewMerchant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The session's API points at a Temporal that is not there: the wake after the commit fails, is
    logged, and the answer is the write's (the relay's backlog wake delivers later)."""
    ep = (await endpoint(client))["id"]
    msg = await emit(engine, merchant, "invoice.paid.v0", {"id": "inv_t", "object": "invoice"})
    await set_delivery(engine, msg, ep, status="failed", attempts=8, round_attempts=8)
    caplog.set_level(logging.WARNING, logger="api.app_state")
    patched = await client.patch(f"/v0/webhooks/endpoints/{ep}", json={"rateLimit": 3})
    assert patched.status_code == 200 and patched.json()["rateLimit"] == 3
    resent = await client.post(f"/v0/webhooks/messages/{msg}/resend", json={"endpointId": ep})
    assert resent.status_code == 202 and resent.json()["status"] == "pending"
    assert (await client.patch("/v0/webhooks", json={"enabled": False})).status_code == 200
    assert (await client.delete(f"/v0/webhooks/endpoints/{ep}")).status_code == 204
    async with session_factory(engine)() as session:
        row = await session.get_one(WebhookEndpoint, ep)
        assert row.rate_limit == 3 and row.deleted_at is not None
    woken = [r.getMessage() for r in caplog.records if "not woken" in r.getMessage()]
    assert len(woken) == 4 and all(ep in m for m in woken), woken


async def test_enabling_an_endpoint_disabled_for_failing_clears_the_streak(
    client: httpx.AsyncClient, enabled: dict[str, Any], engine: AsyncEngine
) -> None:
    ep = (await endpoint(client))["id"]
    async with session_factory(engine)() as session:
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == ep)
            .values(
                disabled=True, disabled_reason="failing", failing_since=datetime.now(UTC) - timedelta(days=6)
            )
        )
        await session.commit()
    shown = (await client.get(f"/v0/webhooks/endpoints/{ep}")).json()
    assert (shown["disabled"], shown["disabledReason"]) == (True, "failing")
    # Changing something else keeps the reason; enabling clears it and the failure streak.
    assert (await client.patch(f"/v0/webhooks/endpoints/{ep}", json={"rateLimit": 5})).json()[
        "disabledReason"
    ] == "failing"
    assert (await client.patch(f"/v0/webhooks/endpoints/{ep}", json={"disabled": False})).json()[
        "disabledReason"
    ] is None
    async with session_factory(engine)() as session:
        row = await session.get_one(WebhookEndpoint, ep)
        assert (row.disabled, row.disabled_reason, row.failing_since) == (False, None, None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hooks", "http:// or https://"),
        ("example.com/hooks", "http:// or https://"),
        ("https:///hooks", "must name a host"),
        ("https://example.com:99999/", "invalid host or port"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com/" + "a" * 2030, "at most 2048"),
    ],
)
async def test_endpoint_url_is_validated(
    client: httpx.AsyncClient, enabled: dict[str, Any], url: str, message: str
) -> None:
    errors = field_errors(await client.post("/v0/webhooks/endpoints", json={"url": url}))
    assert message in errors["url"], errors


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://receiver.example.com/hooks", "https:// in the live environment"),
        ("https://169.254.169.254/latest/meta-data", "metadata address 169.254.169.254"),
        ("https://169.254.10.1/", "link-local address"),
        ("https://[fe80::1]/", "link-local address fe80::1"),
        ("https://0.0.0.0/", "unspecified address"),
        ("https://[::]/", "unspecified address"),
        ("https://metadata.google.internal/computeMetadata/v1/", "metadata service"),
        ("https://METADATA.google.internal./", "metadata service"),
        ("https://[fd00:ec2::254]/", "metadata address fd00:ec2::254"),
        ("https://100.100.100.200/", "metadata address 100.100.100.200"),
        ("https://2852039166/", "metadata address 169.254.169.254"),  # 169.254.169.254 as one number
        ("https://[::ffff:169.254.169.254]/", "metadata address 169.254.169.254"),
    ],
)
async def test_live_endpoints_are_https_and_not_internal(
    live_client: httpx.AsyncClient, url: str, message: str
) -> None:
    await enable(live_client)
    errors = field_errors(await live_client.post("/v0/webhooks/endpoints", json={"url": url}))
    assert message in errors["url"], errors
    ep = (await endpoint(live_client))["id"]
    errors = field_errors(await live_client.patch(f"/v0/webhooks/endpoints/{ep}", json={"url": url}))
    assert message in errors["url"], errors


async def test_sandbox_endpoints_may_be_http_and_local(
    client: httpx.AsyncClient, enabled: dict[str, Any]
) -> None:
    for url in ("http://localhost:8080/hooks", "http://169.254.169.254/", "http://[fe80::1]/"):
        assert (await endpoint(client, url=url))["url"] == url


async def test_live_endpoints_may_be_private_addresses(live_client: httpx.AsyncClient) -> None:
    await enable(live_client)
    assert (await endpoint(live_client, url="https://10.1.2.3/hooks"))["url"] == "https://10.1.2.3/hooks"


async def test_endpoint_fields_are_validated(client: httpx.AsyncClient, enabled: dict[str, Any]) -> None:
    async def errors(**body: Any) -> dict[str, str]:
        return field_errors(await client.post("/v0/webhooks/endpoints", json={"url": RECEIVER} | body))

    unknown = (await errors(filterTypes=["invoice.paid.v0", "invoice.exploded.v0", "nope"]))["filterTypes"]
    assert "invoice.exploded.v0, nope" in unknown and "GET /v0/webhooks/eventTypes" in unknown
    assert "at least one event type" in (await errors(filterTypes=[]))["filterTypes"]
    assert [f for f in await errors(filterTypes=[5]) if f.startswith("filterTypes")], (
        "a number is no event type"
    )
    for bad in (0, -1, 10_001, "5", 1.5, True):
        assert "rateLimit" in await errors(rateLimit=bad), bad
    assert "description" in await errors(description="x" * 1025)
    assert "disabled" in await errors(disabled="yes")
    assert field_errors(await client.post("/v0/webhooks/endpoints", json={})) == {"url": "is required"}

    ep = (await endpoint(client))["id"]
    patch = f"/v0/webhooks/endpoints/{ep}"
    assert "cannot be null" in field_errors(await client.patch(patch, json={"url": None}))["url"]
    assert (
        "cannot be null" in field_errors(await client.patch(patch, json={"description": None}))["description"]
    )
    assert "cannot be null" in field_errors(await client.patch(patch, json={"disabled": None}))["disabled"]
    assert "nope" in field_errors(await client.patch(patch, json={"filterTypes": ["nope"]}))["filterTypes"]
    assert (await client.patch(patch, json={})).status_code == 200


async def test_event_types_are_the_catalog(client: httpx.AsyncClient) -> None:
    page = (await client.get("/v0/webhooks/eventTypes", params={"limit": 100})).json()
    assert page["object"] == "list" and page["pagination"]["total"] == len(EVENT_TYPES)
    names = [t["name"] for t in page["data"]]
    assert names == list(EVENT_TYPES)
    paid = next(t for t in page["data"] if t["name"] == "invoice.paid.v0")
    assert paid["object"] == "webhookEventType" and paid["resource"] == "invoice"
    assert paid["description"] == EVENT_TYPES["invoice.paid.v0"].description
    assert paid["example"] == EVENT_TYPES["invoice.paid.v0"].example
    second = (await client.get("/v0/webhooks/eventTypes", params={"limit": 2, "offset": 2})).json()
    assert [t["name"] for t in second["data"]] == names[2:4]


# ---- secrets ---------------------------------------------------------------------------------------------


async def test_secret_is_sealed_at_rest_and_only_the_secret_endpoint_shows_it(
    client: httpx.AsyncClient,
    enabled: dict[str, Any],
    engine: AsyncEngine,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ep = (await endpoint(client))["id"]
    key = (await client.get(f"/v0/webhooks/endpoints/{ep}/secret")).json()["key"]
    assert key.startswith("whsec_")
    async with session_factory(engine)() as session:
        row = await session.get_one(WebhookEndpoint, ep)
    assert key not in row.secret and key.removeprefix("whsec_") not in row.secret
    assert SecretBox(settings.secret_key.get_secret_value()).open(row.secret) == key
    shown = [
        (await client.get(f"/v0/webhooks/endpoints/{ep}")).text,
        (await client.get("/v0/webhooks/endpoints")).text,
        (await client.patch(f"/v0/webhooks/endpoints/{ep}", json={"description": "x"})).text,
    ]
    assert all(key.removeprefix("whsec_") not in text for text in shown)
    assert key.removeprefix("whsec_") not in caplog.text


def verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


async def test_rotation_signs_with_both_secrets_for_24_hours(
    client: httpx.AsyncClient, enabled: dict[str, Any], engine: AsyncEngine, settings: Settings
) -> None:
    ep = (await endpoint(client))["id"]
    old = (await client.get(f"/v0/webhooks/endpoints/{ep}/secret")).json()["key"]
    before = datetime.now(UTC)
    rotated = await client.post(f"/v0/webhooks/endpoints/{ep}/secret/rotate")
    assert rotated.status_code == 204 and rotated.content == b""
    new = (await client.get(f"/v0/webhooks/endpoints/{ep}/secret")).json()["key"]
    assert new.startswith("whsec_") and new != old

    box = SecretBox(settings.secret_key.get_secret_value())
    async with session_factory(engine)() as session:
        row = await session.get_one(WebhookEndpoint, ep)
    assert row.previous_secret_expires_at is not None
    assert (
        before + timedelta(hours=24)
        <= row.previous_secret_expires_at
        <= datetime.now(UTC) + timedelta(hours=24)
    )

    body = (
        b'{"eventType":"invoice.paid.v0","eventId":"evt_1","timestamp":"2027-01-01T00:00:00.000Z","data":{}}'
    )
    timestamp = int(datetime.now(UTC).timestamp())

    def signed_at(now: datetime) -> dict[str, str]:
        return webhook_signing.headers(store.signing_secrets(row, box, now), "msg_1", timestamp, body)

    during = signed_at(datetime.now(UTC) + timedelta(hours=23))
    assert len(during["svix-signature"].split(" ")) == 2
    assert verifies(new, body, during) and verifies(old, body, during)
    after = signed_at(row.previous_secret_expires_at + timedelta(seconds=1))
    assert verifies(new, body, after) and not verifies(old, body, after)

    # A second rotation within the overlap: only the two newest sign.
    await client.post(f"/v0/webhooks/endpoints/{ep}/secret/rotate")
    newest = (await client.get(f"/v0/webhooks/endpoints/{ep}/secret")).json()["key"]
    async with session_factory(engine)() as session:
        row = await session.get_one(WebhookEndpoint, ep)
    again = signed_at(datetime.now(UTC))
    assert verifies(newest, body, again) and verifies(new, body, again) and not verifies(old, body, again)


# ---- messages, attempts, resend, recover -----------------------------------------------------------------


async def emit(engine: AsyncEngine, merchant: NewMerchant, event_type: str, data: dict[str, Any]) -> str:
    """An outbox row as a state change writes it, relayed into a message (and deliveries) by the relay."""
    async with session_factory(engine)() as session:
        row = outbox.record(session, merchant.merchant_id, merchant.environment, event_type, data)
        await session.commit()
    await relay_all(session_factory(engine))
    return row.id


async def attempt(
    engine: AsyncEngine, message_id: str, endpoint_id: str, *, succeeded: bool, status_code: int | None
) -> None:
    """One attempt as the endpoint workflow's delivery activity records it, with the delivery's new state."""
    async with session_factory(engine)() as session:
        delivery = await session.scalar(
            select(WebhookDelivery).where(
                WebhookDelivery.message_id == message_id, WebhookDelivery.endpoint_id == endpoint_id
            )
        )
        assert delivery is not None
        delivery.attempts += 1
        delivery.round_attempts += 1
        retry = None if succeeded else datetime.now(UTC) + timedelta(seconds=5)
        delivery.status = "delivered" if succeeded else "pending"
        delivery.next_attempt_at = retry
        session.add(
            WebhookAttempt(
                id=new_id("webhook_attempt"),
                delivery_id=delivery.id,
                message_id=message_id,
                endpoint_id=endpoint_id,
                attempt=delivery.attempts,
                trigger="scheduled",
                succeeded=succeeded,
                status_code=status_code,
                response="ok" if succeeded else "boom",
                duration_ms=12,
                created_at=datetime.now(UTC),
                next_attempt_at=retry,
            )
        )
        await session.commit()


async def set_delivery(engine: AsyncEngine, message_id: str, endpoint_id: str, **values: Any) -> None:
    async with session_factory(engine)() as session:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.message_id == message_id, WebhookDelivery.endpoint_id == endpoint_id)
            .values(**values)
        )
        await session.commit()


async def delivery_of(engine: AsyncEngine, message_id: str, endpoint_id: str) -> WebhookDelivery | None:
    async with session_factory(engine)() as session:
        return await session.scalar(
            select(WebhookDelivery).where(
                WebhookDelivery.message_id == message_id, WebhookDelivery.endpoint_id == endpoint_id
            )
        )


async def test_message_log_with_deliveries_and_attempts(
    client: httpx.AsyncClient, enabled: dict[str, Any], engine: AsyncEngine, merchant: NewMerchant
) -> None:
    every = (await endpoint(client))["id"]
    invoices_only = (await endpoint(client, filterTypes=["invoice.paid.v0"]))["id"]
    created = await emit(
        engine, merchant, "subscription.created.v0", {"id": "sub_1", "object": "subscription"}
    )
    paid = await emit(engine, merchant, "invoice.paid.v0", {"id": "inv_1", "object": "invoice"})
    await attempt(engine, paid, every, succeeded=False, status_code=500)
    await attempt(engine, paid, every, succeeded=True, status_code=200)

    page = (await client.get("/v0/webhooks/messages")).json()
    assert [m["id"] for m in page["data"]] == [paid, created]  # newest first
    message = (await client.get(f"/v0/webhooks/messages/{paid}")).json()
    assert message == page["data"][0]
    assert message["object"] == "webhookMessage" and message["eventType"] == "invoice.paid.v0"
    assert message["payload"]["eventType"] == "invoice.paid.v0"
    assert message["payload"]["eventId"] == message["eventId"] and message["eventId"].startswith("evt_")
    assert message["payload"]["data"] == {"id": "inv_1", "object": "invoice"}
    by_endpoint = {d["endpointId"]: d for d in message["deliveries"]}
    assert by_endpoint[every]["status"] == "delivered" and by_endpoint[every]["attempts"] == 2
    assert by_endpoint[invoices_only]["status"] == "pending"
    assert by_endpoint[invoices_only]["attempts"] == 0 and by_endpoint[invoices_only]["nextAttemptAt"] is None
    assert [d["endpointId"] for d in page["data"][1]["deliveries"]] == [every]  # the filter left it out

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/v0/webhooks/messages", params=params)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["data"]]

    assert await ids(eventType="subscription.created.v0") == [created]
    assert await ids(endpointId=invoices_only) == [paid]
    assert await ids(status="delivered") == [paid]
    assert await ids(status="pending") == [paid, created]  # to invoices_only, and to every
    assert await ids(status="pending", endpointId=every) == [created]
    assert await ids(status="delivered", endpointId=every) == [paid]
    created_at = (await client.get(f"/v0/webhooks/messages/{created}")).json()["createdAt"]
    assert await ids(since=created_at) == [paid, created]
    assert await ids(until=created_at) == []
    assert await ids(limit=1, offset=1) == [created]
    assert_error(await client.get("/v0/webhooks/messages", params={"status": "lost"}), 400)
    assert_error(await client.get("/v0/webhooks/messages", params={"since": "yesterday"}), 400)

    attempts = (await client.get(f"/v0/webhooks/messages/{paid}/attempts")).json()
    assert [(a["attempt"], a["succeeded"], a["responseStatusCode"]) for a in attempts["data"]] == [
        (2, True, 200),
        (1, False, 500),
    ]
    failed = attempts["data"][1]
    assert failed["object"] == "webhookAttempt" and failed["id"].startswith("atmpt_")
    assert (failed["messageId"], failed["endpointId"], failed["trigger"]) == (paid, every, "scheduled")
    assert (failed["response"], failed["responseDurationMs"]) == ("boom", 12)
    assert failed["nextAttemptAt"] is not None and attempts["data"][0]["nextAttemptAt"] is None
    assert (await client.get(f"/v0/webhooks/endpoints/{every}/attempts")).json()["data"] == attempts["data"]
    assert (await client.get(f"/v0/webhooks/endpoints/{invoices_only}/attempts")).json()["data"] == []
    assert_error(await client.get("/v0/webhooks/messages/msg_nope"), 404)
    assert_error(await client.get("/v0/webhooks/messages/msg_nope/attempts"), 404)


async def test_resend_restarts_the_schedule(
    client: httpx.AsyncClient, enabled: dict[str, Any], engine: AsyncEngine, merchant: NewMerchant
) -> None:
    ep = (await endpoint(client))["id"]
    later = (await endpoint(client, filterTypes=["customer.created.v0"]))["id"]
    msg = await emit(engine, merchant, "invoice.paid.v0", {"id": "inv_2", "object": "invoice"})
    await set_delivery(engine, msg, ep, status="failed", attempts=8, round_attempts=8)

    response = await client.post(f"/v0/webhooks/messages/{msg}/resend", json={"endpointId": ep})
    assert response.status_code == 202, response.text
    shown = response.json()
    assert shown["object"] == "webhookDelivery" and (shown["messageId"], shown["endpointId"]) == (msg, ep)
    assert (shown["status"], shown["attempts"], shown["nextAttemptAt"]) == ("pending", 8, None)
    delivery = await delivery_of(engine, msg, ep)
    assert delivery is not None
    assert (delivery.status, delivery.attempts, delivery.round_attempts, delivery.next_attempt_at) == (
        "pending",
        8,
        0,
        None,
    )

    # An endpoint whose filter left the message out gets a delivery now.
    assert await delivery_of(engine, msg, later) is None
    assert (
        await client.post(f"/v0/webhooks/messages/{msg}/resend", json={"endpointId": later})
    ).status_code == 202
    added = await delivery_of(engine, msg, later)
    assert added is not None and added.status == "pending" and added.resource_key == delivery.resource_key

    assert_error(
        await client.post(f"/v0/webhooks/messages/{msg}/resend", json={"endpointId": "ep_nope"}), 404
    )
    assert_error(await client.post("/v0/webhooks/messages/msg_nope/resend", json={"endpointId": ep}), 404)
    assert field_errors(await client.post(f"/v0/webhooks/messages/{msg}/resend", json={})) == {
        "endpointId": "is required"
    }
    await client.delete(f"/v0/webhooks/endpoints/{later}")
    assert_error(await client.post(f"/v0/webhooks/messages/{msg}/resend", json={"endpointId": later}), 404)


async def test_recover_resends_failed_and_skipped_in_the_window(
    client: httpx.AsyncClient, enabled: dict[str, Any], engine: AsyncEngine, merchant: NewMerchant
) -> None:
    ep = (await endpoint(client))["id"]
    old = await emit(engine, merchant, "invoice.paid.v0", {"id": "inv_old", "object": "invoice"})
    failed = await emit(engine, merchant, "invoice.paid.v0", {"id": "inv_f", "object": "invoice"})
    delivered = await emit(engine, merchant, "invoice.paid.v0", {"id": "inv_d", "object": "invoice"})
    # Paused webhooks: the relay records the message as skipped for the endpoint.
    await client.patch("/v0/webhooks", json={"enabled": False})
    skipped = await emit(engine, merchant, "invoice.paid.v0", {"id": "inv_s", "object": "invoice"})
    await client.patch("/v0/webhooks", json={"enabled": True})
    assert (await delivery_of(engine, skipped, ep)).status == "skipped"  # type: ignore[union-attr]
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    async with session_factory(engine)() as session:
        # The old message happened before the window (a message has its outbox row's time).
        await session.execute(
            update(WebhookMessage).where(WebhookMessage.id == old).values(created_at=hour_ago)
        )
        await session.commit()
    await set_delivery(engine, old, ep, status="failed", attempts=8, round_attempts=8)
    await set_delivery(engine, failed, ep, status="failed", attempts=8, round_attempts=8)
    await set_delivery(engine, delivered, ep, status="delivered", attempts=1, round_attempts=1)

    since = datetime.now(UTC) - timedelta(minutes=30)
    response = await client.post(f"/v0/webhooks/endpoints/{ep}/recover", json={"since": since.isoformat()})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["object"] == "webhookRecovery" and (body["endpointId"], body["recovered"]) == (ep, 2)
    for msg, status in ((old, "failed"), (failed, "pending"), (delivered, "delivered"), (skipped, "pending")):
        row = await delivery_of(engine, msg, ep)
        assert row is not None and row.status == status, (msg, row and row.status)
    recovered = await delivery_of(engine, failed, ep)
    assert recovered is not None and (recovered.round_attempts, recovered.attempts) == (0, 8)

    # [since, until): an until before the old message's time leaves everything.
    window = {"since": (hour_ago - timedelta(minutes=1)).isoformat(), "until": hour_ago.isoformat()}
    assert (await client.post(f"/v0/webhooks/endpoints/{ep}/recover", json=window)).json()["recovered"] == 0
    window["until"] = (hour_ago + timedelta(seconds=1)).isoformat()
    assert (await client.post(f"/v0/webhooks/endpoints/{ep}/recover", json=window)).json()["recovered"] == 1

    bad = {"since": since.isoformat(), "until": since.isoformat()}
    assert (
        "must be before"
        in field_errors(await client.post(f"/v0/webhooks/endpoints/{ep}/recover", json=bad))["until"]
    )
    future = {"since": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    assert "since" in field_errors(await client.post(f"/v0/webhooks/endpoints/{ep}/recover", json=future))
    assert field_errors(await client.post(f"/v0/webhooks/endpoints/{ep}/recover", json={})) == {
        "since": "is required"
    }
    assert_error(
        (await client.post("/v0/webhooks/endpoints/ep_nope/recover", json={"since": since.isoformat()})), 404
    )


# ---- isolation -------------------------------------------------------------------------------------------


async def test_another_merchant_sees_nothing(
    client: httpx.AsyncClient,
    other_client: httpx.AsyncClient,
    enabled: dict[str, Any],
    engine: AsyncEngine,
    merchant: NewMerchant,
) -> None:
    ep = (await endpoint(client))["id"]
    msg = await emit(engine, merchant, "invoice.paid.v0", {"id": "inv_3", "object": "invoice"})
    await enable(other_client)
    theirs = (await endpoint(other_client))["id"]
    since = {"since": (datetime.now(UTC) - timedelta(days=1)).isoformat()}
    for response in (
        (await other_client.get(f"/v0/webhooks/endpoints/{ep}")),
        (await other_client.patch(f"/v0/webhooks/endpoints/{ep}", json={"disabled": True})),
        (await other_client.delete(f"/v0/webhooks/endpoints/{ep}")),
        (await other_client.get(f"/v0/webhooks/endpoints/{ep}/secret")),
        (await other_client.post(f"/v0/webhooks/endpoints/{ep}/secret/rotate")),
        (await other_client.get(f"/v0/webhooks/endpoints/{ep}/attempts")),
        (await other_client.post(f"/v0/webhooks/endpoints/{ep}/recover", json=since)),
        (await other_client.get(f"/v0/webhooks/messages/{msg}")),
        (await other_client.get(f"/v0/webhooks/messages/{msg}/attempts")),
        (await other_client.post(f"/v0/webhooks/messages/{msg}/resend", json={"endpointId": theirs})),
        (await other_client.get("/v0/webhooks/messages", params={"endpointId": ep})),
        # Their own message id with someone else's endpoint, and the reverse.
        (await client.post(f"/v0/webhooks/messages/{msg}/resend", json={"endpointId": theirs})),
    ):
        assert_error(response, 404, "not_found")
    assert [e["id"] for e in (await other_client.get("/v0/webhooks/endpoints")).json()["data"]] == [theirs]
    assert (await other_client.get("/v0/webhooks/messages")).json()["data"] == []
    shown = (await client.get(f"/v0/webhooks/endpoints/{ep}")).json()
    assert shown["disabled"] is False  # untouched by the other merchant's PATCH


async def test_environments_are_separate(
    client: httpx.AsyncClient,
    same_merchant_live: httpx.AsyncClient,
    enabled: dict[str, Any],
    engine: AsyncEngine,
    merchant: NewMerchant,
) -> None:
    ep = (await endpoint(client))["id"]
    msg = await emit(engine, merchant, "invoice.paid.v0", {"id": "inv_4", "object": "invoice"})
    live = same_merchant_live
    assert_error(
        await live.post("/v0/webhooks/endpoints", json={"url": RECEIVER}), 409
    )  # not enabled in live
    await enable(live)
    assert (await live.get("/v0/webhooks/endpoints")).json()["data"] == []
    assert (await live.get("/v0/webhooks/messages")).json()["data"] == []
    assert_error(await live.get(f"/v0/webhooks/endpoints/{ep}"), 404)
    assert_error(await live.get(f"/v0/webhooks/endpoints/{ep}/secret"), 404)
    assert_error(await live.get(f"/v0/webhooks/messages/{msg}"), 404)
    live_ep = (await endpoint(live))["id"]
    assert_error(await live.post(f"/v0/webhooks/messages/{msg}/resend", json={"endpointId": live_ep}), 404)
    assert_error(await client.post(f"/v0/webhooks/messages/{msg}/resend", json={"endpointId": live_ep}), 404)
    # A live message reaches the live endpoint only.
    live_merchant = NewMerchant(merchant.merchant_id, merchant.user_id, "", "live")
    live_msg = await emit(engine, live_merchant, "invoice.paid.v0", {"id": "inv_5", "object": "invoice"})
    assert [m["id"] for m in (await live.get("/v0/webhooks/messages")).json()["data"]] == [live_msg]
    assert [
        d["endpointId"] for d in (await live.get(f"/v0/webhooks/messages/{live_msg}")).json()["deliveries"]
    ] == [live_ep]
    assert [m["id"] for m in (await client.get("/v0/webhooks/messages")).json()["data"]] == [msg]
