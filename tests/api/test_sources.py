"""Sources and source rules API without a workflow (behavior §9.2, §9.4, D17): create/list/get/update of
sources with the revenue-metric checks, rules with their condition errors and the 10-per-source limit
(also under concurrent creates), tenancy (404 for another tenant's rows, 403 for a foreign merchantId).
Rows the API does not create come from tests.factories."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import Source, SourceRule
from db.session import session_factory
from tests.api.source_harness import World, api_client, make_world
from tests.factories import Factory
from tests.helpers import assert_error, field_errors

REVENUE = "metadata.billableMetricMapping.revenue"


@pytest.fixture
async def world(api_url: str, engine: AsyncEngine, merchant: NewMerchant) -> AsyncIterator[World]:
    async with api_client(api_url, merchant) as http:
        yield await make_world(http, Factory(engine, merchant))


@pytest.fixture
async def other(api_url: str, engine: AsyncEngine, other_merchant: NewMerchant) -> AsyncIterator[World]:
    async with api_client(api_url, other_merchant) as http:
        yield await make_world(http, Factory(engine, other_merchant))


async def stored_source(engine: AsyncEngine, source_id: str) -> Source:
    async with session_factory(engine)() as session:
        return await session.get_one(Source, source_id)


async def source_count(engine: AsyncEngine, merchant: NewMerchant) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(Source).where(Source.merchant_id == merchant.merchant_id)
        return int(await conn.scalar(query) or 0)


# ---- sources ------------------------------------------------------------------------------------------


async def test_create_get_list_update(world: World, engine: AsyncEngine, merchant: NewMerchant) -> None:
    created = await world.source(
        description="Revenue share from Stripe",
        config={"ampersandProjectId": "proj_123"},
        processingMode="manual",
        enabled=False,
    )
    assert created["id"].startswith("src_")
    assert created == {
        "id": created["id"],
        "object": "source",
        "merchantId": merchant.merchant_id,
        "planId": world.plan.id,
        "type": "stripe_revenue",
        "name": "Stripe revenue",
        "description": "Revenue share from Stripe",
        "config": {"ampersandProjectId": "proj_123"},
        "metadata": {"billableMetricMapping": {"revenue": world.metric.id}},
        "enabled": False,
        "processingMode": "manual",
        "createdAt": created["createdAt"],
        "updatedAt": created["updatedAt"],
    }
    assert (await stored_source(engine, created["id"])).revenue_metric_id == world.metric.id
    assert (await world.http.get(f"/v0/sources/{created['id']}")).json() == created

    defaults = await world.source(name="Defaults")
    assert (defaults["processingMode"], defaults["enabled"], defaults["config"], defaults["description"]) == (
        "automatic",
        True,
        {},
        None,
    )

    other_plan = await world.factory.plan(product_id=world.product.id)
    third = await world.source(planId=other_plan.id)
    listed = (await world.http.get("/v0/sources", params={"merchantId": merchant.merchant_id})).json()
    assert [s["id"] for s in listed["data"]] == [created["id"], defaults["id"], third["id"]]
    assert listed["pagination"] == {"limit": 10, "offset": 0, "total": 3, "hasMore": False}
    by_plan = (await world.http.get("/v0/sources", params={"planId": other_plan.id})).json()
    assert [s["id"] for s in by_plan["data"]] == [third["id"]]
    paged = (await world.http.get("/v0/sources", params={"limit": 1, "offset": 1})).json()
    assert [s["id"] for s in paged["data"]] == [defaults["id"]] and paged["pagination"]["hasMore"] is True

    second_metric = await world.revenue_metric(name="revenue 2")
    response = await world.http.patch(
        f"/v0/sources/{created['id']}",
        json={
            "name": "Renamed",
            "description": None,
            "enabled": True,
            "processingMode": "automatic",
            "config": {},
            "metadata": {"billableMetricMapping": {"revenue": second_metric.id}, "team": "growth"},
        },
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["name"], updated["description"], updated["enabled"], updated["processingMode"]) == (
        "Renamed",
        None,
        True,
        "automatic",
    )
    assert updated["metadata"] == {"billableMetricMapping": {"revenue": second_metric.id}, "team": "growth"}
    assert (updated["config"], updated["planId"]) == ({}, world.plan.id)
    assert (await stored_source(engine, created["id"])).revenue_metric_id == second_metric.id


async def test_plan_must_be_the_callers(world: World, other: World, engine: AsyncEngine) -> None:
    deleted = await world.factory.plan(product_id=world.product.id)
    await world.factory.update(deleted, deleted_at=world.plan.created_at)
    for plan_id in ("plan_unknown", other.plan.id, deleted.id):
        response = await world.http.post("/v0/sources", json=world.body(planId=plan_id))
        assert f"Plan {plan_id!r} was not found" in assert_error(response, 404)["message"]
    assert await source_count(engine, world.factory.merchant) == 0


async def test_the_revenue_metric_is_required_and_checked(
    world: World, other: World, engine: AsyncEngine
) -> None:
    other_product = await world.factory.product()
    cases: list[tuple[Any, str]] = [
        (None, "is required: the id of the billable metric"),
        ({}, "is required"),
        ({"billableMetricMapping": "bm_x"}, "is required"),
        ({"billableMetricMapping": {"usage": world.metric.id}}, "is required"),
        ({"billableMetricMapping": {"revenue": 5}}, "must be the id of a billable metric"),
        ({"billableMetricMapping": {"revenue": "bm_unknown"}}, "'bm_unknown' was not found"),
        ({"billableMetricMapping": {"revenue": other.metric.id}}, "was not found"),
        (
            {
                "billableMetricMapping": {
                    "revenue": (await world.revenue_metric(product_id=other_product.id)).id
                }
            },
            f"belongs to product {other_product.id}, but plan {world.plan.id} is of product "
            f"{world.product.id}",
        ),
        (
            {"billableMetricMapping": {"revenue": (await world.revenue_metric(unit="tokens")).id}},
            "has unit 'tokens' (not a currency code), but revenue is recorded in the plan's currency: use a "
            "metric with unit 'USD'",
        ),
        (
            {"billableMetricMapping": {"revenue": (await world.revenue_metric(unit="EUR")).id}},
            "has unit 'EUR' (the currency), but revenue is recorded in the plan's currency",
        ),
        (
            {"billableMetricMapping": {"revenue": (await world.revenue_metric(aggregation="MAX")).id}},
            "cannot carry revenue (aggregation MAX",
        ),
        (
            {"billableMetricMapping": {"revenue": (await world.revenue_metric(value_property=None)).id}},
            "revenue needs aggregation SUM with an eventType and a valueProperty",
        ),
        (
            {"billableMetricMapping": {"revenue": (await world.revenue_metric(event_type=None)).id}},
            "eventType None",
        ),
    ]
    for metadata, message in cases:
        response = await world.http.post("/v0/sources", json=world.body(metadata=metadata))
        errors = field_errors(response)
        assert list(errors) == [REVENUE] and message in errors[REVENUE], (metadata, errors)
    assert await source_count(engine, world.factory.merchant) == 0


async def test_patch_revalidates_the_metric_and_changes_nothing_on_failure(
    world: World, engine: AsyncEngine
) -> None:
    source = await world.source()
    tokens = await world.revenue_metric(unit="tokens")
    for body in (
        {"name": "x", "metadata": {"billableMetricMapping": {"revenue": tokens.id}}},
        {"name": "x", "metadata": {"other": 1}},
        {"name": None},
        {"metadata": None},
        {"enabled": "yes"},
        {"processingMode": "sometimes"},
    ):
        response = await world.http.patch(f"/v0/sources/{source['id']}", json=body)
        assert_error(response, 400, "validation_error")
    after = (await world.http.get(f"/v0/sources/{source['id']}")).json()
    assert after == source
    assert (await stored_source(engine, source["id"])).revenue_metric_id == world.metric.id


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"type": "stripe"}, "type"),
        ({"type": None}, "type"),
        ({"name": ""}, "name"),
        ({"planId": None}, "planId"),
        ({"processingMode": "batch"}, "processingMode"),
        ({"config": "proj_1"}, "config"),
        ({"enabled": "true"}, "enabled"),
    ],
)
async def test_create_rejects_bad_fields(world: World, override: dict[str, Any], field: str) -> None:
    assert field in field_errors(await world.http.post("/v0/sources", json=world.body(**override)))


async def test_another_tenants_source_is_not_found(world: World, other: World, merchant: NewMerchant) -> None:
    theirs = await other.source()
    assert_error(await world.http.get(f"/v0/sources/{theirs['id']}"), 404)
    assert_error(await world.http.patch(f"/v0/sources/{theirs['id']}", json={"name": "x"}), 404)
    assert (await world.http.get("/v0/sources")).json()["data"] == []
    response = await world.http.get("/v0/sources", params={"merchantId": other.factory.merchant.merchant_id})
    assert "is not the organization of this API key" in assert_error(response, 403)["message"]
    assert (await other.http.get(f"/v0/sources/{theirs['id']}")).json()["name"] == "Stripe revenue"


async def test_there_is_no_delete(world: World) -> None:
    source = await world.source()
    assert_error(await world.http.delete(f"/v0/sources/{source['id']}"), 405)


# ---- rules --------------------------------------------------------------------------------------------


async def test_rule_lifecycle(world: World, merchant: NewMerchant) -> None:
    source = await world.source(processingMode="manual")
    response = await world.rule(source["id"])
    assert response.status_code == 201, response.text
    rule = response.json()
    assert rule["id"].startswith("rule_")
    assert rule == {
        "id": rule["id"],
        "object": "sourceRule",
        "sourceId": source["id"],
        "name": "Trusted",
        "description": "",
        "enabled": True,
        "order": 0,
        "conditions": [{"type": "customerEmail", "operator": "domain", "value": "@trusted.com"}],
        "evaluationCount": 0,
        "matchCount": 0,
        "lastEvaluatedAt": None,
        "createdBy": merchant.user_id,
        "createdAt": rule["createdAt"],
        "updatedAt": rule["updatedAt"],
    }
    big = (
        await world.rule(
            source["id"],
            name="Big",
            description="Over $100",
            enabled=False,
            order=5,
            conditions=[
                {"type": "amount", "operator": "greaterThan", "value": 100},
                {"type": "date", "operator": "between", "value": {"from": "2026-01-01", "to": "2026-12-31"}},
            ],
        )
    ).json()
    first = (await world.rule(source["id"], name="First", order=0)).json()
    assert (big["description"], big["enabled"], big["order"]) == ("Over $100", False, 5)

    listed = (await world.http.get("/v0/sourceRules", params={"sourceId": source["id"]})).json()
    assert list(listed) == ["data"]
    assert [r["id"] for r in listed["data"]] == [rule["id"], first["id"], big["id"]]  # order, then creation
    assert (await world.http.get(f"/v0/sourceRules/{rule['id']}")).json() == rule

    response = await world.http.patch(
        f"/v0/sourceRules/{big['id']}",
        json={
            "name": "Huge",
            "description": "",
            "enabled": True,
            "order": 999,
            "conditions": [{"type": "amount", "operator": "between", "value": {"from": "1000", "to": 5000}}],
        },
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert (patched["name"], patched["enabled"], patched["order"], patched["conditions"][0]["value"]) == (
        "Huge",
        True,
        999,
        {"from": "1000", "to": 5000},
    )

    response = await world.http.delete(f"/v0/sourceRules/{rule['id']}")
    assert response.status_code == 204 and response.content == b""
    assert_error(await world.http.get(f"/v0/sourceRules/{rule['id']}"), 404)
    assert_error(await world.http.delete(f"/v0/sourceRules/{rule['id']}"), 404)
    listed = (await world.http.get("/v0/sourceRules", params={"sourceId": source["id"]})).json()
    assert [r["id"] for r in listed["data"]] == [first["id"], patched["id"]]


async def test_the_eleventh_rule_is_a_400(world: World) -> None:
    source = await world.source()
    for index in range(10):
        assert (await world.rule(source["id"], name=f"rule {index}")).status_code == 201
    body = assert_error(await world.rule(source["id"], name="eleventh"), 400)
    assert body["message"] == (
        f"Source {source['id']} already has 10 rules, the most a source can have (10); delete one, or add "
        "this rule's conditions to an existing rule"
    )
    assert body["code"] == "rule_limit_reached"
    rules = (await world.http.get("/v0/sourceRules", params={"sourceId": source["id"]})).json()["data"]
    await world.http.delete(f"/v0/sourceRules/{rules[0]['id']}")
    assert (await world.rule(source["id"], name="room again")).status_code == 201


async def test_concurrent_creates_never_make_an_eleventh(world: World, engine: AsyncEngine) -> None:
    source = await world.source()
    for index in range(7):
        assert (await world.rule(source["id"], name=f"rule {index}")).status_code == 201
    responses = await asyncio.gather(*(world.rule(source["id"], name=f"racer {i}") for i in range(6)))
    assert sorted(r.status_code for r in responses) == [201, 201, 201, 400, 400, 400]
    async with engine.connect() as conn:
        query = select(func.count()).select_from(SourceRule).where(SourceRule.source_id == source["id"])
        assert await conn.scalar(query) == 10


@pytest.mark.parametrize(
    ("conditions", "field", "message"),
    [
        ([], "conditions", "a rule has 1 to 10 conditions; got 0"),
        ([{"type": "amount", "operator": "equals", "value": 1}] * 11, "conditions", "got 11"),
        (["amount > 5"], "conditions[0]", 'must be an object {"type", "operator", "value"}'),
        (
            [{"type": "customerId", "operator": "equals", "value": "cus_1"}],
            "conditions[0].type",
            "must be one of",
        ),
        ([{"type": "amount", "operator": "above", "value": 1}], "conditions[0].operator", "must be one of"),
        ([{"type": "amount", "operator": "equals"}], "conditions[0].value", "is required"),
        (
            [{"type": "customerName", "operator": "domain", "value": "x.com"}],
            "conditions[0].operator",
            "domain does not apply to customerName; use equals or contains",
        ),
        (
            [{"type": "amount", "operator": "lessThan", "value": -5}],
            "conditions[0].value",
            "must be 0 or more",
        ),
        (
            [{"type": "amount", "operator": "between", "value": {"from": 10, "to": 1}}],
            "conditions[0].value",
            "from (10) must not be greater than to (1)",
        ),
        (
            [{"type": "date", "operator": "equals", "value": "yesterday"}],
            "conditions[0].value",
            "a date like",
        ),
        (
            [{"type": "customerEmail", "operator": "domain", "value": "a@b.com"}],
            "conditions[0].value",
            'must be an email domain like "@trusted.com"',
        ),
        ([{"type": "customerName", "operator": "contains", "value": ""}], "conditions[0].value", "non-empty"),
    ],
)
async def test_bad_conditions_name_the_condition(
    world: World, conditions: list[Any], field: str, message: str
) -> None:
    source = await world.source()
    errors = field_errors(await world.rule(source["id"], conditions=conditions))
    assert field in errors and message in errors[field], errors
    rule = (await world.rule(source["id"])).json()
    errors = field_errors(
        await world.http.patch(f"/v0/sourceRules/{rule['id']}", json={"conditions": conditions})
    )
    assert field in errors and message in errors[field], errors
    assert (await world.http.get(f"/v0/sourceRules/{rule['id']}")).json() == rule


async def test_every_bad_condition_is_reported(world: World) -> None:
    source = await world.source()
    conditions = [
        {"type": "amount", "operator": "contains", "value": 1},
        {"type": "amount", "operator": "equals", "value": 1},
        {"type": "date", "operator": "greaterThan", "value": "2026-02-30"},
    ]
    errors = field_errors(await world.rule(source["id"], conditions=conditions))
    assert list(errors) == ["conditions[0].operator", "conditions[2].value"]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"order": -1}, "order"),
        ({"order": 1000}, "order"),
        ({"order": "1"}, "order"),
        ({"name": ""}, "name"),
        ({"enabled": None}, "enabled"),
        ({"conditions": None}, "conditions"),
        ({"conditions": "amount"}, "conditions"),
    ],
)
async def test_rule_fields(world: World, override: dict[str, Any], field: str) -> None:
    source = await world.source()
    assert field in field_errors(await world.rule(source["id"], **override))


async def test_rule_patch_rejects_nulls_and_bad_order(world: World) -> None:
    source = await world.source()
    rule = (await world.rule(source["id"])).json()
    for body in ({"name": None}, {"description": None}, {"order": 1000}, {"enabled": None}):
        assert_error(
            await world.http.patch(f"/v0/sourceRules/{rule['id']}", json=body), 400, "validation_error"
        )
    assert (await world.http.get(f"/v0/sourceRules/{rule['id']}")).json() == rule


async def test_rules_of_another_tenant_are_not_found(world: World, other: World) -> None:
    theirs = await other.source()
    theirs_rule = (await other.rule(theirs["id"])).json()
    assert "Source" in assert_error(await world.rule(theirs["id"]), 404)["message"]
    assert_error(await world.http.get("/v0/sourceRules", params={"sourceId": theirs["id"]}), 404)
    for method in ("GET", "PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "PATCH" else {}
        response = await world.http.request(method, f"/v0/sourceRules/{theirs_rule['id']}", **kwargs)
        assert_error(response, 404)
    assert (await other.http.get(f"/v0/sourceRules/{theirs_rule['id']}")).json() == theirs_rule


async def test_listing_rules_needs_a_source(world: World) -> None:
    assert "sourceId" in field_errors(await world.http.get("/v0/sourceRules"))
    assert_error(await world.http.get("/v0/sourceRules", params={"sourceId": "src_unknown"}), 404)
