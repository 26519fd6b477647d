"""Reliability: activities retried after their commit, a worker killed in the middle of a period close, and
concurrent duplicate creates, each still giving one subscription and exactly one invoice per period with the
right total."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.health import HealthActivities
from activities.heartbeat import HeartbeatInterceptor
from activities.subscription import SubscriptionActivities
from activities.test_clock import TestClockActivities
from db.billing import BillingContext
from db.merchants import NewMerchant
from db.models import Invoice, LineItem, PaymentSession, Subscription
from db.session import session_factory
from settings import Settings
from tests.workflows.billing_harness import GRACE, Billing, assert_recomputable, billing_stack
from worker import WORKFLOWS, build_worker
from workflows.subscription_messages import (
    ClosePeriod,
    FinalizeInvoice,
    InvoiceOutcome,
    OpenPeriod,
    PaymentOutcome,
    PeriodClosed,
    PeriodInfo,
    RecordPayment,
    Terminate,
    Terminated,
)

D = Decimal
START = datetime(2028, 1, 31, tzinfo=UTC)
BASE_URL = "http://accrue.test"
PERIOD_ENDS = [datetime(2028, 2, 29, tzinfo=UTC), datetime(2028, 3, 31, tzinfo=UTC)]


@pytest.fixture
async def billing(
    workflow_env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    async for stack in billing_stack(workflow_env, engine, settings, merchant, with_worker=False):
        yield stack


def worker_with(billing: Billing, activities: SubscriptionActivities, **options: Any) -> Worker:
    """worker.build_worker, with the subscription activities given."""
    health = HealthActivities(billing.engine)
    clocks = TestClockActivities(billing.engine, billing.env.client)
    return Worker(
        billing.env.client,
        task_queue=billing.task_queue,
        workflows=WORKFLOWS,
        activities=[health.check_database, *activities.all(), *clocks.all()],
        interceptors=[HeartbeatInterceptor()],
        **options,
    )


async def quickstart(billing: Billing, **subscription: Any) -> tuple[dict[str, Any], str]:
    """Seed 002 on a test clock: $49 a month in advance, tokens at $0.001 in arrears."""
    plan, _ = await billing.quickstart_catalog()
    customer = await billing.customer()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, customer, START, testClockId=clock, **subscription)
    return sub, clock


async def assert_one_invoice_per_period(
    billing: Billing, subscription_id: str, expected: list[tuple[int, str, D]]
) -> None:
    """(sequence number, status, grand total) per invoice; one set of lines per invoice, nothing doubled."""
    invoices = await billing.invoices(subscription_id)
    assert [(i.sequence_number, i.status, i.grand_total) for i in invoices] == expected
    for invoice in invoices:
        lines = await billing.lines(invoice.id)
        assert len({line.idempotency_key for line in lines}) == len(lines)
        assert_recomputable(invoice, lines)
    issued = [p["id"] for p in await billing.outbox("invoice.issued.v0")]
    assert sorted(issued) == sorted(i.id for i in invoices if i.issued_at is not None)


# ---- an activity retried after its commit ---------------------------------------------------------------


class ReplyLost(SubscriptionActivities):
    """Each state-changing activity commits, then fails its first attempt as if the worker had died before
    reporting the result: the retry must find the work done and answer as the first attempt would have."""

    def __init__(self, engine: AsyncEngine, grace_period: timedelta) -> None:
        super().__init__(engine, grace_period, BASE_URL)
        self.lost: list[str] = []
        self.finalized: list[InvoiceOutcome] = []  # every attempt's answer

    def _lose_first(self, result: Any) -> Any:
        info = activity.info()
        if info.attempt == 1:
            self.lost.append(info.activity_type)
            raise ApplicationError(f"{info.activity_type}: the reply was lost after the commit")
        return result

    @activity.defn(name="record_payment")
    async def record_payment(self, request: RecordPayment) -> PaymentOutcome:
        return self._lose_first(await super().record_payment(request))

    @activity.defn(name="open_period")
    async def open_period(self, request: OpenPeriod) -> PeriodInfo:
        return self._lose_first(await super().open_period(request))

    @activity.defn(name="close_period")
    async def close_period(self, request: ClosePeriod) -> PeriodClosed:
        return self._lose_first(await super().close_period(request))

    @activity.defn(name="finalize_invoice")
    async def finalize_invoice(self, request: FinalizeInvoice) -> InvoiceOutcome:
        outcome = await super().finalize_invoice(request)
        self.finalized.append(outcome)
        return self._lose_first(outcome)

    @activity.defn(name="terminate_subscription")
    async def terminate_subscription(self, request: Terminate) -> Terminated:
        return self._lose_first(await super().terminate_subscription(request))


async def test_activities_retried_after_their_commit_bill_each_period_once(billing: Billing) -> None:
    activities = ReplyLost(billing.engine, GRACE)
    async with worker_with(billing, activities):
        sub, clock = await quickstart(billing)
        await billing.activate(sub)
        await billing.event(sub["customerId"], "llm.tokens", START + timedelta(days=2), value=1500)
        await billing.advance(clock, PERIOD_ENDS[0] + GRACE)
        await billing.event(sub["customerId"], "llm.tokens", PERIOD_ENDS[0] + timedelta(days=2), value=700)
        cut = PERIOD_ENDS[0] + timedelta(days=10)
        await billing.advance(clock, cut)
        await billing.post(f"/v0/subscriptions/{sub['id']}/termination", {"reason": "Retry test"}, 200)
        await billing.advance(clock, cut + GRACE)
        await billing.handle(sub["id"]).result()

    assert sorted(set(activities.lost)) == [
        "close_period",
        "finalize_invoice",
        "open_period",
        "record_payment",
        "terminate_subscription",
    ]
    await assert_one_invoice_per_period(
        billing,
        sub["id"],
        [(0, "PAID", D("49.00")), (1, "ISSUED", D("50.50")), (2, "ISSUED", D("0.70"))],
    )
    # A retry answers exactly as the first attempt did (amounts as the API formats them).
    first, retried = activities.finalized[0], activities.finalized[1]
    assert first == retried and first.grand_total == "50.50"
    final = (await billing.invoices(sub["id"]))[2]
    assert (final.period_end, final.is_final) == (cut, True)
    assert len(await billing.outbox("subscription.cancelled.v0")) == 1
    assert len(await billing.outbox("invoice.paid.v0")) == 1  # Invoice 0, recorded once


# ---- a worker killed in the middle of a period close ----------------------------------------------------


class Stalls(SubscriptionActivities):
    """finalize_invoice stops at a point the test chooses and waits there until its worker is killed."""

    def __init__(self, engine: AsyncEngine, grace_period: timedelta, after_commit: bool) -> None:
        super().__init__(engine, grace_period, BASE_URL)
        self.after_commit = after_commit
        self.reached = asyncio.Event()

    async def _stall(self) -> None:
        self.reached.set()
        await asyncio.Event().wait()  # until cancelled by the worker's shutdown

    async def _calculate(
        self,
        session: AsyncSession,
        ctx: BillingContext,
        invoice: Invoice,
        at: datetime,
        charge_off_session: bool = False,
    ) -> None:
        await super()._calculate(session, ctx, invoice, at, charge_off_session)
        if not self.after_commit:
            await self._stall()  # lines written, invoice ISSUED, all uncommitted and row-locked

    @activity.defn(name="finalize_invoice")
    async def finalize_invoice(self, request: FinalizeInvoice) -> InvoiceOutcome:
        outcome = await super().finalize_invoice(request)
        await self._stall()  # committed, the result not yet reported
        return outcome


async def killed_mid_close(
    billing: Billing, stalls: Stalls | StallsInClose
) -> tuple[dict[str, Any], str, asyncio.Task[Any]]:
    """An advance across period 1's end and grace window, whose worker goes away where `stalls` waits;
    returns the subscription, its clock and the advance, still waiting for a worker."""
    # No workflow cache, so no sticky queue: a real server moves a dead worker's sticky workflow tasks back
    # to the task queue after a timeout, the time-skipping test server never does.
    doomed = worker_with(billing, stalls, max_cached_workflows=0)
    running = asyncio.create_task(doomed.run())
    sub, clock = await quickstart(billing)
    await billing.activate(sub)
    await billing.event(sub["customerId"], "llm.tokens", START + timedelta(days=2), value=2500)
    advance = asyncio.create_task(billing.advance(clock, PERIOD_ENDS[0] + GRACE))
    await asyncio.wait_for(stalls.reached.wait(), 15)
    running.cancel()  # the worker goes away with the activity in flight
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not advance.done()
    return sub, clock, advance


@pytest.mark.parametrize("after_commit", [False, True], ids=["before its commit", "after its commit"])
async def test_worker_killed_while_closing_a_period(billing: Billing, after_commit: bool) -> None:
    """The worker's task is cancelled with finalize_invoice in flight, its transaction open or already
    committed; a fresh worker on the task queue finishes the close. (The database sees what a SIGKILL
    leaves: a transaction that never committed, or one that did with its result lost; the SIGKILL itself is
    the next test.)"""
    sub, clock, advance = await killed_mid_close(billing, Stalls(billing.engine, GRACE, after_commit))
    async with build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE):
        await asyncio.wait_for(advance, 30)
        await assert_one_invoice_per_period(
            billing, sub["id"], [(0, "PAID", D("49.00")), (1, "ISSUED", D("51.50")), (2, "ACTIVE", D(0))]
        )
        # The new worker carries on: the next period closes as usual.
        await billing.advance(clock, PERIOD_ENDS[1] + GRACE)
    await assert_one_invoice_per_period(
        billing,
        sub["id"],
        [(0, "PAID", D("49.00")), (1, "ISSUED", D("51.50")), (2, "ISSUED", D("49.00")), (3, "ACTIVE", D(0))],
    )


class StallsInClose(SubscriptionActivities):
    """close_period (a local activity since workflow version 4) commits, then waits until its worker goes."""

    def __init__(self, engine: AsyncEngine, grace_period: timedelta) -> None:
        super().__init__(engine, grace_period, BASE_URL)
        self.reached = asyncio.Event()

    @activity.defn(name="close_period")
    async def close_period(self, request: ClosePeriod) -> PeriodClosed:
        closed = await super().close_period(request)
        self.reached.set()
        await asyncio.Event().wait()  # until cancelled by the worker's shutdown
        return closed


async def test_worker_killed_inside_a_local_activity(billing: Billing) -> None:
    """A local activity dies with its workflow task: the server times the task out and a fresh worker
    replays the workflow and runs close_period again, which finds the period already closed."""
    sub, _, advance = await killed_mid_close(billing, StallsInClose(billing.engine, GRACE))
    async with build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE):
        await asyncio.wait_for(advance, 60)
    await assert_one_invoice_per_period(
        billing, sub["id"], [(0, "PAID", D("49.00")), (1, "ISSUED", D("51.50")), (2, "ACTIVE", D(0))]
    )
    history = await billing.handle(sub["id"]).fetch_history()
    closes = [
        e
        for e in history.events
        if e.HasField("marker_recorded_event_attributes") and b"close_period" in e.SerializeToString()
    ]
    assert len(closes) == 1  # recorded once, by the worker that lived


# ---- duplicate creates ----------------------------------------------------------------------------------


async def test_concurrent_duplicate_creates_give_one_subscription(billing: Billing) -> None:
    product = await billing.product()
    fee = await billing.fee(product)
    price = await billing.price(
        feeId=fee, paymentTerm="in_advance", billingCadence="P1M", invoiceDisplayName="Platform fee",
        properties={"unitPrice": "49.00"},
    )  # fmt: skip
    plan = await billing.plan(product, [price])
    customer = await billing.customer()
    clock = await billing.clock(START)  # nothing of this test may fire later on the session's server
    body = {
        "name": "Acme - Pro",
        "planId": plan,
        "customerId": customer,
        "startedAt": START.isoformat(),
        "testClockId": clock,
    }
    async with build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE):
        answers = await asyncio.gather(*(billing.http.post("/v0/subscriptions", json=body) for _ in range(8)))
        assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
        ids = {a.json()["id"] for a in answers}
        assert len(ids) == 1
        [sub_id] = ids
        description = await billing.handle(sub_id).describe()
        history = await billing.handle(sub_id).fetch_history()
    started = [e for e in history.events if e.HasField("workflow_execution_started_event_attributes")]
    assert len(started) == 1
    # The only run there has been: no second start, no restart after a completion.
    assert description.run_id == description.raw_description.workflow_execution_info.first_run_id
    async with session_factory(billing.engine)() as session:
        counts = [
            await session.scalar(select(func.count()).where(model.subscription_id == sub_id))
            for model in (Invoice, PaymentSession)
        ]
        subscriptions = await session.scalar(
            select(func.count()).where(Subscription.customer_id == customer, Subscription.plan_id == plan)
        )
        lines = await session.scalar(select(func.count()).where(LineItem.subscription_id == sub_id))
    assert (subscriptions, counts, lines) == (1, [1, 1], 1)
    assert len(await billing.outbox("subscription.created.v0")) == 1


# ---- a worker process killed with SIGKILL ---------------------------------------------------------------

ROOT = str(Path(__file__).resolve().parents[2])
DOOMED_WORKER = """
import asyncio, sys
from temporalio.worker import Worker
from activities.heartbeat import HeartbeatInterceptor
from activities.test_clock import TestClockActivities
from db.session import create_engine
from tests.workflows.billing_harness import GRACE
from tests.workflows.test_reliability import Stalls
from worker import WORKFLOWS
from workflows.client import connect

async def main(target: str, database_url: str, task_queue: str) -> None:
    client = await connect(target)
    engine = create_engine(database_url, 2)
    stalls = Stalls(engine, GRACE, after_commit=False)
    clocks = TestClockActivities(engine, client)
    async with Worker(client, task_queue=task_queue, workflows=WORKFLOWS,
                      activities=[*stalls.all(), *clocks.all()],
                      interceptors=[HeartbeatInterceptor()], max_cached_workflows=0):
        print("polling", flush=True)
        await stalls.reached.wait()
        print("stalled", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def said(stream: asyncio.StreamReader, marker: bytes) -> None:
    """Until the process prints `marker` on a line of its own (the SDK logs to the same stream)."""
    while (line := await stream.readline()) and line.strip() != marker:
        pass
    assert line, f"the worker exited before printing {marker!r}"


async def test_a_worker_killed_mid_close_costs_a_heartbeat_timeout(
    billing: Billing, settings: Settings
) -> None:
    """A worker process dies with SIGKILL inside finalize_invoice (lines written, not committed, row locked)
    and reports nothing. The server notices when heartbeats stop, so the retry on a fresh worker follows
    the heartbeat timeout, not the activity's minutes-long start-to-close budget, and bills the period
    once."""
    target = billing.env.client.service_client.config.target_host
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DOOMED_WORKER, target, settings.database_url, billing.task_queue,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        await asyncio.wait_for(said(process.stdout, b"polling"), 60)
        sub, clock = await quickstart(billing)
        await billing.activate(sub)
        await billing.event(sub["customerId"], "llm.tokens", START + timedelta(days=2), value=2500)
        advance = asyncio.create_task(billing.advance(clock, PERIOD_ENDS[0] + GRACE))
        await asyncio.wait_for(said(process.stdout, b"stalled"), 60)
    finally:
        process.kill()
        await process.wait()
    async with build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE):
        await asyncio.wait_for(advance, 60)
    await assert_one_invoice_per_period(
        billing, sub["id"], [(0, "PAID", D("49.00")), (1, "ISSUED", D("51.50")), (2, "ACTIVE", D(0))]
    )
    # The retry came within the 60 s wait above, long before finalize_invoice's 5-minute start-to-close
    # budget could have expired: the server acted on the missing heartbeats.
    history = await billing.handle(sub["id"]).fetch_history()
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    finalize = [
        (scheduled[e.activity_task_started_event_attributes.scheduled_event_id],
         e.activity_task_started_event_attributes.attempt)
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and scheduled[e.activity_task_started_event_attributes.scheduled_event_id].activity_type.name
        == "finalize_invoice"
    ]  # fmt: skip
    [(options, attempt)] = finalize
    assert attempt == 2
    assert options.heartbeat_timeout.ToTimedelta() == timedelta(seconds=10)
    assert options.start_to_close_timeout.ToTimedelta() == timedelta(minutes=5)
