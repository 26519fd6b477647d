"""Replay: every workflow (subscriptions, test clocks, webhooks, source installations) must replay the
histories they recorded earlier (tests/workflows/histories), so a change to a workflow that would break
running ones fails here, not in production.

Re-record after an intended, versioned change to the workflow (docs/operations.md, "Replay histories"):

    ACCRUE_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_replay.py
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.billing_harness import GRACE, Billing
from workflows.client import send_payment_completed
from workflows.entitlement import EntitlementWorkflow
from workflows.ids import subscription_workflow_id
from workflows.ids import test_clock_workflow_id as clock_workflow_id
from workflows.payment import PaymentWorkflow
from workflows.source_installation import SourceInstallationWorkflow
from workflows.subscription import SubscriptionWorkflow
from workflows.subscription_messages import PaymentCompleted
from workflows.test_clock import TestClockWorkflow
from workflows.webhook_endpoint import WebhookEndpointWorkflow
from workflows.webhook_relay import WebhookRelayWorkflow

HISTORIES = Path(__file__).parent / "histories"
RECORD = os.environ.get("ACCRUE_RECORD_HISTORIES") == "1"
START = datetime(2028, 1, 31, tzinfo=UTC)
FEB29, MAR31 = datetime(2028, 2, 29, tzinfo=UTC), datetime(2028, 3, 31, tzinfo=UTC)


async def quickstart(billing: Billing, **subscription: object) -> tuple[dict[str, object], str]:
    plan, _ = await billing.quickstart_catalog()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, await billing.customer(), START, testClockId=clock, **subscription)
    return sub, clock


async def paid_two_periods(billing: Billing) -> str:
    sub, clock = await quickstart(billing)
    await billing.activate(sub)
    await billing.event(str(sub["customerId"]), "llm.tokens", START + timedelta(days=1), value=1200)
    await billing.advance(clock, FEB29 + GRACE)
    await billing.event(str(sub["customerId"]), "llm.tokens", FEB29 + timedelta(days=3), value=800)
    await billing.advance(clock, MAR31 + GRACE)
    return subscription_workflow_id(str(sub["id"]))


async def terminated(billing: Billing) -> str:
    sub, clock = await quickstart(billing)
    await billing.activate(sub)
    await billing.event(str(sub["customerId"]), "llm.tokens", START + timedelta(days=1), value=500)
    await billing.advance(clock, START + timedelta(days=10))
    await billing.post(f"/v0/subscriptions/{sub['id']}/termination", {"reason": "Recorded"}, 200)
    await billing.advance(clock, START + timedelta(days=10) + GRACE)
    await billing.handle(str(sub["id"])).result()
    return subscription_workflow_id(str(sub["id"]))


async def expired(billing: Billing) -> str:
    sub, clock = await quickstart(billing, sessionExpiryMinutes=30)
    await billing.pay(sub, succeed=False)
    await billing.advance(clock, START + timedelta(minutes=31))
    await billing.handle(str(sub["id"])).result()
    return subscription_workflow_id(str(sub["id"]))


async def thirteen_periods(billing: Billing) -> str:
    """One advance across 13 monthly periods: the run continues as new after 12, mid catch-up, and the
    clock's workflow asks the next run to finish the advance."""
    sub, clock = await quickstart(billing)
    await billing.activate(sub)
    await billing.event(str(sub["customerId"]), "llm.tokens", START + timedelta(days=1), value=700)
    await billing.advance(clock, datetime(2029, 2, 28, tzinfo=UTC) + GRACE)
    return subscription_workflow_id(str(sub["id"]))


async def dunning(billing: Billing) -> str:
    """Version 5: an autoCharge subscription whose period invoice's charge at issue is declined and whose
    first retry (a day later on the clock) pays it."""
    plan, _ = await billing.quickstart_catalog()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, await billing.customer(), START, testClockId=clock, autoCharge=True)
    payment = sub["payment"]
    paid = PaymentCompleted(
        invoice_id=payment["invoiceId"],
        payment_session_id=payment["paymentSessionId"],
        payment_method="pm_sandbox_decline_first_1",
    )
    await send_payment_completed(billing.env.client, billing.task_queue, str(sub["id"]), paid)
    await billing.advance(clock, FEB29 + GRACE)
    await billing.advance(clock, FEB29 + GRACE + timedelta(days=2))
    invoice = next(i for i in await billing.invoices(str(sub["id"])) if i.sequence_number == 1)
    assert invoice.status == "PAID" and len(invoice.metadata_["charges"]) == 2
    return subscription_workflow_id(str(sub["id"]))


async def clock_advance(billing: Billing) -> str:
    """The clock's own workflow: started by the first advance, driving two subscriptions across a period
    close and its grace window in two advances."""
    sub, clock = await quickstart(billing)
    await billing.activate(sub)
    plan = str(sub["planId"])
    other = await billing.subscribe(plan, await billing.customer(), START, testClockId=clock)
    await billing.activate(other)
    await billing.advance(clock, FEB29)
    await billing.advance(clock, FEB29 + GRACE)
    return clock_workflow_id(clock)


async def clock_deleted(billing: Billing) -> str:
    """The clock's workflow advanced once, then told of the clock's deletion, which ends it."""
    clock = await billing.clock(START)
    await billing.advance(clock, FEB29)
    assert (await billing.http.delete(f"/v0/testClocks/{clock}")).status_code == 200
    await billing.env.client.get_workflow_handle(clock_workflow_id(clock)).result()
    return clock_workflow_id(clock)


SCENARIOS: dict[str, Callable[[Billing], Awaitable[str]]] = {
    "paid-two-periods": paid_two_periods,
    "terminated": terminated,
    "expired": expired,
    "thirteen-periods": thirteen_periods,
    "dunning": dunning,
    "test-clock-advance": clock_advance,
    "test-clock-deleted": clock_deleted,
}
MIN_RUNS = {"thirteen-periods": 2}
# Recorded by other modules, which need fixtures of their own; replayed here with the rest.
RECORDED_ELSEWHERE = {
    "webhook-endpoint",  # tests/workflows/test_webhook_delivery.py
    "webhook-relay",  # tests/workflows/test_webhook_relay.py
    "source-installation",  # tests/workflows/test_source_installation.py
    "entitlement-timer",  # tests/workflows/test_entitlement.py
    "entitlement-clock",  # tests/workflows/test_entitlement.py
    "payment-expiry",  # tests/workflows/test_payment_workflow.py
}


async def run_chain(billing: Billing, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of the workflow, first to last (a subscription's continues as new each period)."""
    client = billing.env.client
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    chain = []
    while run_id:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        history = await handle.fetch_history()
        chain.append(history)
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id
    return chain[::-1]


async def replay(histories: list[WorkflowHistory]) -> None:
    """Fails on any nondeterminism (and on a workflow task that fails while replaying)."""
    replayer = Replayer(
        workflows=[
            SubscriptionWorkflow,
            TestClockWorkflow,
            WebhookEndpointWorkflow,
            WebhookRelayWorkflow,
            SourceInstallationWorkflow,
            EntitlementWorkflow,
            PaymentWorkflow,
        ],
        data_converter=pydantic_data_converter,
    )
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            raise AssertionError(f"{history.workflow_id} does not replay") from result.replay_failure


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_fresh_histories_replay(billing: Billing, scenario: str) -> None:
    """Runs the scenario, replays what it recorded, and with ACCRUE_RECORD_HISTORIES=1 stores it."""
    chain = await run_chain(billing, await SCENARIOS[scenario](billing))
    assert len(chain) >= MIN_RUNS.get(scenario, 1)
    await replay(chain)
    if RECORD:
        save(scenario, chain)


def save(scenario: str, chain: list[WorkflowHistory]) -> None:
    HISTORIES.mkdir(exist_ok=True)
    for stale in HISTORIES.glob(f"{scenario}-*.json"):
        stale.unlink()
    for n, history in enumerate(chain, 1):
        (HISTORIES / f"{scenario}-{n}.json").write_text(history.to_json() + "\n")


def recorded() -> list[Path]:
    """Current recordings, and under histories/v<N>/ those of runs written before WORKFLOW_VERSION N+1,
    kept so the older paths still replay (subscriptions started then may still be running)."""
    return sorted(HISTORIES.rglob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_every_scenario_has_recorded_histories() -> None:
    current = {path.stem.rsplit("-", 1)[0] for path in HISTORIES.glob("*.json")}
    assert current == set(SCENARIOS) | RECORDED_ELSEWHERE
    assert len(recorded()) > len(list(HISTORIES.glob("*.json"))), "older versions' recordings are kept"


@pytest.mark.parametrize("path", recorded(), ids=lambda path: str(path.relative_to(HISTORIES)))
async def test_recorded_history_replays(path: Path) -> None:
    history = load(path)
    assert any(e.HasField("workflow_execution_started_event_attributes") for e in history.events)
    await replay([history])
