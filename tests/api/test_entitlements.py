"""v0 entitlements over HTTP against the real API and PostgreSQL: creating one reserves Σ quantity × price
from the wallet with the row, every refusal reserves nothing, and the active list follows consumption,
expiry and the test clock. (Temporal is unreachable here: the reservation stands without its workflow.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from db import entitlements
from db import ledger as records
from db.merchants import NewMerchant
from db.models import Entitlement, PlanPrice, Price, Subscription
from db.session import session_factory
from domain import ledger
from domain.ids import new_id
from tests.factories import Factory

DOLLAR = 10**9


@pytest.fixture
async def api(api_url: str, merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers) as c:
        yield c


@pytest.fixture
async def other_api(api_url: str, other_merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {other_merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers) as c:
        yield c


@dataclass
class Legacy:
    """A customer with an active subscription to a Legacy plan pricing one metric, and a funded wallet."""

    merchant: NewMerchant
    customer_id: str
    subscription_id: str
    plan_id: str
    product_id: str
    metric_id: str
    price_id: str
    currency: str = "USD"


async def fund(engine: AsyncEngine, merchant: NewMerchant, customer_id: str, nanos: int) -> None:
    async with session_factory(engine)() as session:
        await records.post(
            session,
            merchant.merchant_id,
            merchant.environment,
            ledger.funding(merchant.merchant_id, customer_id, "USD", nanos),
            idempotency_key=f"topup:{new_id('invoice')}",
        )
        await session.commit()


async def add_price(
    engine: AsyncEngine,
    merchant: NewMerchant,
    metric_id: str,
    model: str = "standard",
    properties: dict[str, Any] | None = None,
) -> Price:
    return await Factory(engine, merchant).add(
        Price(
            id=new_id("price"),
            merchant_id=merchant.merchant_id,
            environment=merchant.environment,
            billable_metric_id=metric_id,
            model=model,
            payment_term="instant",
            properties=properties or {"unitPrice": "0.001"},
            invoice_display_name="Calls",
        )
    )


async def legacy(
    engine: AsyncEngine,
    merchant: NewMerchant,
    *,
    funds: int = 10 * DOLLAR,
    model: str = "standard",
    properties: dict[str, Any] | None = None,
    billing_version: int = 0,
    **subscription: Any,
) -> Legacy:
    f = Factory(engine, merchant)
    metric = await f.metric()
    price = await add_price(engine, merchant, metric.id, model, properties)
    plan = await f.plan(billing_version=billing_version)
    await f.add(PlanPrice(plan_id=plan.id, price_id=price.id, position=0))
    sub = await f.subscription(plan=plan, **subscription)
    if funds:
        await fund(engine, merchant, sub.customer_id, funds)
    return Legacy(merchant, sub.customer_id, sub.id, plan.id, plan.product_id, metric.id, price.id)


def body(setup: Legacy, *data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    items = list(data) or [{"billableMetricId": setup.metric_id, "quantity": 1000}]
    return {
        "merchantId": setup.merchant.merchant_id,
        "customerId": setup.customer_id,
        "entitlementData": items,
    } | extra


async def wallet(engine: AsyncEngine, setup: Legacy) -> dict[str, int]:
    async with session_factory(engine)() as session:
        found = await records.balances(
            session, setup.merchant.merchant_id, setup.merchant.environment, setup.customer_id, "USD"
        )
    return {kind: balance for (_, kind), balance in found.items()}


async def rows(engine: AsyncEngine, setup: Legacy) -> list[Entitlement]:
    async with session_factory(engine)() as session:
        return list(
            await session.scalars(select(Entitlement).where(Entitlement.customer_id == setup.customer_id))
        )


async def audit(engine: AsyncEngine, merchant: NewMerchant) -> list[str]:
    async with session_factory(engine)() as session:
        return await records.audit(session, merchant.merchant_id)


async def active(client: httpx.AsyncClient, customer_id: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/v0/entitlements/activeEntitlements", params={"customerId": customer_id} | params
    )
    assert response.status_code == 200, response.text
    listed = response.json()
    assert listed["object"] == "list"
    assert listed["pagination"]["total"] == len(listed["data"])
    return list(listed["data"])


async def test_create_reserves_from_the_wallet(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    setup = await legacy(engine, merchant)
    before = datetime.now(UTC)
    response = await api.post("/v0/entitlements", json=body(setup, maxUses=5))
    assert response.status_code == 201, response.text
    ent = response.json()
    assert ent["id"].startswith("com_")
    assert ent["object"] == "entitlement"
    assert ent["billableMetrics"] == [
        {"billableMetricId": setup.metric_id, "quantity": 1000, "price": "0.001"}
    ]
    assert (ent["customerId"], ent["merchantId"], ent["region"]) == (
        setup.customer_id,
        merchant.merchant_id,
        "global",
    )
    assert (ent["maxUses"], ent["usedCount"], ent["remainingBalance"]) == (5, 0, str(DOLLAR))
    assert (ent["status"], ent["subscriptionId"], ent["reservedAmount"]) == (
        "active",
        setup.subscription_id,
        str(DOLLAR),
    )
    expires = datetime.fromisoformat(ent["expiresAt"].replace("Z", "+00:00"))
    assert (
        before + timedelta(days=30) - timedelta(seconds=5) < expires < datetime.now(UTC) + timedelta(days=30)
    )
    assert await wallet(engine, setup) == {"customer_main": 9 * DOLLAR, "customer_reserved": DOLLAR}
    assert (await api.get(f"/v0/entitlements/{ent['id']}")).json() == ent
    listed = await active(api, setup.customer_id)
    assert [
        (a["id"], a["billableMetrics"], a["planId"], a["productId"], a["subscriptionId"]) for a in listed
    ] == [(ent["id"], [setup.metric_id], setup.plan_id, setup.product_id, setup.subscription_id)]
    assert listed[0]["object"] == "entitlement" and listed[0]["verifiedAt"].endswith("Z")
    assert await active(api, setup.customer_id, productId="prod_other") == []
    by_sub = await active(api, setup.customer_id, subscriptionId=setup.subscription_id)
    assert [a["id"] for a in by_sub] == [ent["id"]]
    assert await audit(engine, merchant) == []


async def test_max_uses_defaults_to_one_and_an_override_prices_the_units(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    setup = await legacy(engine, merchant)
    response = await api.post(
        "/v0/entitlements",
        json=body(setup, {"billableMetricId": setup.metric_id, "quantity": 2.5, "price": "0.4"}),
    )
    assert response.status_code == 201, response.text
    ent = response.json()
    assert (ent["maxUses"], ent["remainingBalance"]) == (1, str(DOLLAR))
    assert ent["billableMetrics"][0]["quantity"] == 2.5


async def test_insufficient_funds_names_the_shortfall_and_reserves_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    setup = await legacy(engine, merchant, funds=DOLLAR // 2)
    response = await api.post("/v0/entitlements", json=body(setup))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "INSUFFICIENT_FUNDS"
    assert "short by 0.5 USD" in problem["message"]
    assert problem["details"] == {"currency": "USD", "needed": "1", "available": "0.5", "shortfall": "0.5"}
    assert await rows(engine, setup) == []
    assert await wallet(engine, setup) == {"customer_main": DOLLAR // 2}
    assert await audit(engine, merchant) == []


async def test_refusals(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    setup = await legacy(engine, merchant)
    f = Factory(engine, merchant)
    stray = await f.metric(name="Not in the plan")

    async def refused(
        payload: dict[str, Any], status: int, text: str, via: httpx.AsyncClient = api
    ) -> dict[str, Any]:
        response = await via.post("/v0/entitlements", json=payload)
        assert response.status_code == status, response.text
        problem: dict[str, Any] = response.json()
        assert text in problem["message"], problem
        return problem

    await refused(body(setup, {"billableMetricId": "bm_nope", "quantity": 1}), 404, "bm_nope")
    problem = await refused(
        body(setup, {"billableMetricId": stray.id, "quantity": 1}), 400, "not priced in plan"
    )
    assert problem["errors"][0]["field"] == "entitlementData[0].billableMetricId"
    await refused(body(setup, customerId="cus_nope"), 404, "cus_nope")
    await refused(body(setup, merchantId="org_someone_else"), 403, "org_someone_else")
    await refused(body(setup, maxUses=0), 400, "maxUses")
    await refused(body(setup, maxUses=1001), 400, "maxUses")
    await refused(body(setup, maxUses="3"), 400, "maxUses")
    await refused(body(setup, {"billableMetricId": setup.metric_id, "quantity": -1}), 400, "quantity")
    await refused(body(setup, {"billableMetricId": setup.metric_id, "quantity": "ten"}), 400, "quantity")
    await refused(
        body(setup, {"billableMetricId": setup.metric_id, "quantity": 1, "price": "-1"}), 400, "negative"
    )
    await refused(body(setup, {"billableMetricId": setup.metric_id, "quantity": 0}), 400, "reserves nothing")
    huge = {"billableMetricId": setup.metric_id, "quantity": 10**15, "price": "99999999999999999999"}
    await refused(body(setup, huge), 400, "largest reservation")
    twice = {"billableMetricId": setup.metric_id, "quantity": 1}
    await refused(body(setup, twice, twice), 400, "more than once")
    await refused(body(setup, entitlementData=[]), 400, "entitlementData")
    # Another merchant's key may not name this merchant, nor list its customer's entitlements.
    await refused(body(setup), 403, merchant.merchant_id, via=other_api)
    assert (
        await other_api.get(f"/v0/entitlements/activeEntitlements?customerId={setup.customer_id}")
    ).status_code == 404
    assert await rows(engine, setup) == []
    assert await wallet(engine, setup) == {"customer_main": 10 * DOLLAR}


async def test_another_tenants_customer_is_not_found(
    other_api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    setup = await legacy(engine, merchant)
    payload = body(setup, merchantId=other_merchant.merchant_id)
    response = await other_api.post("/v0/entitlements", json=payload)
    assert response.status_code == 404, response.text
    assert setup.customer_id in response.json()["message"]


async def test_no_active_legacy_subscription(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    terminated = await legacy(engine, merchant, status="terminated")
    response = await api.post("/v0/entitlements", json=body(terminated))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "NO_ACTIVE_SUBSCRIPTION"
    standard = await legacy(engine, merchant, billing_version=1)
    response = await api.post("/v0/entitlements", json=body(standard))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "NOT_LEGACY_SUBSCRIPTION"
    assert "billingVersion 1" in response.json()["message"]


async def test_a_dynamic_price_reserves_at_its_maximum_or_the_given_price(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    setup = await legacy(
        engine, merchant, model="dynamic", properties={"minPrice": "0.01", "maxPrice": "0.05"}
    )
    at_max = await api.post(
        "/v0/entitlements", json=body(setup, {"billableMetricId": setup.metric_id, "quantity": 100})
    )
    assert at_max.status_code == 201, at_max.text
    assert at_max.json()["remainingBalance"] == str(5 * DOLLAR)
    assert at_max.json()["billableMetrics"][0]["price"] == "0.05"
    given = {"billableMetricId": setup.metric_id, "quantity": 100, "price": "0.02"}
    assert (await api.post("/v0/entitlements", json=body(setup, given))).json()["remainingBalance"] == str(
        2 * DOLLAR
    )
    outside = {"billableMetricId": setup.metric_id, "quantity": 100, "price": "0.5"}
    response = await api.post("/v0/entitlements", json=body(setup, outside))
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "entitlementData[0].price"
    assert await wallet(engine, setup) == {"customer_main": 3 * DOLLAR, "customer_reserved": 7 * DOLLAR}


async def test_consumed_and_expired_entitlements_are_not_active(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    setup = await legacy(engine, merchant)
    first = (await api.post("/v0/entitlements", json=body(setup, maxUses=2))).json()
    second = (await api.post("/v0/entitlements", json=body(setup))).json()
    assert {a["id"] for a in await active(api, setup.customer_id)} == {first["id"], second["id"]}
    now = datetime.now(UTC)
    for _ in range(2):
        async with session_factory(engine)() as session:
            await entitlements.consume(
                session,
                merchant.merchant_id,
                merchant.environment,
                first["id"],
                setup.customer_id,
                DOLLAR // 4,
                now,
            )
            await records.post(
                session,
                merchant.merchant_id,
                merchant.environment,
                ledger.usage(
                    merchant.merchant_id,
                    setup.customer_id,
                    "USD",
                    DOLLAR // 4,
                    Decimal(0),
                    from_reserved=True,
                ),
                idempotency_key=f"usage:{new_id('usage_event')}",
            )
            await session.commit()
    exhausted = (await api.get(f"/v0/entitlements/{first['id']}")).json()
    assert (exhausted["status"], exhausted["usedCount"], exhausted["remainingBalance"]) == (
        "exhausted",
        2,
        "0",
    )
    async with session_factory(engine)() as session:
        await session.execute(
            update(Entitlement)
            .where(Entitlement.id == second["id"])
            .values(expires_at=now - timedelta(seconds=1))
        )
        await session.commit()
    assert await active(api, setup.customer_id) == []
    # 10 funded, 1 reserved and still held by the (unreleased) expired one, 0.5 spent, 0.5 released.
    assert await wallet(engine, setup) == {"customer_main": 8_500_000_000, "customer_reserved": DOLLAR}
    assert await audit(engine, merchant) == []


async def test_a_clock_bound_entitlement_lives_on_the_clocks_time(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    f = Factory(engine, merchant)
    clock = await f.test_clock(current_time=datetime(2026, 1, 31, tzinfo=UTC))
    setup = await legacy(engine, merchant, test_clock_id=clock.id)
    ent = (await api.post("/v0/entitlements", json=body(setup))).json()
    assert ent["expiresAt"] == "2026-03-02T00:00:00.000Z"
    assert [a["id"] for a in await active(api, setup.customer_id)] == [ent["id"]]
    await f.update(clock, current_time=datetime(2026, 3, 2, tzinfo=UTC))
    assert await active(api, setup.customer_id) == []
    async with session_factory(engine)() as session:
        row = await session.get_one(Entitlement, ent["id"])
        sub = await session.get_one(Subscription, setup.subscription_id)
    assert row.test_clock_id == sub.test_clock_id == clock.id


async def test_get_of_an_unknown_entitlement_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v0/entitlements/com_nope")
    assert response.status_code == 404
    assert "com_nope" in response.json()["message"]


async def test_usage_with_entitlement_id_consumes_it_until_it_runs_out(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    setup = await legacy(engine, merchant)
    ent = (await api.post("/v0/entitlements", json=body(setup, maxUses=3))).json()  # 1000 × 0.001 = 1 USD

    async def use(quantity: int) -> httpx.Response:
        event = {
            "merchantId": merchant.merchant_id,
            "customerId": setup.customer_id,
            "idempotencyKey": new_id("usage_event"),
            "timestamp": datetime.now(UTC).isoformat(),
            "properties": [{"billableMetricId": setup.metric_id, "quantity": quantity}],
            "entitlementId": ent["id"],
        }
        return await api.post("/v0/usage", json=event)

    first = await use(300)
    assert first.status_code == 201, first.text
    assert first.json()["entitlementId"] == ent["id"]
    after = (await api.get(f"/v0/entitlements/{ent['id']}")).json()
    assert (after["usedCount"], after["remainingBalance"], after["status"]) == (1, "700000000", "active")
    too_much = await use(800)
    assert too_much.status_code == 422, too_much.text
    assert "short by 0.1 USD" in too_much.json()["message"]
    assert (await use(200)).status_code == 201
    last = await use(100)
    assert last.status_code == 201, last.text
    done = (await api.get(f"/v0/entitlements/{ent['id']}")).json()
    assert (done["usedCount"], done["remainingBalance"], done["status"]) == (3, "0", "exhausted")
    refused = await use(1)
    assert refused.status_code == 422 and "exhausted" in refused.json()["message"]
    assert await active(api, setup.customer_id) == []
    # 10 funded, 0.6 used through the reservation, 0.4 released when the third use ran it out.
    assert await wallet(engine, setup) == {"customer_main": 9_400_000_000, "customer_reserved": 0}
    assert await audit(engine, merchant) == []
