"""SourceInstallationWorkflow's polling: 250 invoices over several polls and pages with a worker killed
mid-poll, Stripe rate limits and server errors, a source disabled mid-way, other currencies, automatic
mode, backfills, and the real-time path (timer, poll_now, continue-as-new, current details)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.health import HealthActivities
from activities.heartbeat import HeartbeatInterceptor
from activities.source_installation import SourceInstallationActivities, _Imported
from activities.subscription import SubscriptionActivities
from activities.test_clock import TestClockActivities
from integrations.secret_box import SecretBox
from integrations.stripe_revenue import PaidInvoice, StripeRevenue
from tests.stripe_fake import inject_failures, new_key, pay_invoices, request_count, stripe_client
from tests.workflows import source_harness
from tests.workflows.billing_harness import GRACE, eventually
from tests.workflows.source_harness import POLL, START, Revenue, clock_bound
from worker import WORKFLOWS, build_worker
from workflows.client import poll_installation_now
from workflows.source_messages import PollInstallation

D = Decimal
# The shared fixtures (one time-skipping server for this module).
env, revenue, bare = source_harness.env, source_harness.revenue, source_harness.bare


def all_invoice_ids(stripe: str, key: str) -> set[str]:
    return {
        i.id for i in stripe_client(stripe, key).v1.invoices.list(params={"limit": 100}).auto_paging_iter()
    }


# ---- a worker killed mid-poll ---------------------------------------------------------------------------


class StallsOnSecondPage(SourceInstallationActivities):
    """The poll commits its first page's imports, then waits inside the second page's until its worker
    goes."""

    def __init__(self, revenue: Revenue) -> None:
        engine = revenue.billing.engine
        super().__init__(engine, StripeRevenue(revenue.stripe), SecretBox(revenue.secret_key))
        self.pages = 0
        self.reached = asyncio.Event()

    async def _import(
        self, iid: str, invoices: Sequence[PaidInvoice], request: PollInstallation
    ) -> _Imported | None:
        self.pages += 1
        if self.pages == 2:
            self.reached.set()
            await asyncio.Event().wait()  # until cancelled by the worker's shutdown
        return await super()._import(iid, invoices, request)


def doomed_worker(revenue: Revenue, installations: SourceInstallationActivities) -> Worker:
    b = revenue.billing
    return Worker(
        b.env.client,
        task_queue=b.task_queue,
        workflows=WORKFLOWS,
        activities=[
            HealthActivities(b.engine).check_database,
            *SubscriptionActivities(b.engine, GRACE, "http://accrue.test").all(),
            *TestClockActivities(b.engine, b.env.client).all(),
            *installations.all(),
        ],
        interceptors=[HeartbeatInterceptor()],
        max_cached_workflows=0,  # no sticky queue (see test_reliability.killed_mid_close)
    )


async def test_250_invoices_over_several_polls_none_twice_after_a_worker_killed_mid_poll(
    bare: Revenue,
) -> None:
    revenue = bare
    stalls = StallsOnSecondPage(revenue)
    doomed = doomed_worker(revenue, stalls)
    running = asyncio.create_task(doomed.run())
    clock, sub, source = await clock_bound(revenue)
    key = new_key()
    installation, _ = await revenue.connect(source, sub, key)
    pay_invoices(revenue.stripe, key, [100 + i for i in range(150)])  # two pages
    advance = asyncio.create_task(revenue.billing.advance(clock, START + POLL))
    await asyncio.wait_for(stalls.reached.wait(), 30)
    assert len(await revenue.events(installation)) == 100  # the first page is committed
    running.cancel()  # the worker goes away inside the second page's import
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not advance.done()

    b = revenue.billing
    async with build_worker(
        b.env.client,
        b.engine,
        b.task_queue,
        GRACE,
        secret_key=revenue.secret_key,
        stripe_api_base=revenue.stripe,
    ):
        await asyncio.wait_for(advance, 60)
        events = await revenue.events(installation)
        assert len(events) == len({e.external_event_id for e in events}) == 150
        cursor = (await revenue.installation(installation)).cursor
        assert cursor == max(int(e.paid_at.timestamp()) for e in events)

        pay_invoices(revenue.stripe, key, [1000 + i for i in range(100)])  # three pages now
        await revenue.billing.advance(clock, START + 2 * POLL)
        events = await revenue.events(installation)
        state = await revenue.state(installation)
    assert len(events) == 250
    assert {e.external_event_id for e in events} == all_invoice_ids(revenue.stripe, key)
    assert (
        sum((e.amount for e in events), D(0))
        == D(sum(100 + i for i in range(150)) + sum(1000 + i for i in range(100))) / 100
    )
    assert state.polls == 3 and len(state.pending_event_ids) == 250
    assert len(await revenue.outbox_ids("source_event.pending.v0")) == 250


# ---- Stripe failures, disabled sources, currencies, automatic mode --------------------------------------


async def test_rate_limits_and_server_errors_are_retried_and_the_installation_stays_active(
    revenue: Revenue,
) -> None:
    clock, sub, source = await clock_bound(revenue)
    key = new_key()
    installation, _ = await revenue.connect(source, sub, key)
    pay_invoices(revenue.stripe, key, [300, 400])
    before = request_count(revenue.stripe, key)
    inject_failures(revenue.stripe, key, 429)
    inject_failures(revenue.stripe, key, 500)
    await revenue.billing.advance(clock, START + POLL)
    assert request_count(revenue.stripe, key) == before + 3  # two failures, then the page
    assert [e.amount for e in await revenue.events(installation)] and len(
        await revenue.events(installation)
    ) == 2
    row = await revenue.installation(installation)
    assert (row.status, row.error_message) == ("active", None)
    assert await revenue.outbox_ids("source.disconnected.v0") == []


async def test_a_source_disabled_mid_way_imports_nothing_until_enabled(revenue: Revenue) -> None:
    clock, sub, source = await clock_bound(revenue)
    key = new_key()
    installation, _ = await revenue.connect(source, sub, key)
    first = pay_invoices(revenue.stripe, key, [100, 200])
    await revenue.billing.advance(clock, START + POLL)
    await revenue.set_enabled(source, False)
    pay_invoices(revenue.stripe, key, [300, 400])  # paid while disabled: never imported
    await revenue.billing.advance(clock, START + 2 * POLL)
    assert sorted(e.external_event_id for e in await revenue.events(installation)) == sorted(first)
    disabled_sync = (await revenue.installation(installation)).last_sync_at
    assert disabled_sync == START + 2 * POLL
    await asyncio.sleep(1.1)  # the next payment is a Stripe second after the disabled poll moved the cursor
    await revenue.set_enabled(source, True)
    later = pay_invoices(revenue.stripe, key, [500])
    await revenue.billing.advance(clock, START + 3 * POLL)
    assert sorted(e.external_event_id for e in await revenue.events(installation)) == sorted(first + later)


async def test_automatic_mode_approves_at_once_and_another_currency_fails(revenue: Revenue) -> None:
    clock, sub, source = await clock_bound(revenue, mode="automatic")
    key = new_key()
    installation, _ = await revenue.connect(source, sub, key)
    [usd] = pay_invoices(revenue.stripe, key, [2000])
    [eur] = pay_invoices(revenue.stripe, key, [3000], currency="eur")
    await revenue.billing.advance(clock, START + POLL)
    events = {e.external_event_id: e for e in await revenue.events(installation)}
    assert (events[usd].status, events[usd].processed_by, len(events[usd].usage_event_ids)) == (
        "processed",
        "system",
        1,
    )
    failed = events[eur]
    assert (failed.status, failed.currency, failed.usage_event_ids) == ("failed", "EUR", [])
    assert failed.error_message is not None
    assert "paid in EUR" in failed.error_message and "bills in USD" in failed.error_message
    assert await revenue.outbox_ids("source_event.processed.v0") == [events[usd].id]
    assert await revenue.outbox_ids("source_event.failed.v0") == [failed.id]
    assert await revenue.outbox_ids("source_event.pending.v0") == []
    await revenue.billing.advance(clock, datetime(2028, 2, 1, tzinfo=UTC) + GRACE)
    invoice = (await revenue.billing.invoices(sub["id"]))[1]
    assert invoice.grand_total == D("1.00")  # 5 % of the USD 20.00 only


async def test_a_backfill_imports_invoices_paid_after_import_from_and_none_before(revenue: Revenue) -> None:
    _, sub, source = await clock_bound(revenue)
    now = int(time.time())
    backfilled, plain = new_key(), new_key()
    for key in (backfilled, plain):
        pay_invoices(revenue.stripe, key, [111], paid_at=now - 40 * 86400)  # before importFrom
        pay_invoices(revenue.stripe, key, [222, 333], paid_at=now - 10 * 86400)
    with_backfill, _ = await revenue.connect(source, sub, backfilled, cursor=now - 20 * 86400)
    assert sorted(e.amount for e in await revenue.events(with_backfill)) == [D("2.22"), D("3.33")]
    await revenue.disconnect(with_backfill)
    without, _ = await revenue.connect(source, sub, plain)
    assert await revenue.events(without) == []


# ---- the real-time path ---------------------------------------------------------------------------------


async def test_real_time_polls_on_its_timer_and_on_poll_now_and_continues_as_new(
    revenue: Revenue, env: WorkflowEnvironment
) -> None:
    revenue.polls_per_run = 2
    plan, metric = await revenue.catalog("0.05")
    sub = await revenue.subscription(plan, datetime.now(UTC) - timedelta(minutes=1))
    source = await revenue.source(plan, metric)
    key = new_key()
    installation, _ = await revenue.connect(source, sub, key)
    first_run = (await revenue.handle(installation).describe()).run_id

    pay_invoices(revenue.stripe, key, [100])
    await env.sleep(POLL)  # the timer fires: poll 2, then the run continues as new
    state = await revenue.synced(installation, 2)
    assert len(state.pending_event_ids) == 1

    pay_invoices(revenue.stripe, key, [200])
    await poll_installation_now(revenue.billing.env.client, installation, "test")
    state = await revenue.synced(installation, 3)
    assert len(state.pending_event_ids) == 2  # carried across continue-as-new, plus the new one
    assert (await revenue.handle(installation).describe()).run_id != first_run

    async def details() -> None:
        handle = revenue.handle(installation)
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        text = str(metadata.current_details)
        assert text.startswith("active: last sync ") and "2 pending, next poll " in text, text

    await eventually(details)
