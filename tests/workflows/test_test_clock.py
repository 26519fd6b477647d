"""TestClockWorkflow owns an advance: the caller going away mid-way loses nothing, every bound subscription
reaches the new time, and a long advance (ten years of monthly periods) keeps each run's history small."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import func, select
from temporalio import workflow
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from activities import test_clock as clock_activities
from db.models import Invoice, MeterEvent, TestClock
from db.session import session_factory
from domain.ids import new_id
from tests.workflows.billing_harness import GRACE, Billing, eventually
from tests.workflows.test_subscriptions_api import metered_plan
from workflows.client import advance_test_clock
from workflows.ids import subscription_workflow_id
from workflows.ids import test_clock_workflow_id as clock_workflow_id
from workflows.subscription import CONTINUE_AS_NEW_PERIODS, SubscriptionWorkflow
from workflows.test_clock import ADVANCE_CLOCK

JAN31 = datetime(2026, 1, 31, tzinfo=UTC)
FEB28 = datetime(2026, 2, 28, tzinfo=UTC)


async def issued(billing: Billing, subscription_ids: list[str]) -> int:
    async with session_factory(billing.engine)() as session:
        count = await session.scalar(
            select(func.count()).where(
                Invoice.subscription_id.in_(subscription_ids),
                Invoice.sequence_number == 1,
                Invoice.status.in_(("ISSUED", "PAID")),
            )
        )
    return int(count or 0)


def test_subscriptions_answer_the_clocks_common_update() -> None:
    """Later clock-bound workflows join the fan-out by answering the same update name."""
    updates = workflow._Definition.must_from_class(SubscriptionWorkflow).updates
    assert ADVANCE_CLOCK in updates


async def test_an_advance_whose_caller_goes_away_still_reaches_every_subscription(
    billing: Billing, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches, few updates in flight: the fan-out is still under way when the caller goes away.
    monkeypatch.setattr(clock_activities, "BATCH", 5)
    monkeypatch.setattr(clock_activities, "CONCURRENCY", 2)
    plan = await metered_plan(billing)
    clock = await billing.clock(JAN31)
    subs = [
        await billing.subscribe(plan, await billing.customer(), JAN31, testClockId=clock) for _ in range(24)
    ]
    ids = [s["id"] for s in subs]
    assert {s["status"] for s in subs} == {"active"}

    # The API process handling the PATCH dies once the first subscription has caught up (its request
    # coroutine is cancelled mid-way, as a killed process would stop waiting).
    patch = asyncio.create_task(
        billing.http.patch(f"/v0/testClocks/{clock}", json={"currentTime": iso(FEB28 + GRACE)})
    )

    async def some_caught_up() -> None:
        assert await issued(billing, ids) > 0

    await eventually(some_caught_up, within=60)
    caught_up_when_killed = await issued(billing, ids)
    patch.cancel()
    await asyncio.gather(patch, return_exceptions=True)
    assert caught_up_when_killed < len(ids), "the advance had finished before the caller went away"

    async def all_caught_up() -> None:
        assert await issued(billing, ids) == len(ids)

    await eventually(all_caught_up, within=120)
    for sub_id in ids:
        state = await billing.env.client.get_workflow_handle(subscription_workflow_id(sub_id)).query(
            SubscriptionWorkflow.live_state
        )
        assert state is not None and state.clock_now == FEB28 + GRACE

    async def ready() -> Any:
        got = await billing.get(f"/v0/testClocks/{clock}")
        assert got["advanceStatus"] == "ready", got
        return got

    assert (await eventually(ready))["currentTime"] == "2026-03-01T00:00:00.000Z"


async def test_ten_years_of_monthly_periods_in_one_advance(billing: Billing) -> None:
    plan = await metered_plan(billing)
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(plan, await billing.customer(), JAN31, testClockId=clock)
    # 120 monthly periods: Jan 31 2026 + 120 months is Jan 31 2036; one advance past the last grace window.
    await billing.advance(clock, datetime(2036, 1, 31, tzinfo=UTC) + GRACE)

    invoices = await billing.invoices(sub["id"])
    assert [i.status for i in invoices[1:121]] == ["PAID"] * 120  # zero usage: paid at issue
    assert (invoices[121].sequence_number, invoices[121].status) == (121, "ACTIVE")

    runs = await chain_sizes(billing, sub["id"])
    print(f"120 monthly periods: {len(runs)} runs, largest history {max(runs)} events, sizes {runs}")
    assert len(runs) >= 120 // CONTINUE_AS_NEW_PERIODS
    assert max(runs) < 400  # 12 periods of work per run, not 120


async def chain_sizes(billing: Billing, subscription_id: str) -> list[int]:
    """Events in each run of the subscription's workflow, first to last."""
    client = billing.env.client
    run_id = (await billing.handle(subscription_id).describe()).run_id
    sizes = []
    while run_id:
        history = await client.get_workflow_handle(
            subscription_workflow_id(subscription_id), run_id=run_id
        ).fetch_history()
        sizes.append(len(history.events))
        run_id = history.events[0].workflow_execution_started_event_attributes.continued_execution_run_id
    return sizes[::-1]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_an_invoice_no_retry_can_calculate_is_failed_and_billing_goes_on(billing: Billing) -> None:
    """A usage value beyond NUMERIC(38, 9) (written straight to the table, as the API now rejects it) makes
    the calculation overflow: the invoice is FAILED with the reason, the advance answers, the next period
    bills as usual, and the workflow's current details name the invoice for an operator."""
    product = await billing.product()
    metric = await billing.metric(product, "llm.tokens")
    price = await billing.price(
        billableMetricId=metric, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Tokens",
        properties={"unitPrice": "0.001"},
    )  # fmt: skip
    plan = await billing.plan(product, [price])
    customer = await billing.customer()
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(plan, customer, JAN31, testClockId=clock)
    async with session_factory(billing.engine)() as session:
        session.add(
            MeterEvent(
                id=new_id("event"), merchant_id=billing.merchant.merchant_id, environment="sandbox",
                type="llm.tokens", source="tests", subject=customer, data={"value": 10**35},
                timestamp=JAN31 + timedelta(days=3), idempotency_key=uuid4().hex,
            )
        )  # fmt: skip
        await session.commit()

    await asyncio.wait_for(billing.advance(clock, FEB28 + GRACE), 60)
    failed, following = (await billing.invoices(sub["id"]))[1:3]
    assert (failed.status, following.status) == ("FAILED", "ACTIVE")
    assert "no retry can fix it" in failed.metadata_["failure"]["message"]
    assert [t["to"] for t in failed.metadata_["transitions"]][-3:] == ["CLOSED", "CALCULATING", "FAILED"]
    shown = await billing.get(f"/v2/invoices/{failed.id}")
    assert (shown["status"], shown["metadata"]["failure"]["type"]) == ("FAILED", "CalculationFailed")
    state = await billing.handle(sub["id"]).query(SubscriptionWorkflow.live_state)
    assert state is not None and failed.id in state.attention[0]

    await billing.event(customer, "llm.tokens", FEB28 + timedelta(days=1), value=1000)
    await asyncio.wait_for(billing.advance(clock, datetime(2026, 3, 31, tzinfo=UTC) + GRACE), 60)
    issued = (await billing.invoices(sub["id"]))[2]
    assert (issued.status, issued.grand_total) == ("ISSUED", Decimal("1.00"))


async def test_deleting_a_clock_ends_its_idle_workflow(billing: Billing) -> None:
    clock = await billing.clock(JAN31)
    await billing.advance(clock, FEB28)  # starts the clock's workflow, which then idles
    handle = billing.env.client.get_workflow_handle(clock_workflow_id(clock))
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

    deleted = await billing.http.delete(f"/v0/testClocks/{clock}")
    assert deleted.status_code == 200 and deleted.json()["deletedAt"], deleted.text
    await asyncio.wait_for(handle.result(), 30)
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        async for e in handle.fetch_history_events()
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals == ["clock_deleted"]
    # Deleting again, and deleting a clock never advanced (it has no workflow), are plain 200s.
    again = await billing.http.delete(f"/v0/testClocks/{clock}")
    assert again.status_code == 200 and again.json()["deletedAt"] == deleted.json()["deletedAt"]
    never_advanced = await billing.clock(JAN31)
    assert (await billing.http.delete(f"/v0/testClocks/{never_advanced}")).status_code == 200


async def test_an_advance_that_starts_the_workflow_of_a_deleted_clock_is_refused(billing: Billing) -> None:
    """A DELETE that commits between a PATCH's check and its update-with-start: the fresh workflow reads the
    deletion, refuses the advance, leaves the row as it is and ends."""
    clock = await billing.clock(JAN31)
    async with session_factory(billing.engine)() as session:
        row = await session.get_one(TestClock, clock)
        row.deleted_at = JAN31
        await session.commit()
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await advance_test_clock(billing.env.client, billing.task_queue, clock, JAN31, FEB28)
    assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == "ClockDeleted"
    await asyncio.wait_for(billing.env.client.get_workflow_handle(clock_workflow_id(clock)).result(), 30)
    async with session_factory(billing.engine)() as session:
        assert (await session.get_one(TestClock, clock)).current_time == JAN31
