"""A create starts the subscription's workflow with its search attributes, so the workflow upserts only what
writing Invoice 0 changed: nothing when the subscription waits for payment, the status when Invoice 0 is free.
An upsert costs the Temporal server about a fifth of its work for a create (bench/subscription_create.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.workflows.billing_harness import Billing
from tests.workflows.conftest import time_skipping_server
from tests.workflows.test_subscriptions_api import fee_plan, metered_plan
from workflows import search_attributes as sa
from workflows.ids import subscription_workflow_id


@pytest.fixture(scope="module")
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    """A server of this module's own: its subscriptions stay open, waiting for payment or their period."""
    async for env in time_skipping_server():
        yield env


async def create(billing: Billing, plan: str) -> WorkflowHandle[object, object]:
    body = {
        "name": "Search attributes",
        "planId": plan,
        "customerId": await billing.customer(),
        "startedAt": "2026-01-31T02:45:10Z",
    }
    sub = await billing.post("/v0/subscriptions", body, status=201)
    return billing.env.client.get_workflow_handle(subscription_workflow_id(sub["id"]))


async def upserts(handle: WorkflowHandle[object, object]) -> list[HistoryEvent]:
    history = await handle.fetch_history()
    return [e for e in history.events if e.HasField("upsert_workflow_search_attributes_event_attributes")]


async def test_pending_create_is_findable_without_an_upsert(billing: Billing) -> None:
    handle = await create(billing, await fee_plan(billing))
    found = (await handle.describe()).typed_search_attributes
    assert found[sa.MERCHANT_ID] == billing.merchant.merchant_id
    assert found[sa.SUBSCRIPTION_STATUS] == "pending_payment"
    assert found.get(sa.CUSTOMER_ID) and found.get(sa.PLAN_ID)
    assert await upserts(handle) == []


async def test_free_create_upserts_only_its_status(billing: Billing) -> None:
    handle = await create(billing, await metered_plan(billing))
    found = (await handle.describe()).typed_search_attributes
    assert found[sa.SUBSCRIPTION_STATUS] == "active"
    assert found[sa.MERCHANT_ID] == billing.merchant.merchant_id
    [upsert] = await upserts(handle)
    fields = upsert.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    assert list(fields) == [sa.SUBSCRIPTION_STATUS.name]
