"""Installations API without a workflow (D15): every check of a connect made before Temporal is asked
(the key's format and mode, never echoed; the subscription's tenant, plan and status; importFrom's window;
one live installation per subscription), a 503 that stores nothing when Temporal is away, and list, get and
the idempotent disconnect of a disconnected installation. Connecting for real:
tests/workflows/test_sources_api.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import SourceInstallation
from tests.api.source_harness import PAID, World, api_client, installation, make_world
from tests.factories import Factory
from tests.helpers import assert_error, field_errors

KEY = "sk_test_Q7secretKEY9876"


@pytest.fixture
async def world(api_url: str, engine: AsyncEngine, merchant: NewMerchant) -> AsyncIterator[World]:
    async with api_client(api_url, merchant) as http:
        yield await make_world(http, Factory(engine, merchant))


@pytest.fixture
async def other(api_url: str, engine: AsyncEngine, other_merchant: NewMerchant) -> AsyncIterator[World]:
    async with api_client(api_url, other_merchant) as http:
        yield await make_world(http, Factory(engine, other_merchant))


async def stored(engine: AsyncEngine, merchant: NewMerchant) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(SourceInstallation)
        return int(
            await conn.scalar(query.where(SourceInstallation.merchant_id == merchant.merchant_id)) or 0
        )


async def connect(world: World, source_id: str, **body: Any) -> Any:
    return await world.http.post(f"/v0/sources/{source_id}/installations", json=body)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("sk_Q7secret", "is not a Stripe secret key: use a secret key (sk_test_… or sk_live_…)"),
        ("pk_test_Q7secret", "is not a Stripe secret key"),
        ("sk_test_Q7 secret", "is not a Stripe secret key"),
        (
            "sk_live_Q7secret",
            "is a Stripe live key, but this is a sandbox account: connect a Stripe test key",
        ),
        ("rk_live_Q7secret", "is a Stripe live key"),
    ],
)
async def test_the_key_is_checked_and_never_echoed(
    world: World, engine: AsyncEngine, key: str, message: str
) -> None:
    source = await world.source()
    sub = await world.factory.subscription(world.plan)
    response = await connect(world, source["id"], subscriptionId=sub.id, stripeSecretKey=key)
    errors = field_errors(response)
    assert list(errors) == ["stripeSecretKey"] and message in errors["stripeSecretKey"]
    assert "Q7" not in response.text
    assert await stored(engine, world.factory.merchant) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"stripeSecretKey": 5},
        {"stripeSecretKey": ""},
        {"stripeSecretKey": "sk_test_Q7" + "x" * 300},
        {"stripeSecretKey": ["sk_test_Q7secret"]},
    ],
)
async def test_a_malformed_key_field_is_not_echoed_either(world: World, body: dict[str, Any]) -> None:
    source = await world.source()
    sub = await world.factory.subscription(world.plan)
    response = await connect(world, source["id"], subscriptionId=sub.id, **body)
    assert "stripeSecretKey" in field_errors(response)
    assert "Q7" not in response.text


async def test_the_subscription_must_be_the_callers_on_the_plan_and_live(
    world: World, other: World, engine: AsyncEngine
) -> None:
    source = await world.source()
    theirs = await other.factory.subscription(other.plan)
    response = await connect(world, source["id"], subscriptionId=theirs.id, stripeSecretKey=KEY)
    assert assert_error(response, 404)["message"] == f"Subscription {theirs.id!r} was not found"
    assert_error(await connect(world, source["id"], subscriptionId="sub_unknown", stripeSecretKey=KEY), 404)

    other_plan = await world.factory.plan(product_id=world.product.id)
    elsewhere = await world.factory.subscription(other_plan)
    errors = field_errors(
        await connect(world, source["id"], subscriptionId=elsewhere.id, stripeSecretKey=KEY)
    )
    assert errors["subscriptionId"] == (
        f"is a subscription to plan {other_plan.id}, but source {source['id']} belongs to plan "
        f"{world.plan.id}: connect a subscription to that plan"
    )

    ended = await world.factory.subscription(world.plan, status="terminated")
    body = assert_error(await connect(world, source["id"], subscriptionId=ended.id, stripeSecretKey=KEY), 409)
    assert "is terminated" in body["message"]

    their_source = await other.source()
    mine = await world.factory.subscription(world.plan)
    assert_error(await connect(world, their_source["id"], subscriptionId=mine.id, stripeSecretKey=KEY), 404)
    assert await stored(engine, world.factory.merchant) == 0


async def test_import_from_reaches_back_at_most_90_days(world: World) -> None:
    source = await world.source()
    sub = await world.factory.subscription(world.plan)
    now = datetime.now(UTC)
    for moment, message in (
        (now + timedelta(hours=1), "must not be in the future"),
        (now - timedelta(days=91), "reaches back at most 90 days (on or after "),
    ):
        body = {"subscriptionId": sub.id, "stripeSecretKey": KEY, "importFrom": moment.isoformat()}
        errors = field_errors(await connect(world, source["id"], **body))
        assert message in errors["importFrom"]
    body = {"subscriptionId": sub.id, "stripeSecretKey": KEY, "importFrom": "yesterday"}
    assert "importFrom" in field_errors(await connect(world, source["id"], **body))


@pytest.mark.parametrize("status", ["pending", "active"])
async def test_a_second_connect_names_the_live_installation(world: World, status: str) -> None:
    source = await world.source()
    sub = await world.factory.subscription(world.plan)
    live = await installation(world.factory, source["id"], sub, status=status)
    body = assert_error(await connect(world, source["id"], subscriptionId=sub.id, stripeSecretKey=KEY), 409)
    assert body["message"] == (
        f"Subscription {sub.id} is already connected to source {source['id']} (installation {live.id}, "
        f"{status}); disconnect it first with DELETE /v0/sources/{source['id']}/installations/{live.id}"
    )
    assert body["details"] == {"installationId": live.id, "status": status}


async def test_without_temporal_a_connect_is_a_503_that_stores_nothing(
    world: World, engine: AsyncEngine
) -> None:
    source = await world.source()
    sub = await world.factory.subscription(world.plan)
    await installation(world.factory, source["id"], sub, status="disconnected")  # replaced by a new connect
    response = await connect(world, source["id"], subscriptionId=sub.id, stripeSecretKey=KEY)
    body = assert_error(response, 503, "service_unavailable")
    assert body["message"].startswith("Could not reach the workflow service to connect the source")
    assert "Q7" not in response.text
    assert await stored(engine, world.factory.merchant) == 1


async def test_list_get_and_filters(world: World, other: World) -> None:
    source = await world.source()
    sub_a = await world.factory.subscription(world.plan)
    sub_b = await world.factory.subscription(world.plan)
    old = await installation(
        world.factory, source["id"], sub_a, status="error", error_message="Stripe refused the key (401)"
    )
    new = await installation(world.factory, source["id"], sub_a, status="active", last_sync_at=PAID)
    b = await installation(world.factory, source["id"], sub_b, status="disconnected", disconnected_at=PAID)
    url = f"/v0/sources/{source['id']}/installations"

    listed = (await world.http.get(url)).json()
    assert [i["id"] for i in listed["data"]] == [b.id, new.id, old.id]
    assert listed["pagination"] == {"limit": 10, "offset": 0, "total": 3, "hasMore": False}
    shown = (await world.http.get(f"{url}/{old.id}")).json()
    assert shown == {
        "object": "sourceInstallation",
        "id": old.id,
        "sourceId": source["id"],
        "subscriptionId": sub_a.id,
        "customerId": sub_a.customer_id,
        "providerType": "api_key",
        "status": "error",
        "errorMessage": "Stripe refused the key (401)",
        "lastSyncAt": None,
        "connectedAt": "2026-03-01T12:00:00.000Z",
        "disconnectedAt": None,
        "keyLast4": "4242",
        "keyMode": "test",
        "createdAt": shown["createdAt"],
        "updatedAt": shown["updatedAt"],
    }
    assert "keySealed" not in shown and "sealed" not in str(listed)

    def ids(params: dict[str, Any]) -> Any:
        return world.http.get(url, params=params)

    assert [i["id"] for i in (await ids({"subscriptionId": sub_a.id})).json()["data"]] == [new.id, old.id]
    assert [i["id"] for i in (await ids({"status": "active"})).json()["data"]] == [new.id]
    assert [i["id"] for i in (await ids({"status": "pending"})).json()["data"]] == []
    assert [i["id"] for i in (await ids({"limit": 1, "offset": 2})).json()["data"]] == [old.id]
    assert "status" in field_errors(await ids({"status": "broken"}))

    theirs = await other.source()
    their_inst = await installation(other.factory, theirs["id"])
    assert_error(await world.http.get(f"/v0/sources/{theirs['id']}/installations"), 404)
    assert_error(await world.http.get(f"/v0/sources/{theirs['id']}/installations/{their_inst.id}"), 404)
    assert_error(await world.http.get(f"{url}/{their_inst.id}"), 404)
    assert_error(await world.http.delete(f"{url}/{their_inst.id}"), 404)


async def test_disconnect_is_idempotent_and_needs_temporal_only_for_a_live_installation(world: World) -> None:
    source = await world.source()
    url = f"/v0/sources/{source['id']}/installations"
    gone = await installation(world.factory, source["id"], status="disconnected", disconnected_at=PAID)
    response = await world.http.delete(f"{url}/{gone.id}")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["disconnectedAt"]) == (
        "disconnected",
        "2026-03-01T12:00:00.000Z",
    )

    live = await installation(world.factory, source["id"])
    body = assert_error(await world.http.delete(f"{url}/{live.id}"), 503, "service_unavailable")
    assert "disconnect the installation" in body["message"]
    assert (await world.http.get(f"{url}/{live.id}")).json()["status"] == "active"
