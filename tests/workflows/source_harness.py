"""Revenue-share tests' stack: the billing harness (API app, real database) with the production worker
pointed at the Stripe fake, plus helpers that write sources, rules and installations as the API does and
start installations through workflows.client.connect_installation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from db.merchants import NewMerchant
from db.models import OutboxEvent, Source, SourceEvent, SourceInstallation, SourceRule
from db.session import session_factory
from domain.ids import new_id
from domain.stripe_keys import key_mode
from integrations.secret_box import SecretBox
from settings import Settings
from tests.workflows.billing_harness import GRACE, Billing, billing_stack, eventually
from tests.workflows.conftest import time_skipping_server
from worker import build_worker
from workflows import search_attributes as sa
from workflows.client import connect_installation, disconnect_installation
from workflows.ids import source_installation_workflow_id
from workflows.source_messages import Connected, InstallationInput, InstallationState

POLL = timedelta(minutes=5)
START = datetime(2028, 1, 1, tzinfo=UTC)


@dataclass
class Revenue:
    billing: Billing
    stripe: str  # the fake's base URL
    secret_key: str
    polls_per_run: int = 100

    async def catalog(self, percentage: str = "0.05", **bounds: str) -> tuple[str, str]:
        """A product with a USD revenue metric (SUM of $.value) and a plan billing `percentage` of it in
        arrears (with minCharge/maxCharge when given). Returns (plan id, metric id)."""
        b = self.billing
        product = await b.product()
        metric = await b.metric(product, f"revenue.{uuid4().hex[:8]}", unit="USD")
        price = await b.price(
            billableMetricId=metric, model="percentage", paymentTerm="in_arrears",
            invoiceDisplayName="Revenue",
            properties={"percentage": percentage, "minCharge": "0", "maxCharge": "1000000"} | bounds,
        )  # fmt: skip
        return await b.plan(product, [price]), metric

    async def subscription(self, plan: str, start: datetime, clock: str | None = None) -> dict[str, Any]:
        customer = await self.billing.customer()
        extra = {"testClockId": clock} if clock else {}
        return dict(await self.billing.subscribe(plan, customer, start, **extra))

    async def source(self, plan: str, metric: str, mode: str = "manual") -> str:
        async with session_factory(self.billing.engine)() as session:
            row = Source(
                id=new_id("source"), merchant_id=self.billing.merchant.merchant_id, environment="sandbox",
                plan_id=plan, type="stripe_revenue", name="Stripe revenue", description=None, config={},
                metadata_={"billableMetricMapping": {"revenue": metric}}, enabled=True, processing_mode=mode,
                revenue_metric_id=metric,
            )  # fmt: skip
            session.add(row)
            await session.commit()
            return row.id

    async def set_enabled(self, source_id: str, enabled: bool) -> None:
        async with session_factory(self.billing.engine)() as session:
            (await session.get_one(Source, source_id)).enabled = enabled
            await session.commit()

    async def rule(self, source_id: str, conditions: list[dict[str, Any]], order: int = 0) -> str:
        async with session_factory(self.billing.engine)() as session:
            row = SourceRule(
                id=new_id("source_rule"), merchant_id=self.billing.merchant.merchant_id,
                environment="sandbox", source_id=source_id, name="rule", description="", enabled=True,
                order=order, conditions=conditions,
            )  # fmt: skip
            session.add(row)
            await session.commit()
            return row.id

    async def connect(
        self, source_id: str, subscription: dict[str, Any], key: str, cursor: int | None = None
    ) -> tuple[str, Connected]:
        """What the API's connect does: the row `pending` (cursor = now, or importFrom), then the workflow."""
        async with session_factory(self.billing.engine)() as session:
            row = SourceInstallation(
                id=new_id("source_installation"), merchant_id=self.billing.merchant.merchant_id,
                environment="sandbox", source_id=source_id, subscription_id=subscription["id"],
                customer_id=subscription["customerId"], status="pending",
                key_sealed=SecretBox(self.secret_key).seal(key), key_last4=key[-4:], key_mode=key_mode(key),
                cursor=int(time.time()) if cursor is None else cursor,
            )  # fmt: skip
            session.add(row)
            await session.commit()
        connected = await connect_installation(
            self.billing.env.client,
            self.billing.task_queue,
            InstallationInput(installation_id=row.id, poll_interval=POLL, polls_per_run=self.polls_per_run),
            sa.installation(row.merchant_id, source_id, subscription["id"], "pending"),
        )
        if connected.status == "active":
            await self.synced(row.id, 1)  # the poll right after the connect, so tests pay after it
        return row.id, connected

    async def synced(self, installation_id: str, polls: int) -> InstallationState:
        """Wait until the workflow has finished its `polls`-th poll."""

        async def done() -> InstallationState:
            state = await self.state(installation_id)
            assert state.polls >= polls and state.last_sync_at is not None
            assert state.next_poll_at == state.last_sync_at + POLL
            return state

        return await eventually(done)

    async def disconnect(self, installation_id: str) -> None:
        await disconnect_installation(self.billing.env.client, installation_id)

    def handle(self, installation_id: str) -> WorkflowHandle[Any, Any]:
        return self.billing.env.client.get_workflow_handle(source_installation_workflow_id(installation_id))

    async def state(self, installation_id: str) -> InstallationState:
        state: InstallationState = await self.handle(installation_id).query(
            "live_state", result_type=InstallationState
        )
        return state

    async def events(self, installation_id: str) -> list[SourceEvent]:
        async with session_factory(self.billing.engine)() as session:
            rows = await session.scalars(
                select(SourceEvent)
                .where(SourceEvent.installation_id == installation_id)
                .order_by(SourceEvent.paid_at, SourceEvent.id)
            )
            return list(rows)

    async def installation(self, installation_id: str) -> SourceInstallation:
        async with session_factory(self.billing.engine)() as session:
            return await session.get_one(SourceInstallation, installation_id)

    async def rules(self, source_id: str) -> dict[str, SourceRule]:
        async with session_factory(self.billing.engine)() as session:
            rows = await session.scalars(select(SourceRule).where(SourceRule.source_id == source_id))
            return {r.id: r for r in rows}

    async def outbox_ids(self, event_type: str) -> list[str]:
        """The `data.id`s of this merchant's outbox rows of one type, oldest first."""
        async with session_factory(self.billing.engine)() as session:
            rows = await session.scalars(
                select(OutboxEvent)
                .where(
                    OutboxEvent.merchant_id == self.billing.merchant.merchant_id,
                    OutboxEvent.event_type == event_type,
                )
                .order_by(OutboxEvent.seq)
            )
            return [str(r.payload["id"]) for r in rows]


async def revenue_stack_for(
    env: Any, engine: Any, settings: Any, merchant: Any, stripe: str, *, with_worker: bool = True
) -> AsyncIterator[Revenue]:
    """The billing stack without its own worker, plus (unless `with_worker` is False) the production worker
    with the Stripe fake's base URL."""
    secret = settings.secret_key.get_secret_value()
    async for billing in billing_stack(env, engine, settings, merchant, with_worker=False):
        revenue = Revenue(billing, stripe, secret)
        if not with_worker:
            yield revenue
            return
        async with build_worker(
            env.client, engine, billing.task_queue, GRACE, settings.base_url, secret, stripe_api_base=stripe
        ):
            yield revenue


# ---- fixtures (import them into a test module; `env` is one time-skipping server per module) ------------


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async for e in time_skipping_server():
        yield e


@pytest.fixture
async def revenue(
    env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant, stripe_fake: str
) -> AsyncIterator[Revenue]:
    async for stack in revenue_stack_for(env, engine, settings, merchant, stripe_fake):
        yield stack


@pytest.fixture
async def bare(
    env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant, stripe_fake: str
) -> AsyncIterator[Revenue]:
    """The stack without a worker: the test runs (and kills) its own."""
    async for stack in revenue_stack_for(env, engine, settings, merchant, stripe_fake, with_worker=False):
        yield stack


async def clock_bound(
    revenue: Revenue, mode: str = "manual", **bounds: str
) -> tuple[str, dict[str, Any], str]:
    """A 5 % revenue plan, a subscription on a test clock at START and its source: (clock, sub, source)."""
    plan, metric = await revenue.catalog("0.05", **bounds)
    clock = await revenue.billing.clock(START)
    sub = await revenue.subscription(plan, START, clock)
    return clock, sub, await revenue.source(plan, metric, mode)
