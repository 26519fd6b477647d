"""Real-time subscriptions: the workflow's own timers drive the periods, and the time-skipping server jumps
over them. A server of this module's own, since time skipping is global to a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.workflows.billing_harness import Billing, eventually
from tests.workflows.conftest import time_skipping_server


@pytest.fixture(scope="module")
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    async for env in time_skipping_server():
        yield env


async def test_real_time_subscription_closes_with_workflow_timers(
    billing: Billing, workflow_env: WorkflowEnvironment
) -> None:
    product = await billing.product()
    calls = await billing.metric(product, "rt.calls", aggregation="COUNT", unit="calls")
    price = await billing.price(
        billableMetricId=calls, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Calls",
        properties={"unitPrice": "1.00"},
    )  # fmt: skip
    plan = await billing.plan(product, [price], billingCadence="P1M")
    customer = await billing.customer()
    start = (await workflow_env.get_current_time()).replace(minute=0, second=0, microsecond=0)
    sub = await billing.subscribe(plan, customer, start)
    assert sub["status"] == "active"
    await billing.event(customer, "rt.calls", start + timedelta(minutes=5))
    await workflow_env.sleep(timedelta(days=33))

    async def issued() -> None:
        statuses = [i.status for i in await billing.invoices(sub["id"])]
        assert statuses[:2] == ["PAID", "ISSUED"], statuses

    await eventually(issued)
    assert (await billing.invoices(sub["id"]))[1].grand_total == Decimal("1.00")
