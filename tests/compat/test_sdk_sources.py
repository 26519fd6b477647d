"""paygentic-sdk 0.1.34 drives every sources.*, sources.events.* and sources.rules.* call against the real
API (without a workflow: reviews reach their 404/409 answers and per-item bulk results here; approvals
that the workflow performs run in tests/workflows/test_sources_api.py), and 0.6.3 parses the same calls
(tests/compat/sdk063_sources_driver.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from paygentic_sdk import Paygentic, errors, models
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from tests.api.source_harness import World, api_client, event, installation, make_world
from tests.factories import Factory
from tests.helpers import sdk063_python

DRIVER = Path(__file__).with_name("sdk063_sources_driver.py")


@pytest.fixture
async def world(api_url: str, engine: AsyncEngine, merchant: NewMerchant) -> AsyncIterator[World]:
    async with api_client(api_url, merchant) as http:
        yield await make_world(http, Factory(engine, merchant))


async def test_sources_through_sdk_0_1_34(sdk: Paygentic, world: World, merchant: NewMerchant) -> None:
    mapping = {"billableMetricMapping": {"revenue": world.metric.id}}
    created = sdk.sources.create(
        name="Stripe revenue",
        plan_id=world.plan.id,
        type_="stripe_revenue",
        config={"ampersandProjectId": "proj_1"},
        description="seed 000",
        enabled=True,
        metadata=mapping,
        processing_mode="manual",
    )
    assert created.id.startswith("src_")
    assert (created.object, created.type, created.processing_mode, created.enabled) == (
        "source",
        "stripe_revenue",
        "manual",
        True,
    )
    assert (created.merchant_id, created.plan_id, created.config, created.metadata) == (
        merchant.merchant_id,
        world.plan.id,
        {"ampersandProjectId": "proj_1"},
        mapping,
    )
    minimal = sdk.sources.create(
        name="Minimal", plan_id=world.plan.id, type_="stripe_revenue", metadata=mapping
    )
    assert minimal.processing_mode == "automatic" and minimal.config == {}

    assert sdk.sources.get(id=created.id).name == "Stripe revenue"
    listed = sdk.sources.list(request={"merchant_id": merchant.merchant_id, "plan_id": world.plan.id})
    assert [s.id for s in listed.data or []] == [created.id, minimal.id]
    assert listed.pagination is not None and listed.pagination.total == 2
    updated = sdk.sources.update(id=created.id, name="Renamed", enabled=False, processing_mode="automatic")
    assert (updated.name, updated.enabled, updated.processing_mode) == ("Renamed", False, "automatic")
    with pytest.raises(errors.BadRequest) as bad:
        sdk.sources.create(name="x", plan_id=world.plan.id, type_="stripe_revenue", metadata={})
    assert "metadata.billableMetricMapping.revenue" in str(bad.value.data.message)
    with pytest.raises(errors.Error) as missing:
        sdk.sources.get(id="src_unknown")
    assert missing.value.status_code == 404

    # rules
    rule = sdk.sources.rules.create(
        source_id=created.id,
        name="Auto-approve > $100",
        conditions=[{"type": "amount", "operator": "greaterThan", "value": 100}],
        order=0,
        enabled=True,
    )
    assert (rule.source_id, rule.description, rule.evaluation_count, rule.match_count) == (
        created.id,
        "",
        0,
        0,
    )
    assert rule.created_by == merchant.user_id
    ranged = sdk.sources.rules.create(
        source_id=created.id,
        name="Trusted in March",
        description="d",
        order=1,
        conditions=[
            {"type": "customerEmail", "operator": "domain", "value": "@trusted.com"},
            {"type": "date", "operator": "between", "value": {"from_": "2026-03-01", "to": "2026-03-31"}},
        ],
    )
    assert isinstance(ranged.conditions[1].value, models.Value)
    assert sdk.sources.rules.get(rule_id=rule.id).name == "Auto-approve > $100"
    assert [r.id for r in sdk.sources.rules.list(source_id=created.id).data or []] == [rule.id, ranged.id]
    changed = sdk.sources.rules.update(
        rule_id=rule.id,
        name="Auto-approve ≥ $50",
        conditions=[{"type": "amount", "operator": "between", "value": {"from_": 50, "to": 10_000}}],
        description="bigger",
        enabled=False,
        order=7,
    )
    assert (changed.name, changed.enabled, changed.order, changed.description) == (
        "Auto-approve ≥ $50",
        False,
        7,
        "bigger",
    )
    with pytest.raises(errors.BadRequest) as bad:
        sdk.sources.rules.create(
            source_id=created.id,
            name="x",
            conditions=[{"type": "amount", "operator": "contains", "value": "1"}],
        )
    assert "conditions[0].operator" in str(bad.value.data.message)
    assert sdk.sources.rules.delete(rule_id=ranged.id) is None
    assert [r.id for r in sdk.sources.rules.list(source_id=created.id).data or []] == [rule.id]

    # events
    inst = await installation(world.factory, created.id, await world.factory.subscription(world.plan))
    done = await event(
        world.factory, inst, status="processed", processed_by="system", usage_event_ids=["evt_1"]
    )
    pending = await event(world.factory, inst)
    page = sdk.sources.events.list(id=created.id, status="processed", limit=5, offset=0)
    assert [e.id for e in page.data or []] == [done.id]
    shown = (page.data or [])[0]
    assert (shown.status, shown.processed_by, shown.usage_event_ids, shown.raw_data["object"]) == (
        "processed",
        "system",
        ["evt_1"],
        "invoice",
    )
    assert [
        e.id for e in sdk.sources.events.list(id=created.id, customer_id=inst.customer_id).data or []
    ] == [
        pending.id,
        done.id,
    ]
    assert sdk.sources.events.list(id=created.id, subscription_id=inst.subscription_id).pagination.total == 2  # type: ignore[union-attr]
    for call in (sdk.sources.events.approve, sdk.sources.events.reject):
        with pytest.raises(errors.PaygenticDefaultError) as conflict:
            call(id=created.id, event_id=done.id)
        assert conflict.value.status_code == 409
        with pytest.raises(errors.Error) as missing:
            call(id=created.id, event_id="sev_unknown")
        assert missing.value.status_code == 404
    bulk = sdk.sources.events.bulk_approve(id=created.id, event_ids=["sev_a", "sev_b"])
    assert (bulk.processed, bulk.failed) == (0, 2)
    assert bulk.details is not None and [f.id for f in bulk.details.failed or []] == ["sev_a", "sev_b"]
    assert sdk.sources.events.bulk_reject(id=created.id, event_ids=["sev_a"]).rejected == 0


async def test_sources_parse_under_sdk_0_6_3(api_url: str, world: World, merchant: NewMerchant) -> None:
    source = await world.source(processingMode="manual")
    inst = await installation(world.factory, source["id"], await world.factory.subscription(world.plan))
    done = await event(world.factory, inst, status="rejected", processed_by=merchant.user_id)
    args = [api_url, merchant.api_key, world.plan.id, world.metric.id, source["id"], done.id]
    run = await asyncio.to_thread(
        subprocess.run,
        [sdk063_python(), str(DRIVER), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    failures = {op: outcome for op, outcome in results.items() if outcome != "ok"}
    assert failures == {}, json.dumps(failures, indent=2)
    expected = {
        *(f"sources.{op}" for op in ("create", "get", "update", "list")),
        *(f"sources.rules.{op}" for op in ("create", "get", "update", "list", "delete")),
        *(f"sources.events.{op}" for op in ("list", "approve", "reject", "bulk_approve", "bulk_reject")),
    }
    assert expected <= set(results), sorted(expected - set(results))
