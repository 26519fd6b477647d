"""PaymentWorkflow on the real API, worker and PostgreSQL (time-skipping): the durable timer expires a payment
exactly at expiresAt (payment.expired.v0), a completion on the sandbox page before then ends the workflow
and its timer (payment.completed.v0, redirect to successRedirectUrl), a duplicate completion signal — also
one arriving after the workflow ended — changes the payment once, a decline leaves it payable, a worker
restart mid-way expires it once, and the reconciler starts the workflow a crash left out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.payment import PaymentActivities
from db.merchants import NewMerchant
from db.models import Payment
from db.session import session_factory
from domain.ids import new_id
from settings import Settings
from tests.workflows.billing_harness import GRACE, Billing, billing_stack, eventually
from tests.workflows.conftest import time_skipping_server
from tests.workflows.test_replay import RECORD, replay, run_chain, save
from worker import build_worker
from workflows.client import send_one_off_payment_outcome
from workflows.ids import payment_workflow_id
from workflows.payment_messages import ExpirePayment, PaymentOutcome, RecordOutcome
from workflows.reconciler import ReconcileRequest, ReconcilerWorkflow


@pytest.fixture
async def own_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this test's own: its time starts at the wall clock's, which the API's
    expiresAt is computed from, and env.sleep skips no other test's time."""
    async for env in time_skipping_server():
        yield env


@pytest.fixture
async def timed(
    own_env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    async for stack in billing_stack(own_env, engine, settings, merchant, with_worker=False):
        yield stack


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def create(billing: Billing, **extra: Any) -> dict[str, Any]:
    body = {"amount": "42.00", "currency": "USD", "expiresIn": "P1D"} | extra
    created: dict[str, Any] = await billing.post("/v0/payments", body, 201)
    return created


async def row(billing: Billing, payment_id: str) -> Payment:
    async with session_factory(billing.engine)() as session:
        return await session.get_one(Payment, payment_id)


async def events(billing: Billing, event_type: str, payment_id: str) -> list[dict[str, Any]]:
    return [p for p in await billing.outbox(event_type) if p["id"] == payment_id]


async def status_of(billing: Billing, payment_id: str) -> WorkflowExecutionStatus | None:
    try:
        described = await billing.env.client.get_workflow_handle(payment_workflow_id(payment_id)).describe()
    except RPCError:
        return None
    return described.status


async def test_the_timer_expires_the_payment_exactly_at_expires_at(timed: Billing) -> None:
    billing = timed
    async with build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE):
        pay = await create(billing)
        expires = _parse(pay["expiresAt"])
        await billing.env.sleep(timedelta(hours=23))
        assert (await row(billing, pay["id"])).status == "pending"
        assert await status_of(billing, pay["id"]) == WorkflowExecutionStatus.RUNNING
        await billing.env.sleep(timedelta(hours=2))
        handle = billing.env.client.get_workflow_handle(payment_workflow_id(pay["id"]))
        await handle.result()
        chain = await run_chain(billing, payment_workflow_id(pay["id"]))
    done = await row(billing, pay["id"])
    assert (done.status, done.expired_at, done.completed_at) == ("expired", done.expires_at, None)
    assert abs(done.expires_at - expires) < timedelta(milliseconds=1)  # the wire shows milliseconds
    sent = await events(billing, "payment.expired.v0", pay["id"])
    assert [(p["status"], p["amount"], p["expiresAt"]) for p in sent] == [
        ("expired", "42.00", pay["expiresAt"])
    ]
    got = await billing.get(f"/v0/payments/{pay['id']}")
    assert got == sent[0]
    # The page says so (and a late button press records nothing).
    assert (await billing.http.get(f"/pay/{pay['id']}")).status_code == 410
    late = await billing.http.post(f"/pay/{pay['id']}/complete")
    assert late.status_code == 410
    assert (await row(billing, pay["id"])).status == "expired"
    await replay(chain)
    if RECORD:
        save("payment-expiry", chain)


async def test_completion_on_the_page_before_expiry_ends_the_timer(billing: Billing) -> None:
    pay = await create(billing, successRedirectUrl="https://shop.example/thanks", reference="Order 7")
    page = await billing.http.get(f"/pay/{pay['id']}")
    assert page.status_code == 200
    assert "42.00 USD" in page.text and "Order 7" in page.text and "Pay (test)" in page.text
    response = await billing.http.post(f"/pay/{pay['id']}/complete")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "https://shop.example/thanks"
    done = await row(billing, pay["id"])
    assert done.status == "completed" and done.completed_at is not None
    assert done.completed_at < done.expires_at
    # The workflow ended with the payment: no timer left behind.
    await billing.env.client.get_workflow_handle(payment_workflow_id(pay["id"])).result()
    assert await status_of(billing, pay["id"]) == WorkflowExecutionStatus.COMPLETED
    sent = await events(billing, "payment.completed.v0", pay["id"])
    assert [p["status"] for p in sent] == ["completed"]
    assert await events(billing, "payment.expired.v0", pay["id"]) == []
    paid = await billing.http.get(f"/pay/{pay['id']}")
    assert paid.status_code == 200 and "Payment received" in paid.text
    got = await billing.get(f"/v0/payments/{pay['id']}")
    assert got["status"] == "completed"
    listed = await billing.get("/v0/payments", status="completed")
    assert [p["id"] for p in listed["data"]] == [pay["id"]]


async def test_a_duplicate_completion_changes_the_payment_once(billing: Billing) -> None:
    pay = await create(billing)
    outcome = PaymentOutcome(payment_id=pay["id"], outcome="completed", source="stripe webhook")
    m = billing.merchant
    for _ in range(3):
        await send_one_off_payment_outcome(
            billing.env.client, billing.task_queue, pay["id"], outcome, merchant_id=m.merchant_id
        )

    async def completed() -> Payment:
        found = await row(billing, pay["id"])
        assert found.status == "completed"
        return found

    first = await eventually(completed)
    handle = billing.env.client.get_workflow_handle(payment_workflow_id(pay["id"]))
    await handle.result()
    # After the workflow ended: signal-with-start gets a new run that records nothing and ends.
    await send_one_off_payment_outcome(
        billing.env.client, billing.task_queue, pay["id"], outcome, merchant_id=m.merchant_id
    )
    await billing.env.client.get_workflow_handle(payment_workflow_id(pay["id"])).result()
    again = await row(billing, pay["id"])
    assert (again.status, again.completed_at) == ("completed", first.completed_at)
    assert len(await events(billing, "payment.completed.v0", pay["id"])) == 1
    # The activity run again (a retry after a lost answer) finds the work done.
    recorded = await ActivityEnvironment().run(
        PaymentActivities(billing.engine).record_payment_outcome,
        RecordOutcome(payment_id=pay["id"], outcome="completed", at=datetime.now(UTC)),
    )
    assert (recorded.status, recorded.changed) == ("completed", False)
    expired = await ActivityEnvironment().run(
        PaymentActivities(billing.engine).expire_payment,
        ExpirePayment(payment_id=pay["id"], at=datetime.now(UTC) + timedelta(days=60)),
    )
    assert (expired.status, expired.changed) == ("completed", False)
    assert len(await events(billing, "payment.completed.v0", pay["id"])) == 1


async def test_a_decline_leaves_it_payable_then_it_completes(billing: Billing) -> None:
    pay = await create(billing, failureRedirectUrl="https://shop.example/sorry")
    response = await billing.http.post(f"/pay/{pay['id']}/decline")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "https://shop.example/sorry"
    declined = await row(billing, pay["id"])
    assert (declined.status, declined.declined_at is not None) == ("pending", True)
    page = await billing.http.get(f"/pay/{pay['id']}")
    assert page.status_code == 200 and "was declined" in page.text
    assert await status_of(billing, pay["id"]) == WorkflowExecutionStatus.RUNNING
    # No redirect URL for success: the done page shows the outcome.
    response = await billing.http.post(f"/pay/{pay['id']}/complete")
    assert (response.status_code, response.headers["location"]) == (303, f"/pay/{pay['id']}/done")
    done = await billing.http.get(f"/pay/{pay['id']}/done")
    assert "Payment received" in done.text
    assert (await row(billing, pay["id"])).status == "completed"
    assert len(await events(billing, "payment.completed.v0", pay["id"])) == 1


async def test_a_processing_payment_completes_and_pages_tell_the_payer(billing: Billing) -> None:
    pay = await create(billing)
    m = billing.merchant
    processing = PaymentOutcome(payment_id=pay["id"], outcome="processing", source="stripe webhook")
    await send_one_off_payment_outcome(
        billing.env.client, billing.task_queue, pay["id"], processing, merchant_id=m.merchant_id
    )

    async def is_processing() -> None:
        assert (await row(billing, pay["id"])).status == "processing"

    await eventually(is_processing)
    assert (await billing.get(f"/v0/payments/{pay['id']}"))["status"] == "processing"
    completed = PaymentOutcome(payment_id=pay["id"], outcome="completed", provider_reference="pi_123")
    await send_one_off_payment_outcome(
        billing.env.client, billing.task_queue, pay["id"], completed, merchant_id=m.merchant_id
    )
    await billing.env.client.get_workflow_handle(payment_workflow_id(pay["id"])).result()
    done = await row(billing, pay["id"])
    assert (done.status, done.provider_reference) == ("completed", "pi_123")
    for path, status in (("/pay/pay_unknown", 404), ("/pay/nonsense", 404), ("/pay/pay_x/complete", 404)):
        method = "POST" if path.endswith("complete") else "GET"
        assert (await billing.http.request(method, path)).status_code == status


async def test_a_worker_restart_mid_way_expires_once(timed: Billing) -> None:
    billing = timed
    # No workflow cache (no sticky queue the test server would keep the next task on after the shutdown).
    first = build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE, cached_workflows=0)
    async with first:
        pay = await create(billing, expiresIn="P10D")
        handle = billing.env.client.get_workflow_handle(payment_workflow_id(pay["id"]))

        async def loaded() -> None:
            assert await handle.query("live_state") is not None

        await eventually(loaded)
    await billing.env.sleep(timedelta(days=4))
    async with build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE):
        await billing.env.sleep(timedelta(days=7))
        await handle.result()
    done = await row(billing, pay["id"])
    assert (done.status, done.expired_at) == ("expired", done.expires_at)
    assert len(await events(billing, "payment.expired.v0", pay["id"])) == 1


async def test_the_reconciler_starts_a_missing_workflow(billing: Billing) -> None:
    m = billing.merchant
    # What a crash between the API's commit and its workflow start leaves: the payment, no workflow.
    async with session_factory(billing.engine)() as session:
        crashed = Payment(
            id=new_id("payment"), merchant_id=m.merchant_id, environment=m.environment, status="pending",
            amount=Decimal("10.00"), currency="USD", payment_url="http://accrue.test/pay/x",
            expires_at=datetime.now(UTC) + timedelta(days=30), provider="sandbox",
        )  # fmt: skip
        settled = Payment(
            id=new_id("payment"), merchant_id=m.merchant_id, environment=m.environment, status="completed",
            amount=Decimal("10.00"), currency="USD", payment_url="http://accrue.test/pay/y",
            expires_at=datetime.now(UTC) + timedelta(days=30), provider="sandbox",
            completed_at=datetime.now(UTC),
        )  # fmt: skip
        session.add_all([crashed, settled])
        await session.commit()
    assert await status_of(billing, crashed.id) is None
    result = await billing.env.client.execute_workflow(
        ReconcilerWorkflow.run,
        ReconcileRequest(min_age_seconds=0, merchant_id=m.merchant_id),
        id=f"reconciler-{billing.task_queue}",
        task_queue=billing.task_queue,
    )
    assert crashed.id in result.started and settled.id not in result.started
    assert await status_of(billing, crashed.id) == WorkflowExecutionStatus.RUNNING
    assert await status_of(billing, settled.id) is None
