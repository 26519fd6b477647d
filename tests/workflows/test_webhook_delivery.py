"""Webhook delivery on Temporal: WebhookEndpointWorkflow and its batch activity, on the time-skipping test
server, the real database and a real receiver (tests/webhook_receiver.py) that verifies every request
with the svix and standardwebhooks libraries.

Messages are made the production way: outbox rows (db/outbox.record) turned into messages and deliveries
by the relay's pass (activities/webhook_relay.relay_pending), then a wake of the endpoint's workflow.

Tests here sleep through retries with `env.sleep`, and time skipping is global to a server and stops for
good once an activity completes after its workflow was terminated (a test's end), so each test gets a
time-skipping server of its own (a second or so to start)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from integrations.secret_box import SecretBox
from integrations.webhook_signing import headers, new_secret
from tests.webhook_receiver import Plan, WebhookReceiver, verify
from tests.workflows import webhook_harness
from tests.workflows.conftest import time_skipping_server
from tests.workflows.webhook_harness import OFFSETS, Hooks, offsets, sub
from workflows.ids import webhook_endpoint_workflow_id
from workflows.webhook_endpoint import WebhookEndpointWorkflow
from workflows.webhook_messages import EndpointInput, EndpointRef

HISTORIES = Path(__file__).parent / "histories"
SCENARIO = "webhook-endpoint"  # recorded as histories/webhook-endpoint-<run>.json
RECORD = os.environ.get("ACCRUE_RECORD_HISTORIES") == "1"


# The module's fixtures beside its own time-skipping server (`workflow_env`).
task_queue, worker, receiver, hooks = (
    webhook_harness.task_queue,
    webhook_harness.worker,
    webhook_harness.receiver,
    webhook_harness.hooks,
)


@pytest.fixture
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    async for env in time_skipping_server():
        yield env


# ---- the receiver itself ---------------------------------------------------------------------------------


def test_the_receiver_rejects_a_tampered_body_a_wrong_secret_and_a_stale_timestamp() -> None:
    secret, body = new_secret(), b'{"eventType":"customer.created.v0"}'
    now = int(time.time())
    assert verify(body, headers([secret], "msg_1", now, body), secret) == []
    assert len(verify(body + b" ", headers([secret], "msg_1", now, body), secret)) == 2
    assert len(verify(body, headers([new_secret()], "msg_1", now, body), secret)) == 2
    assert len(verify(body, headers([secret], "msg_1", now - 301, body), secret)) == 2
    assert len(verify(body, headers([secret], "msg_1", now + 301, body), secret)) == 2
    assert verify(body, headers([secret], "msg_1", now - 290, body), secret) == []


# ---- the schedule ----------------------------------------------------------------------------------------


async def test_a_receiver_failing_seven_times_gets_the_message_on_attempt_eight(
    hooks: Hooks, receiver: WebhookReceiver, workflow_env: WorkflowEnvironment
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    receiver.configure(secrets=[secret], plan=Plan(statuses=[500] * 7, body="down for maintenance"))
    await hooks.emit([sub(1, status="ACTIVE")])
    await receiver.wait_for(1, delivered=False)
    await workflow_env.sleep(timedelta(hours=28))
    await hooks.until(lambda: _count(hooks, ref, 8))
    attempts = await hooks.attempts(ref)
    assert offsets(attempts) == OFFSETS
    assert [a.attempt for a in attempts] == list(range(1, 9))
    assert [a.status_code for a in attempts] == [500] * 7 + [200]
    assert [a.succeeded for a in attempts] == [False] * 7 + [True]
    assert attempts[0].response == "down for maintenance" and all(a.trigger == "scheduled" for a in attempts)
    # each failed attempt says when the next one is due, and the next one was made then (within the
    # milliseconds a batch takes to reach its first request)
    for failed, then in itertools.pairwise(attempts):
        assert failed.next_attempt_at is not None
        assert abs(then.created_at - failed.next_attempt_at) < timedelta(seconds=0.5)
    assert attempts[-1].next_attempt_at is None
    (delivery,) = await hooks.deliveries(ref)
    assert (delivery.status, delivery.attempts, delivery.round_attempts) == ("delivered", 8, 8)
    received = receiver.received()
    assert len(received) == 8 and all(r.verified for r in received), [r.errors for r in received]
    assert {r.svix_id for r in received} == {delivery.message_id}
    payload = received[-1].payload
    assert list(payload) == ["eventType", "eventId", "timestamp", "data"]
    assert payload["eventType"] == "subscription.updated.v0" and payload["data"]["status"] == "ACTIVE"
    assert (await hooks.row(ref)).failing_since is None  # cleared by the success


async def test_a_receiver_that_always_fails_ends_failed_after_eight_attempts(
    hooks: Hooks, receiver: WebhookReceiver, workflow_env: WorkflowEnvironment
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    receiver.configure(secrets=[secret], plan=Plan(then=503))
    await hooks.emit([sub(1)])
    await receiver.wait_for(1, delivered=False)
    await workflow_env.sleep(timedelta(hours=28))
    await hooks.until(lambda: _delivery_status(hooks, ref, "failed"))
    await workflow_env.sleep(timedelta(days=2))
    attempts = await hooks.attempts(ref)
    assert offsets(attempts) == OFFSETS
    assert attempts[-1].next_attempt_at is None and not any(a.succeeded for a in attempts)
    (delivery,) = await hooks.deliveries(ref)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 8, None)
    assert len(receiver.received()) == 8
    endpoint = await hooks.row(ref)
    assert endpoint.failing_since == attempts[0].created_at and not endpoint.disabled
    assert "backlog: empty" in await hooks.details(ref)


async def _arrived(receiver: WebhookReceiver, resource_id: str) -> bool:
    return any(r.status and r.payload["data"]["id"] == resource_id for r in receiver.received())


async def _count(hooks: Hooks, ref: EndpointRef, n: int) -> bool:
    return len(await hooks.attempts(ref)) >= n


async def _delivery_status(hooks: Hooks, ref: EndpointRef, status: str) -> bool:
    return all(d.status == status for d in await hooks.deliveries(ref))


# ---- order and concurrency -------------------------------------------------------------------------------


async def test_a_thousand_events_for_one_subscription_arrive_in_order(
    hooks: Hooks, receiver: WebhookReceiver, workflow_env: WorkflowEnvironment
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    # Every 100th request fails once: the rest of that resource's messages wait behind it for 5 s.
    receiver.configure(
        secrets=[secret], respond=lambda r: 500 if r.nth == 0 and r.payload["data"]["n"] % 100 == 50 else 200
    )
    await hooks.emit([sub(1, n=n) for n in range(1000)])
    await receiver.wait_for(51, delivered=False)  # 0–49 delivered, 50 failed: the rest wait for its retry
    await asyncio.sleep(0.5)
    assert len(receiver.received()) == 51
    await workflow_env.sleep(timedelta(minutes=5))  # ten retries, 5 s each
    await hooks.until(lambda: _all_arrived(receiver, 1000), within=120)
    delivered = [r.payload["data"]["n"] for r in receiver.delivered()]
    assert delivered == list(range(1000))
    assert not receiver.duplicates()
    assert all(d.status == "delivered" for d in await hooks.deliveries(ref))


async def _all_arrived(receiver: WebhookReceiver, n: int) -> bool:
    return len(receiver.delivered()) >= n


async def test_messages_about_different_resources_go_concurrently(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    _, secret = await hooks.endpoint(receiver.url())
    receiver.configure(secrets=[secret], plan=Plan(delay=1.0))
    await hooks.emit([sub(n) for n in range(20)])
    arrived = await receiver.wait_for(20, within=30)
    # all twenty were in flight at once: each arrived before the first answer (1 s after the first arrival)
    assert max(r.arrived_at for r in arrived) - min(r.arrived_at for r in arrived) < 0.9


async def test_a_slow_endpoint_does_not_delay_another(hooks: Hooks, receiver: WebhookReceiver) -> None:
    slow, slow_secret = await hooks.endpoint(receiver.url("/slow"))
    _, fast_secret = await hooks.endpoint(receiver.url("/fast"))
    receiver.configure("/slow", secrets=[slow_secret], plan=Plan(delay=3.0))
    receiver.configure("/fast", secrets=[fast_secret])
    await hooks.emit([sub(1, n=n) for n in range(30)])  # one resource: the slow endpoint gets them in turn
    fast_arrived = await receiver.wait_for(30, "/fast", within=20)
    assert len(receiver.delivered("/slow")) == 0  # the slow endpoint's first answer is still to come
    assert max(r.arrived_at for r in fast_arrived) - min(r.arrived_at for r in fast_arrived) < 5
    assert len(receiver.received("/slow")) == 1
    assert {d.status for d in await hooks.deliveries(slow)} == {"pending"}
    receiver.configure("/slow", plan=Plan())  # the rest go quickly, so the test ends soon


async def test_the_rate_limit_spaces_requests(hooks: Hooks, receiver: WebhookReceiver) -> None:
    ref, secret = await hooks.endpoint(receiver.url(), rate_limit=4)
    receiver.configure(secrets=[secret])
    await hooks.emit([sub(n) for n in range(50)])  # all concurrent but for the limit, over several batches
    arrived = sorted(r.arrived_at for r in await receiver.wait_for(50, within=60))
    # Requests start 0.25 s apart, across batches too: any five attempts span a second. The attempt times
    # are the sender's; arrival times, measured by a receiver that shares this process (and its GIL) with
    # the worker, show the same spacing less some jitter.
    await hooks.until(lambda: _count(hooks, ref, 50))
    sent = [a.created_at for a in await hooks.attempts(ref)]
    assert len(sent) == 50
    assert min(later - first for first, later in zip(sent, sent[4:], strict=False)) >= timedelta(seconds=0.99)
    assert min(later - first for first, later in zip(arrived, arrived[4:], strict=False)) > 0.75
    assert arrived[-1] - arrived[0] >= 49 / 4 - 0.5


# ---- endpoint states -------------------------------------------------------------------------------------


async def test_an_endpoint_failing_for_five_days_is_disabled(
    hooks: Hooks, receiver: WebhookReceiver, workflow_env: WorkflowEnvironment
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    receiver.configure(secrets=[secret], plan=Plan(then=500))
    for day in range(6):  # a new message each day, each failing (and retried) in turn
        await hooks.emit([sub(day)])
        await hooks.until(lambda day=day: _arrived(receiver, sub(day)[1]["id"]))
        await workflow_env.sleep(timedelta(days=1))
    endpoint = await hooks.row(ref)
    assert (endpoint.disabled, endpoint.disabled_reason) == (True, "failing")
    attempts = await hooks.attempts(ref)
    assert attempts[-1].created_at - attempts[0].created_at >= timedelta(days=5)
    assert endpoint.failing_since == attempts[0].created_at
    details = await hooks.details(ref)
    assert "endpoint disabled (its attempts failed for 5 days)" in details
    before = len(receiver.received())
    await workflow_env.sleep(timedelta(days=1))
    assert len(receiver.received()) == before


async def test_a_disabled_endpoint_attempts_nothing_and_resumes_when_re_enabled(
    hooks: Hooks, receiver: WebhookReceiver, workflow_env: WorkflowEnvironment
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    receiver.configure(secrets=[secret], plan=Plan(statuses=[500]))
    await hooks.emit([sub(1), sub(2)])
    await receiver.wait_for(2, delivered=False)
    await hooks.set(ref, disabled=True, disabled_reason="manual")
    await hooks.wake("disabled")
    await workflow_env.sleep(timedelta(hours=30))  # past every retry the schedule had for them
    assert len(receiver.received()) == 2
    assert [d.status for d in await hooks.deliveries(ref)] == ["pending", "pending"]
    assert "endpoint disabled (by the merchant)" in await hooks.details(ref)
    await hooks.set(ref, disabled=False, disabled_reason=None, failing_since=None)
    await hooks.wake("enabled")
    await receiver.wait_for(2)
    await hooks.until(lambda: _delivery_status(hooks, ref, "delivered"))
    assert [a.attempt for a in await hooks.attempts(ref)] == [1, 1, 2, 2]


async def test_a_deleted_endpoints_workflow_ends(hooks: Hooks, receiver: WebhookReceiver) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    receiver.configure(secrets=[secret])
    await hooks.emit([sub(1)])
    await receiver.wait_for(1)
    await hooks.set(ref, deleted_at=datetime.now(UTC))
    await hooks.wake("deleted")
    handle = hooks.client.get_workflow_handle(webhook_endpoint_workflow_id(ref.endpoint_id))
    await asyncio.wait_for(handle.result(), 30)
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_an_unreadable_secret_stalls_the_endpoint_visibly(
    hooks: Hooks, receiver: WebhookReceiver
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    await hooks.set(ref, secret=SecretBox("another key").seal(secret))
    await hooks.emit([sub(1)])
    await hooks.until(lambda: _details_say(hooks, ref, "stalled in batch 1"))
    assert "ACCRUE_SECRET_KEY" in await hooks.details(ref)
    assert receiver.received() == [] and await hooks.attempts(ref) == []


async def _details_say(hooks: Hooks, ref: EndpointRef, text: str) -> bool:
    try:
        return text in await hooks.details(ref)
    except Exception:
        return False


# ---- signatures ------------------------------------------------------------------------------------------


async def test_during_a_rotation_both_secrets_sign(hooks: Hooks, receiver: WebhookReceiver) -> None:
    old = new_secret()
    ref, new = await hooks.endpoint(receiver.url(), previous_secret=old)
    receiver.configure(secrets=[old])  # a receiver not yet told of the new secret keeps accepting
    await hooks.emit([sub(1)])
    (got,) = await receiver.wait_for(1)
    assert got.verified
    assert verify(got.body, got.headers, old) == [] and verify(got.body, got.headers, new) == []
    assert len(got.headers["svix-signature"].split(" ")) == 2
    await hooks.set(ref, previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await hooks.emit([sub(2)])
    (_, second) = await receiver.wait_for(2, delivered=False, answered=True)
    assert second.status == 401 and verify(second.body, second.headers, new) == []


async def test_live_endpoints_never_reach_link_local_addresses(hooks: Hooks) -> None:
    ref, _ = await hooks.endpoint("https://169.254.169.254/latest/meta-data/", environment="live")
    await hooks.emit([sub(1)], environment="live")
    await hooks.until(lambda: _count(hooks, ref, 1))
    (attempt,) = await hooks.attempts(ref)
    assert attempt.status_code is None and not attempt.succeeded
    assert attempt.response == (
        "not sent: 169.254.169.254 resolves to 169.254.169.254, and a live endpoint must not point at the "
        "cloud metadata address 169.254.169.254"
    )


# ---- continue-as-new and replay --------------------------------------------------------------------------


async def test_continue_as_new_carries_the_batch_count_and_the_recorded_history_replays(
    hooks: Hooks, receiver: WebhookReceiver, workflow_env: WorkflowEnvironment
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    await hooks.client.start_workflow(
        WebhookEndpointWorkflow.run,
        EndpointInput(endpoint=ref, batches_per_run=3),
        id=webhook_endpoint_workflow_id(ref.endpoint_id),
        task_queue=hooks.task_queue,
    )
    receiver.configure(secrets=[secret], plan=Plan(statuses=[500, 500]))
    await hooks.emit([sub(1)])
    await receiver.wait_for(1, delivered=False)
    await workflow_env.sleep(timedelta(minutes=6))  # attempt 2 at 5 s, attempt 3 (delivered) at 5 min 5 s
    await receiver.wait_for(1)
    receiver.configure(plan=Plan())
    await hooks.emit([sub(2), sub(3)])
    await receiver.wait_for(3)
    await hooks.until(lambda: _delivery_status(hooks, ref, "delivered"))
    chain = await run_chain(hooks.client, webhook_endpoint_workflow_id(ref.endpoint_id))
    assert len(chain) >= 2
    inputs = [
        json.loads(run.events[0].workflow_execution_started_event_attributes.input.payloads[0].data)
        for run in chain
    ]
    assert [i["batches"] for i in inputs] == [3 * n for n in range(len(chain))]
    assert all(i["batches_per_run"] == 3 and i["endpoint"] == ref.model_dump() for i in inputs)
    await hooks.until(lambda: _details_say(hooks, ref, "backlog: empty"))
    assert re.match(r"batch \d+: ", await hooks.details(ref))
    await replay(chain)
    if RECORD:
        save(chain)


def save(chain: Sequence[WorkflowHistory]) -> None:
    """As test_replay.py's; test_replay.py replays these with every other recorded history."""
    for stale in HISTORIES.glob(f"{SCENARIO}-*.json"):
        stale.unlink()
    for n, history in enumerate(chain, 1):
        (HISTORIES / f"{SCENARIO}-{n}.json").write_text(history.to_json() + "\n")


async def run_chain(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    chain = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        chain.append(history)
        run_id = history.events[0].workflow_execution_started_event_attributes.continued_execution_run_id
    return chain[::-1]


async def replay(histories: Sequence[WorkflowHistory]) -> None:
    replayer = Replayer(workflows=[WebhookEndpointWorkflow], data_converter=pydantic_data_converter)
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            raise AssertionError(f"{history.workflow_id} does not replay") from result.replay_failure
