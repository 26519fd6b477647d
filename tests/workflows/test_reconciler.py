"""The reconciler restores design.md's invariant: every subscription that still owes work has a running
workflow. Real API, worker, PostgreSQL and time-skipping server (the Schedule itself: tests/e2e)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from db import subscriptions as records
from db.models import Customer, Plan
from db.session import session_factory
from tests.workflows.billing_harness import GRACE, Billing, eventually
from workflows.reconciler import ReconcileRequest, ReconcileResult, ReconcilerWorkflow

START = datetime(2028, 1, 1, tzinfo=UTC)


async def reconcile(billing: Billing, min_age_seconds: int = 0) -> ReconcileResult:
    return await billing.env.client.execute_workflow(
        ReconcilerWorkflow.run,
        # Scoped to this test's merchant: other tests leave workflow-less rows in the shared database.
        ReconcileRequest(min_age_seconds=min_age_seconds, merchant_id=billing.merchant.merchant_id),
        id=f"reconciler-{billing.task_queue}",
        task_queue=billing.task_queue,
    )


async def running(billing: Billing, subscription_id: str) -> bool:
    try:
        described = await billing.handle(subscription_id).describe()
    except RPCError:
        return False
    return described.status == WorkflowExecutionStatus.RUNNING


async def stored_without_workflow(billing: Billing, plan_id: str, customer_id: str, **over: Any) -> str:
    """What a crash between the API's commit and its workflow start leaves: the row, no Invoice 0, no
    workflow."""
    async with session_factory(billing.engine)() as session:
        plan = await session.scalar(select(Plan).where(Plan.id == plan_id))
        customer = await session.scalar(select(Customer).where(Customer.id == customer_id))
        assert plan is not None and customer is not None
        fields: dict[str, Any] = {
            "merchant_id": billing.merchant.merchant_id, "environment": "sandbox", "customer": customer,
            "plan": plan, "name": "Crashed create", "started_at": START, "ending_at": None,
            "auto_charge": False, "tax_exempt": False, "minimum_account_balance": None,
            "redirect_urls": None, "session_expiry_minutes": 240, "test_clock_id": None,
            "renewal_reminder_enabled": None, "renewal_reminder_days": None,
        } | over  # fmt: skip
        sub = await records.insert(session, records.NewSubscription(**fields))
        await session.commit()
        return sub.id


async def test_starts_the_workflow_a_crashed_create_left_out(billing: Billing) -> None:
    plan, _ = await billing.quickstart_catalog()
    clock = await billing.clock(START)
    healthy = await billing.subscribe(plan, await billing.customer(), START, testClockId=clock)
    orphan = await stored_without_workflow(billing, plan, await billing.customer(), test_clock_id=clock)
    assert not await running(billing, orphan)
    healthy_run = (await billing.handle(healthy["id"]).describe()).run_id

    result = await reconcile(billing)
    assert result.started == [orphan]
    assert result.checked >= 2
    assert await running(billing, orphan)
    # The healthy subscription's workflow is the same run: nothing doubled.
    assert (await billing.handle(healthy["id"]).describe()).run_id == healthy_run

    # The started workflow is the real one: it writes the orphan's Invoice 0 and checkout, and drives them
    # like any other.
    payment = await eventually(lambda: payment_of(billing, orphan))
    await billing.pay({"id": orphan, "payment": payment})
    await eventually(lambda: assert_status(billing, orphan, "active"))

    # A second pass finds nothing to do.
    assert (await reconcile(billing)).started == []


async def test_restarts_a_workflow_terminated_by_hand_and_it_carries_on(billing: Billing) -> None:
    plan, _ = await billing.quickstart_catalog()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, await billing.customer(), START, testClockId=clock)
    await billing.activate(sub)
    await billing.handle(sub["id"]).terminate("operator mistake")
    assert not await running(billing, sub["id"])

    assert (await reconcile(billing)).started == [sub["id"]]
    # The new run loads its state from the database and bills the period it was in.
    await billing.advance(clock, datetime(2028, 2, 1, tzinfo=UTC) + GRACE)
    invoices = {i.sequence_number: i.status for i in await billing.invoices(sub["id"])}
    assert invoices[1] == "ISSUED" and invoices[2] == "ACTIVE"


async def test_leaves_young_and_finished_subscriptions_alone(billing: Billing) -> None:
    plan, _ = await billing.quickstart_catalog()
    young = await stored_without_workflow(billing, plan, await billing.customer())
    # Within the age limit the API's own request may still be starting the workflow.
    result = await reconcile(billing, min_age_seconds=3600)
    assert young not in result.started
    assert not await running(billing, young)

    # A terminated subscription whose last invoice is final needs no workflow.
    clock = await billing.clock(START)
    done = await billing.subscribe(plan, await billing.customer(), START, testClockId=clock)
    await billing.activate(done)
    await billing.post(f"/v0/subscriptions/{done['id']}/termination", {"reason": "done"}, 200)
    await billing.advance(clock, START + timedelta(days=2) + GRACE)
    await billing.handle(done["id"]).result()
    assert done["id"] not in (await reconcile(billing)).started
    assert not await running(billing, done["id"])


async def payment_of(billing: Billing, subscription_id: str) -> dict[str, Any]:
    view = await billing.get(f"/v0/subscriptions/{subscription_id}")
    payment: dict[str, Any] | None = view["payment"]
    assert payment is not None, "Invoice 0 not written yet"
    return payment


async def assert_status(billing: Billing, subscription_id: str, status: str) -> None:
    assert await billing.status(subscription_id) == status


async def test_restarts_a_terminated_subscription_whose_final_invoice_is_unfinished(billing: Billing) -> None:
    """Terminated mid-period, its final invoice waiting out the grace window, workflow lost: the restarted
    run finalizes that invoice and finishes."""
    plan, _ = await billing.quickstart_catalog()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, await billing.customer(), START, testClockId=clock)
    await billing.activate(sub)
    await billing.advance(clock, START + timedelta(days=10))
    await billing.post(f"/v0/subscriptions/{sub['id']}/termination", {"reason": "leaving"}, 200)
    await billing.handle(sub["id"]).terminate("lost")

    assert (await reconcile(billing)).started == [sub["id"]]
    await billing.advance(clock, START + timedelta(days=10) + GRACE)
    await billing.handle(sub["id"]).result()
    final = (await billing.invoices(sub["id"]))[-1]
    # Nothing used and no fee in arrears: a zero final invoice, paid at issue.
    assert (final.sequence_number, final.status, final.is_final) == (1, "PAID", True)
    assert final.issued_at is not None
    assert (await reconcile(billing)).started == []
