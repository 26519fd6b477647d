"""autoCharge and dunning on the time-skipping server (issue 11 item 5): the saved method of Invoice 0 is
charged off-session when a period invoice is issued; a failed charge is PAYMENT_FAILED, emits
invoice.payment_failed.v0 and is retried on ACCRUE_DUNNING_SCHEDULE (offsets from the first failure),
as deadlines on the subscription's test clock; after the last failure the policy keeps or terminates the
subscription; a payment by hand through the portal's Pay now ends the retries.

The sandbox provider decides declines from the saved test method alone (integrations/payments/sandbox.py:
`pm_sandbox_decline` always, `pm_sandbox_decline_first_<n>` attempts 1..n), so nothing of ours is mocked.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.subscription import SubscriptionActivities
from db.merchants import NewMerchant
from settings import Settings
from tests.workflows.billing_harness import GRACE, Billing, billing_stack, eventually
from worker import build_worker
from workflows.client import send_payment_completed, start_subscription_workflow
from workflows.subscription import SubscriptionWorkflow
from workflows.subscription_messages import ChargeInvoice, PaymentCompleted

START = datetime(2028, 1, 31, tzinfo=UTC)
# Period 1 is [Jan 31, Feb 29); invoice 1 is finalized, issued and first charged at gracePeriodEnd.
ISSUED_AT = datetime(2028, 2, 29, tzinfo=UTC) + GRACE
DAY = timedelta(days=1)


async def stack(
    env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant, **dunning: Any
) -> AsyncIterator[Billing]:
    """The billing stack with a worker whose dunning settings are `dunning` (Settings field names)."""
    payments = settings.model_copy(update=dunning)
    async for billing in billing_stack(env, engine, settings, merchant, with_worker=False):
        async with build_worker(
            env.client, engine, billing.task_queue, GRACE, settings.base_url, payment_settings=payments
        ):
            yield billing


@pytest.fixture
async def keep(
    workflow_env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    async for billing in stack(workflow_env, engine, settings, merchant, dunning_policy="keep"):
        yield billing


@pytest.fixture
async def terminate(
    workflow_env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    async for billing in stack(workflow_env, engine, settings, merchant, dunning_policy="terminate"):
        yield billing


async def auto_charged(billing: Billing, method: str) -> tuple[dict[str, Any], str]:
    """An autoCharge subscription on a clock whose $49 Invoice 0 was paid on the sandbox page with the test
    method `method`, which the subscription keeps for its off-session charges."""
    plan, _ = await billing.quickstart_catalog()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, await billing.customer(), START, testClockId=clock, autoCharge=True)
    assert sub["status"] == "pending_payment" and sub["autoCharge"] is True
    payment = sub["payment"]
    paid = PaymentCompleted(
        invoice_id=payment["invoiceId"], payment_session_id=payment["paymentSessionId"], payment_method=method
    )
    await send_payment_completed(billing.env.client, billing.task_queue, sub["id"], paid)

    async def active() -> None:
        assert await billing.status(sub["id"]) == "active"

    await eventually(active)
    return sub, clock


async def invoice1(billing: Billing, sub: dict[str, Any]) -> Any:
    return next(i for i in await billing.invoices(sub["id"]) if i.sequence_number == 1)


def charges(invoice: Any) -> list[tuple[int, datetime, str]]:
    return [
        (c["attempt"], datetime.fromisoformat(c["at"]), c["outcome"]) for c in invoice.metadata_["charges"]
    ]


async def failed_events(billing: Billing, invoice_id: str) -> list[dict[str, Any]]:
    return [p for p in await billing.outbox("invoice.payment_failed.v0") if p["id"] == invoice_id]


async def test_fails_twice_then_the_second_retry_pays_it_at_the_schedules_offsets(keep: Billing) -> None:
    """Charge at issue and the first retry (+P1D) fail; the second retry (+P3D, the third charge) pays."""
    billing = keep
    sub, clock = await auto_charged(billing, "pm_sandbox_decline_first_2")
    await billing.advance(clock, ISSUED_AT)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAYMENT_FAILED"
    assert charges(invoice) == [(1, ISSUED_AT, "failed")]
    assert invoice.payment_session_id is not None  # the portal's Pay now
    # Nothing happens before the first retry's offset.
    await billing.advance(clock, ISSUED_AT + DAY - timedelta(minutes=1))
    assert len(charges(await invoice1(billing, sub))) == 1
    await billing.advance(clock, ISSUED_AT + 8 * DAY)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAID"
    assert invoice.paid_at == ISSUED_AT + 3 * DAY
    assert charges(invoice) == [
        (1, ISSUED_AT, "failed"),
        (2, ISSUED_AT + DAY, "failed"),
        (3, ISSUED_AT + 3 * DAY, "paid"),
    ]
    assert [t["to"] for t in invoice.metadata_["transitions"]][-3:] == ["ISSUED", "PAYMENT_FAILED", "PAID"]
    failed = await failed_events(billing, invoice.id)
    assert [e["status"] for e in failed] == ["PAYMENT_FAILED", "PAYMENT_FAILED"]
    paid = [p for p in await billing.outbox("invoice.paid.v0") if p["id"] == invoice.id]
    assert len(paid) == 1 and paid[0]["status"] == "PAID"
    assert await billing.status(sub["id"]) == "active"
    live = await billing.handle(sub["id"]).query(SubscriptionWorkflow.live_state)
    assert live.dunning == []


async def test_fails_three_times_then_the_third_retry_pays_it(keep: Billing) -> None:
    billing = keep
    sub, clock = await auto_charged(billing, "pm_sandbox_decline_first_3")
    await billing.advance(clock, ISSUED_AT + 8 * DAY)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAID" and invoice.paid_at == ISSUED_AT + 5 * DAY
    assert [at for _, at, _ in charges(invoice)] == [ISSUED_AT + d * DAY for d in (0, 1, 3, 5)]


async def test_always_declined_with_keep_stays_payment_failed_and_active(keep: Billing) -> None:
    billing = keep
    sub, clock = await auto_charged(billing, "pm_sandbox_declined")
    await billing.advance(clock, ISSUED_AT + 10 * DAY)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAYMENT_FAILED"
    assert charges(invoice) == [
        (n, ISSUED_AT + d * DAY, "failed") for n, d in ((1, 0), (2, 1), (3, 3), (4, 5), (5, 7))
    ]
    assert len(await failed_events(billing, invoice.id)) == 5
    assert await billing.status(sub["id"]) == "active"
    live = await billing.handle(sub["id"]).query(SubscriptionWorkflow.live_state)
    assert live.dunning == [] and live.status == "active"


async def test_always_declined_with_terminate_ends_the_subscription_by_system(terminate: Billing) -> None:
    billing = terminate
    sub, clock = await auto_charged(billing, "pm_sandbox_declined")
    await billing.advance(clock, ISSUED_AT + 10 * DAY)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAYMENT_FAILED" and len(charges(invoice)) == 5
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert got["status"] == "terminated" and got["terminatedBy"] == "system"
    assert datetime.fromisoformat(got["terminatedAt"].replace("Z", "+00:00")) == ISSUED_AT + 7 * DAY
    assert "unpaid" in got["terminationReason"]
    # The period cut short is billed as after any termination: no usage and no in-advance fee on a final
    # invoice, so it is free and PAID at once (one with a total would be charged like any other).
    final = next(i for i in await billing.invoices(sub["id"]) if i.sequence_number == 2)
    assert final.is_final and final.period_end == ISSUED_AT + 7 * DAY
    assert final.grand_total == 0 and final.status == "PAID"


async def test_pay_now_in_the_portal_mid_dunning_stops_the_retries(keep: Billing) -> None:
    billing = keep
    sub, clock = await auto_charged(billing, "pm_sandbox_declined")
    await billing.advance(clock, ISSUED_AT + DAY)
    assert len(charges(await invoice1(billing, sub))) == 2
    portal = await billing.post(f"/v0/subscriptions/{sub['id']}/portal", {})
    page = await billing.http.get(httpx_path(portal["url"]), headers={"Authorization": ""})
    assert page.status_code == 200
    found = re.search(r'href="(/checkout/(ps_[A-Za-z0-9]+))"[^>]*>Pay now<', page.text)
    assert found, page.text
    paid = await billing.http.post(f"{found[1]}/complete", headers={"Authorization": ""})
    assert paid.status_code in (200, 303), paid.text

    async def is_paid() -> None:
        assert (await invoice1(billing, sub)).status == "PAID"

    await eventually(is_paid)
    await billing.advance(clock, ISSUED_AT + 10 * DAY)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAID" and invoice.paid_at == ISSUED_AT + DAY
    assert len(charges(invoice)) == 2  # no retry after the payment
    assert (await billing.handle(sub["id"]).query(SubscriptionWorkflow.live_state)).dunning == []


async def test_a_retried_charge_activity_charges_once(keep: Billing, engine: AsyncEngine) -> None:
    """The activity run again for the same attempt (a retry after its commit) returns the recorded outcome
    and makes no second charge; the next attempt number is a new charge."""
    billing = keep
    sub, clock = await auto_charged(billing, "pm_sandbox_declined")
    await billing.advance(clock, ISSUED_AT)
    invoice = await invoice1(billing, sub)
    activities = SubscriptionActivities(engine, GRACE, "http://accrue.test")
    again = ChargeInvoice(subscription_id=sub["id"], invoice_id=invoice.id, attempt=1, at=ISSUED_AT)
    outcome = await ActivityEnvironment().run(activities.charge_invoice, again)
    assert outcome.status == "PAYMENT_FAILED" and outcome.retry_at == ISSUED_AT + DAY
    assert len(charges(await invoice1(billing, sub))) == 1
    assert len(await failed_events(billing, invoice.id)) == 1


def httpx_path(url: str) -> str:
    import httpx

    return httpx.URL(url).raw_path.decode()


async def test_a_restarted_workflow_picks_the_retries_up_from_the_database(keep: Billing) -> None:
    """A run terminated by hand mid-dunning and started again (as the reconciler does) loads the retries
    it still owes from the invoice's recorded charges and keeps to the same schedule."""
    billing = keep
    sub, clock = await auto_charged(billing, "pm_sandbox_decline_first_2")
    await billing.advance(clock, ISSUED_AT + DAY)
    assert len(charges(await invoice1(billing, sub))) == 2
    await billing.handle(sub["id"]).terminate("operator mistake")
    await start_subscription_workflow(billing.env.client, billing.task_queue, sub["id"])

    async def loaded() -> None:
        live = await billing.handle(sub["id"]).query(SubscriptionWorkflow.live_state)
        assert live is not None
        assert [(d.attempts, d.next_at) for d in live.dunning] == [(2, ISSUED_AT + 3 * DAY)]

    await eventually(loaded)
    await billing.advance(clock, ISSUED_AT + 4 * DAY)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAID" and invoice.paid_at == ISSUED_AT + 3 * DAY
    assert [n for n, _, _ in charges(invoice)] == [1, 2, 3]


@pytest.fixture
async def slow(
    workflow_env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    """One retry 40 days after the first failure: later than the first checkout's 30 days."""
    async for billing in stack(workflow_env, engine, settings, merchant, dunning_schedule=(40 * DAY,)):
        yield billing


async def test_a_retry_after_the_checkout_lapsed_opens_a_fresh_one_for_pay_now(slow: Billing) -> None:
    billing = slow
    sub, clock = await auto_charged(billing, "pm_sandbox_declined")
    await billing.advance(clock, ISSUED_AT)
    first = (await invoice1(billing, sub)).payment_session_id
    await billing.advance(clock, ISSUED_AT + 41 * DAY)
    invoice = await invoice1(billing, sub)
    assert [at for _, at, _ in charges(invoice)] == [ISSUED_AT, ISSUED_AT + 40 * DAY]
    assert invoice.status == "PAYMENT_FAILED" and invoice.payment_session_id not in (None, first)
    checkout = await billing.get(f"/v0/paymentSessions/{invoice.payment_session_id}")
    assert checkout["status"] == "open"
