"""Webhook test harness: endpoints written as the API writes them (sealed secrets, an enabled webhook app),
messages made the production way (outbox rows, the relay's pass, a wake), and readers of what happened."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from db import outbox
from db.merchants import NewMerchant
from db.models import WebhookApp, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from db.session import session_factory
from domain.ids import new_id
from integrations.secret_box import SecretBox
from integrations.webhook_signing import new_secret
from tests.helpers import relay_all
from tests.webhook_receiver import WebhookReceiver
from worker import build_worker
from workflows.client import wake_webhook_endpoints
from workflows.ids import webhook_endpoint_workflow_id
from workflows.webhook_messages import EndpointRef

BOX = SecretBox("")  # build_worker's default key, which test workers use
OFFSETS = [0, 5, 305, 2105, 9305, 27305, 63305, 99305]  # D18: seconds from the first attempt


class Hooks:
    """One test's merchant, its endpoints and the way messages reach them."""

    def __init__(self, client: Client, engine: AsyncEngine, merchant: NewMerchant, task_queue: str) -> None:
        self.client = client
        self.engine = engine
        self.sessions = session_factory(engine)
        self.merchant_id = merchant.merchant_id
        self.environment = "sandbox"
        self.task_queue = task_queue
        self.endpoints: list[EndpointRef] = []

    async def endpoint(
        self,
        url: str,
        *,
        rate_limit: int | None = None,
        previous_secret: str | None = None,
        environment: str | None = None,
    ) -> tuple[EndpointRef, str]:
        secret = new_secret()
        environment = environment or self.environment
        async with self.sessions() as session:
            app = await session.scalar(
                select(WebhookApp).where(
                    WebhookApp.merchant_id == self.merchant_id, WebhookApp.environment == environment
                )
            )
            if app is None:
                session.add(
                    WebhookApp(
                        id=new_id("webhook_app"),
                        merchant_id=self.merchant_id,
                        environment=environment,
                        enabled=True,
                    )
                )
            endpoint = WebhookEndpoint(
                id=new_id("webhook_endpoint"),
                merchant_id=self.merchant_id,
                environment=environment,
                url=url,
                rate_limit=rate_limit,
                secret=BOX.seal(secret),
                previous_secret=BOX.seal(previous_secret) if previous_secret else None,
                previous_secret_expires_at=datetime.now(UTC) + timedelta(hours=24)
                if previous_secret
                else None,
            )
            session.add(endpoint)
            await session.commit()
        ref = EndpointRef(endpoint_id=endpoint.id, merchant_id=self.merchant_id, environment=environment)
        self.endpoints.append(ref)
        return ref, secret

    async def emit(
        self, events: Sequence[tuple[str, dict[str, Any]]], environment: str | None = None
    ) -> None:
        """Outbox rows, committed; relayed into messages and deliveries; the endpoints woken."""
        async with self.sessions() as session:
            for event_type, data in events:
                outbox.record(session, self.merchant_id, environment or self.environment, event_type, data)
            await session.commit()
        await relay_all(self.sessions)
        await self.wake("messages")

    async def wake(self, reason: str, endpoints: Sequence[EndpointRef] | None = None) -> None:
        await wake_webhook_endpoints(self.client, self.task_queue, endpoints or self.endpoints, reason)

    async def attempts(self, endpoint: EndpointRef) -> list[WebhookAttempt]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.endpoint_id == endpoint.endpoint_id)
                .order_by(WebhookAttempt.created_at, WebhookAttempt.attempt)
            )
            return list(rows)

    async def deliveries(self, endpoint: EndpointRef) -> list[WebhookDelivery]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == endpoint.endpoint_id)
                .order_by(WebhookDelivery.id)
            )
            return list(rows)

    async def row(self, endpoint: EndpointRef) -> WebhookEndpoint:
        async with self.sessions() as session:
            found = await session.get(WebhookEndpoint, endpoint.endpoint_id)
            assert found is not None
            return found

    async def set(self, endpoint: EndpointRef, **values: Any) -> None:
        async with self.sessions() as session:
            await session.execute(
                update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.endpoint_id).values(**values)
            )
            await session.commit()

    async def terminate_workflows(self, within: float = 30) -> None:
        """Terminate the endpoints' workflows, each once no activity of it is running: the time-skipping
        test server stops skipping time for good when an activity completes after its workflow ended."""
        deadline = asyncio.get_running_loop().time() + within
        for ref in self.endpoints:
            handle = self.client.get_workflow_handle(webhook_endpoint_workflow_id(ref.endpoint_id))
            with contextlib.suppress(RPCError):
                while True:
                    described = await handle.describe()
                    if described.status != WorkflowExecutionStatus.RUNNING:
                        break
                    if not described.raw_description.pending_activities or (
                        asyncio.get_running_loop().time() > deadline
                    ):
                        await handle.terminate("test over")
                        break
                    await asyncio.sleep(0.05)

    async def details(self, endpoint: EndpointRef) -> str:
        handle = self.client.get_workflow_handle(webhook_endpoint_workflow_id(endpoint.endpoint_id))
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        return str(metadata.current_details)

    async def until(self, check: Any, within: float = 30) -> None:
        """Wait (real time, the test server's clock standing still) until `await check()` is truthy."""
        deadline = asyncio.get_running_loop().time() + within
        while not await check():
            assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)


def sub(resource: int, **extra: Any) -> tuple[str, dict[str, Any]]:
    return "subscription.updated.v0", {"object": "subscription", "id": f"sub_{resource:016d}", **extra}


def offsets(attempts: Sequence[WebhookAttempt]) -> list[int]:
    first = attempts[0].created_at
    return [round((a.created_at - first).total_seconds()) for a in attempts]


# ---- fixtures for modules with a time-skipping server of their own (each defines `workflow_env`) -------
# Import them into the module: `from tests.workflows.webhook_harness import hooks, receiver, ...`.


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid4()}"


@pytest.fixture
async def worker(
    workflow_env: WorkflowEnvironment, engine: AsyncEngine, task_queue: str
) -> AsyncIterator[Worker]:
    async with build_worker(workflow_env.client, engine, task_queue) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
async def hooks(
    workflow_env: WorkflowEnvironment,
    engine: AsyncEngine,
    merchant: NewMerchant,
    task_queue: str,
    worker: Worker,
) -> AsyncIterator[Hooks]:
    hooks = Hooks(workflow_env.client, engine, merchant, task_queue)
    yield hooks
    # A workflow left behind would schedule activities no worker polls for, and time skipping pauses
    # while any activity is outstanding: the module's later sleeps would stand still.
    await hooks.terminate_workflows()
