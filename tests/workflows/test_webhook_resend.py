"""Resend and recover end to end: what the management API writes (db/webhooks.py) and its wake
(api/app_state.py), followed by the endpoint's workflow on the time-skipping server, a real worker and a
real receiver. The API tests (tests/api/test_webhooks.py) check the rows; these check that the rows make
the message arrive again, numbered on and marked manual.

The failed-then-recovered test sleeps through the whole D18 schedule, so the module has a time-skipping
server of its own (tests/workflows/conftest.py explains why)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from temporalio.testing import WorkflowEnvironment

from api.app_state import wake_webhook_endpoints
from db import webhooks as store
from db.models import WebhookDelivery
from settings import Settings
from tests.webhook_receiver import Plan, WebhookReceiver
from tests.workflows import webhook_harness
from tests.workflows.conftest import time_skipping_server
from tests.workflows.webhook_harness import Hooks, sub
from workflows.webhook_messages import EndpointRef

# The module's fixtures beside its own time-skipping server (`workflow_env`).
task_queue, worker, receiver, hooks = (
    webhook_harness.task_queue,
    webhook_harness.worker,
    webhook_harness.receiver,
    webhook_harness.hooks,
)


@pytest.fixture(scope="module")
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    async for env in time_skipping_server():
        yield env


@pytest.fixture
def app(workflow_env: WorkflowEnvironment, settings: Settings, task_queue: str) -> FastAPI:
    """What the API's routes hand the wake: an app whose Temporal client is the test server's."""
    app = FastAPI()
    app.state.temporal = workflow_env.client
    app.state.settings = settings.model_copy(update={"task_queue": task_queue})
    return app


def owner_of(hooks: Hooks) -> store.Owner:
    return store.Owner(hooks.merchant_id, hooks.environment)


async def wake(app: FastAPI, hooks: Hooks, ref: EndpointRef, reason: str) -> None:
    async with hooks.sessions() as session:
        endpoint = await store.get_endpoint(session, owner_of(hooks), ref.endpoint_id)
    await wake_webhook_endpoints(app, [endpoint], reason)


async def only_delivery(hooks: Hooks, ref: EndpointRef) -> WebhookDelivery:
    (delivery,) = await hooks.deliveries(ref)
    return delivery


async def test_resend_delivers_a_delivered_message_again(
    hooks: Hooks, receiver: WebhookReceiver, app: FastAPI
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    receiver.configure(secrets=[secret])
    await hooks.emit([sub(1, status="ACTIVE")])
    await receiver.wait_for(1)

    async def recorded() -> bool:
        return (await only_delivery(hooks, ref)).status == "delivered"

    await hooks.until(recorded)  # the attempt is written after the receiver answered
    message_id = (await only_delivery(hooks, ref)).message_id

    async with hooks.sessions() as session:
        await store.resend(session, owner_of(hooks), message_id, ref.endpoint_id)
    await wake(app, hooks, ref, f"resend {message_id}")
    received = await receiver.wait_for(2)

    assert [r.svix_id for r in received] == [message_id, message_id] and all(r.verified for r in received)
    assert received[0].body == received[1].body
    await hooks.until(recorded)
    attempts = await hooks.attempts(ref)
    assert [(a.attempt, a.trigger, a.succeeded) for a in attempts] == [
        (1, "scheduled", True),
        (2, "manual", True),
    ]
    delivery = await only_delivery(hooks, ref)
    assert (delivery.status, delivery.attempts, delivery.round_attempts) == ("delivered", 2, 1)


async def test_recover_sends_a_failed_message_on_a_fresh_schedule(
    hooks: Hooks, receiver: WebhookReceiver, app: FastAPI, workflow_env: WorkflowEnvironment
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    receiver.configure(secrets=[secret], plan=Plan(statuses=[503] * 8, then=200))
    await hooks.emit([sub(1)])
    await receiver.wait_for(1, delivered=False)
    await workflow_env.sleep(timedelta(hours=28))

    async def failed() -> bool:
        return (await only_delivery(hooks, ref)).status == "failed"

    await hooks.until(failed)

    async def delivered() -> bool:
        return (await only_delivery(hooks, ref)).status == "delivered"

    assert len(receiver.received()) == 8 and receiver.delivered() == []

    now = datetime.now(UTC)
    async with hooks.sessions() as session:
        recovered = await store.recover(
            session, owner_of(hooks), ref.endpoint_id, now - timedelta(hours=1), now + timedelta(seconds=1)
        )
    assert recovered == 1
    await wake(app, hooks, ref, "recover")
    (arrived,) = await receiver.wait_for(1)
    assert arrived.verified and arrived.nth == 8  # the ninth request with this svix-id
    await hooks.until(delivered)

    attempts = await hooks.attempts(ref)
    assert [a.attempt for a in attempts] == list(range(1, 10))
    assert (attempts[-1].trigger, attempts[-1].succeeded) == ("manual", True)
    assert {a.trigger for a in attempts[:-1]} == {"scheduled"}
    delivery = await only_delivery(hooks, ref)
    assert (delivery.status, delivery.attempts, delivery.round_attempts) == ("delivered", 9, 1)


async def test_messages_skipped_while_webhooks_were_paused_arrive_after_recover(
    hooks: Hooks, receiver: WebhookReceiver, app: FastAPI
) -> None:
    ref, secret = await hooks.endpoint(receiver.url())
    receiver.configure(secrets=[secret])
    async with hooks.sessions() as session:
        await store.set_app_enabled(session, owner_of(hooks), False)
    await hooks.emit([sub(1), sub(2)])
    assert {d.status for d in await hooks.deliveries(ref)} == {"skipped"}

    async with hooks.sessions() as session:
        await store.set_app_enabled(session, owner_of(hooks), True)
    await wake(app, hooks, ref, "webhooks enabled")
    now = datetime.now(UTC)
    async with hooks.sessions() as session:
        recovered = await store.recover(
            session, owner_of(hooks), ref.endpoint_id, now - timedelta(hours=1), now + timedelta(seconds=1)
        )
    assert recovered == 2
    await wake(app, hooks, ref, "recover")
    received = await receiver.wait_for(2)
    assert sorted(r.payload["data"]["id"] for r in received) == [sub(1)[1]["id"], sub(2)[1]["id"]]

    async def all_delivered() -> bool:
        return {d.status for d in await hooks.deliveries(ref)} == {"delivered"}

    await hooks.until(all_delivered)
