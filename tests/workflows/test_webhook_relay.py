"""WebhookRelayWorkflow on its own time-skipping server (time skipping pauses while its long activity runs, so
it must not share the session's): an outbox commit is relayed at once by NOTIFY, a missed notification by
the fallback poll, a crash's leftovers at the next start, and the workflow continues as new on schedule.

The endpoint workflow here is a stand-in under the real one's name that records its wakes: this module
tests what the relay tells endpoints, not how they deliver (tests/workflows/test_webhook_endpoint.py)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import workflow
from temporalio.client import Client, WorkflowContinuedAsNewError, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from activities.webhook_relay import WebhookRelayActivities
from db.merchants import NewMerchant
from db.models import WebhookDelivery
from db.session import session_factory
from tests.db.test_webhook_relay import enable, endpoint, write
from tests.helpers import relay_all
from tests.workflows.billing_harness import eventually
from tests.workflows.conftest import time_skipping_server
from workflows.client import ensure_webhook_relay
from workflows.ids import WEBHOOK_RELAY_WORKFLOW_ID, webhook_endpoint_workflow_id
from workflows.webhook_messages import EndpointInput, Wake
from workflows.webhook_relay import RelayInput, WebhookRelayWorkflow

HISTORIES = Path(__file__).parent / "histories"
SCENARIO = "webhook-relay"  # recorded as histories/webhook-relay-1.json (ACCRUE_RECORD_HISTORIES=1)
RECORD = os.environ.get("ACCRUE_RECORD_HISTORIES") == "1"


@workflow.defn(name="WebhookEndpointWorkflow")
class WakeRecorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    @workflow.run
    async def run(self, input: EndpointInput) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal
    def wake(self, message: Wake) -> None:
        self.reasons.append(message.reason)

    @workflow.query
    def wakes(self) -> list[str]:
        return self.reasons


@pytest.fixture(scope="module")
async def relay_env() -> AsyncIterator[WorkflowEnvironment]:
    async for env in time_skipping_server():
        yield env


class Relay:
    def __init__(self, env: WorkflowEnvironment, engine: AsyncEngine, merchant: NewMerchant) -> None:
        self.client: Client = env.client
        self.engine = engine
        self.sessions = session_factory(engine)
        self.merchant = merchant
        self.task_queue = f"relay-{uuid4()}"
        self.enabled = False

    def worker(self, **activity_options: Any) -> Worker:
        relay = WebhookRelayActivities(self.engine, self.client, self.task_queue, **activity_options)
        return Worker(
            self.client,
            task_queue=self.task_queue,
            workflows=[WebhookRelayWorkflow, WakeRecorder],
            activities=[relay.relay_outbox],
            workflow_runner=UnsandboxedWorkflowRunner(),
        )

    async def start(self, **input: Any) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            WebhookRelayWorkflow.run,
            RelayInput(**input),
            id=f"webhook-relay-{self.task_queue}",
            task_queue=self.task_queue,
        )

    async def endpoint(self) -> str:
        if not self.enabled:
            await enable(self.sessions, self.merchant)
            self.enabled = True
        return await endpoint(self.sessions, self.merchant)

    async def write(self, subscription_id: str) -> str:
        data = {"object": "subscription", "id": subscription_id}
        return await write(self.sessions, self.merchant, "subscription.updated.v0", data)

    async def wakes(self, ep_id: str) -> list[str]:
        handle = self.client.get_workflow_handle(webhook_endpoint_workflow_id(ep_id))
        return await handle.query(WakeRecorder.wakes)

    async def delivered_to(self, ep_id: str) -> list[str]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(WebhookDelivery.message_id)
                .where(WebhookDelivery.endpoint_id == ep_id)
                .order_by(WebhookDelivery.id)
            )
            return list(rows)


@pytest.fixture
def relay(relay_env: WorkflowEnvironment, engine: AsyncEngine, merchant: NewMerchant) -> Relay:
    return Relay(relay_env, engine, merchant)


async def test_a_commit_is_relayed_and_its_endpoint_woken_by_the_notification(relay: Relay) -> None:
    ep_id = await relay.endpoint()
    async with relay.worker():
        # The fallback poll is an hour away: once the relay listens, only the NOTIFY at commit can bring a
        # row over. The first row shows it listens (its start's pass or a notification relays it).
        handle = await relay.start(listen_seconds=30, poll_seconds=3600)
        first = await relay.write("sub_N")

        async def listening() -> None:
            assert await relay.delivered_to(ep_id) == [first]

        await eventually(listening, within=10)
        second = await relay.write("sub_N")

        async def relayed() -> None:
            assert await relay.delivered_to(ep_id) == [first, second]
            assert await relay.wakes(ep_id) == ["relayed", "relayed"]

        await eventually(relayed, within=10)
        await handle.terminate()


async def test_a_lost_listen_connection_is_opened_again(relay: Relay) -> None:
    ep_id = await relay.endpoint()
    async with relay.worker():
        handle = await relay.start(listen_seconds=30, poll_seconds=3600)
        first = await relay.write("sub_L")

        async def listening() -> None:
            assert await relay.delivered_to(ep_id) == [first]

        await eventually(listening, within=10)
        async with relay.engine.connect() as connection:
            killed = await connection.scalar(
                text(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where query = 'LISTEN \"accrue_outbox\"'"
                )
            )
        assert killed == 1
        # The activity fails at once and its retry listens again: with the poll an hour away, only a
        # notification heard on a new connection relays this row.
        second = await relay.write("sub_L")

        async def relayed() -> None:
            assert await relay.delivered_to(ep_id) == [first, second]

        await eventually(relayed, within=15)
        await handle.terminate()


async def test_a_missed_notification_is_caught_by_the_poll(relay: Relay) -> None:
    ep_id = await relay.endpoint()
    # Listening on a channel nobody notifies is a relay that missed every notification.
    async with relay.worker(channel="accrue_outbox_unheard"):
        handle = await relay.start(listen_seconds=30, poll_seconds=0.5)
        msg_id = await relay.write("sub_P")

        async def relayed() -> None:
            assert await relay.delivered_to(ep_id) == [msg_id]
            assert await relay.wakes(ep_id) == ["relayed"]

        await eventually(relayed, within=10)
        await handle.terminate()


async def test_a_start_relays_and_wakes_what_a_crash_left_behind(relay: Relay) -> None:
    ep_id = await relay.endpoint()
    # A relay that committed its pass and died before waking the endpoint ...
    first = await relay.write("sub_C1")
    assert await relay_all(relay.sessions)  # (other tests' rows may ride along)
    # ... and a row committed while no relay ran.
    second = await relay.write("sub_C2")
    async with relay.worker():
        handle = await relay.start(listen_seconds=30, poll_seconds=3600)

        async def healed() -> None:
            assert await relay.delivered_to(ep_id) == [first, second]
            # The start wakes every endpoint with pending deliveries, then its pass wakes the new ones'.
            assert await relay.wakes(ep_id) == ["relay started", "relayed"]

        await eventually(healed, within=10)
        await handle.terminate()


async def test_it_runs_its_activity_again_and_continues_as_new(relay: Relay) -> None:
    async with relay.worker():
        handle = await relay.start(listen_seconds=1, runs_per_history=2, poll_seconds=0.2)
        first_run = relay.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
        with pytest.raises(WorkflowContinuedAsNewError):
            await first_run.result(follow_runs=False)
        history = await first_run.fetch_history()
        activities = [e for e in history.events if e.HasField("activity_task_completed_event_attributes")]
        assert len(activities) == 2
        next_input = history.events[-1].workflow_execution_continued_as_new_event_attributes.input
        assert json.loads(next_input.payloads[0].data)["runs"] == 2  # carried into the next run
        described = await handle.describe()
        assert described.run_id != handle.result_run_id
        await handle.terminate()
    await replay([history])
    if RECORD:
        (HISTORIES / f"{SCENARIO}-1.json").write_text(history.to_json() + "\n")


async def test_the_recorded_run_replays() -> None:
    """Also replayed by test_replay.py with every other recorded history."""
    [path] = HISTORIES.glob(f"{SCENARIO}-*.json")
    await replay([WorkflowHistory.from_json(path.stem, path.read_text())])


async def replay(histories: list[WorkflowHistory]) -> None:
    replayer = Replayer(workflows=[WebhookRelayWorkflow], data_converter=pydantic_data_converter)
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            raise AssertionError(f"{history.workflow_id} does not replay") from result.replay_failure


async def test_every_worker_ensures_the_one_relay(relay: Relay) -> None:
    async with relay.worker():
        await ensure_webhook_relay(relay.client, relay.task_queue, RelayInput(listen_seconds=5))
        first = await relay.client.get_workflow_handle(WEBHOOK_RELAY_WORKFLOW_ID).describe()
        await ensure_webhook_relay(relay.client, relay.task_queue)  # a second worker's start finds it
        again = await relay.client.get_workflow_handle(WEBHOOK_RELAY_WORKFLOW_ID).describe()
        assert again.run_id == first.run_id
        await relay.client.get_workflow_handle(WEBHOOK_RELAY_WORKFLOW_ID).terminate()
