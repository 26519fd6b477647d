"""EntitlementWorkflow on the real API, worker and PostgreSQL: the durable timer releases the remainder
exactly at expiresAt (time-skipping), a test clock's advance past expiresAt releases it, in time order, a
worker restart mid-way releases nothing twice, a reservation exhausted meanwhile just ends, and the reconciler
starts the workflow a crash left out. Recorded as histories/entitlement-*.json for test_replay.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.entitlement import EntitlementActivities
from db import entitlements
from db import ledger as records
from db.merchants import NewMerchant
from db.models import Entitlement, LedgerTransaction
from db.session import session_factory
from domain import ledger
from domain.ids import new_id
from settings import Settings
from tests.api.test_entitlements import DOLLAR, Legacy, legacy
from tests.factories import Factory
from tests.workflows.billing_harness import GRACE, Billing, billing_stack, eventually
from tests.workflows.conftest import time_skipping_server
from tests.workflows.test_replay import RECORD, replay, run_chain, save
from worker import build_worker
from workflows.entitlement_messages import ExpireEntitlement
from workflows.ids import entitlement_workflow_id
from workflows.reconciler import ReconcileRequest, ReconcilerWorkflow

JAN31 = datetime(2026, 1, 31, tzinfo=UTC)


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


async def create(billing: Billing, setup: Legacy, quantity: int = 1000, **extra: Any) -> dict[str, Any]:
    body = {
        "merchantId": setup.merchant.merchant_id,
        "customerId": setup.customer_id,
        "entitlementData": [{"billableMetricId": setup.metric_id, "quantity": quantity}],
    } | extra
    created: dict[str, Any] = await billing.post("/v0/entitlements", body, 201)
    return created


async def row(billing: Billing, entitlement_id: str) -> Entitlement:
    async with session_factory(billing.engine)() as session:
        return await session.get_one(Entitlement, entitlement_id)


async def wallet(billing: Billing, owner: str) -> dict[str, int]:
    m = billing.merchant
    async with session_factory(billing.engine)() as session:
        found = await records.balances(session, m.merchant_id, m.environment, owner, "USD")
    return {kind: balance for (_, kind), balance in found.items()}


async def audit(billing: Billing) -> list[str]:
    async with session_factory(billing.engine)() as session:
        return await records.audit(session, billing.merchant.merchant_id)


async def releases(billing: Billing) -> list[str]:
    async with session_factory(billing.engine)() as session:
        keys = await session.scalars(
            select(LedgerTransaction.idempotency_key)
            .where(
                LedgerTransaction.merchant_id == billing.merchant.merchant_id,
                LedgerTransaction.kind == "release",
            )
            .order_by(LedgerTransaction.created_at)
        )
        return list(keys)


async def consume(billing: Billing, setup: Legacy, entitlement_id: str, nanos: int, now: datetime) -> None:
    """What a usage event with entitlementId does: consume, then charge the reserved funds."""
    m = billing.merchant
    async with session_factory(billing.engine)() as session:
        await entitlements.consume(
            session, m.merchant_id, m.environment, entitlement_id, setup.customer_id, nanos, now
        )
        charge = ledger.usage(m.merchant_id, setup.customer_id, "USD", nanos, Decimal(0), from_reserved=True)
        await records.post(
            session, m.merchant_id, m.environment, charge, idempotency_key=f"usage:{new_id('usage_event')}"
        )
        await session.commit()


async def status_of(billing: Billing, entitlement_id: str) -> WorkflowExecutionStatus | None:
    try:
        described = await billing.env.client.get_workflow_handle(
            entitlement_workflow_id(entitlement_id)
        ).describe()
    except RPCError:
        return None
    return described.status


async def test_the_timer_releases_the_remainder_exactly_at_expiry(timed: Billing) -> None:
    billing = timed
    setup = await legacy(billing.engine, billing.merchant)
    async with build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE):
        ent = await create(billing, setup, maxUses=5)
        expires = _parse(ent["expiresAt"])
        await consume(billing, setup, ent["id"], DOLLAR // 4, datetime.now(UTC))
        await billing.env.sleep(timedelta(days=29))
        assert (await row(billing, ent["id"])).status == "active"
        assert await status_of(billing, ent["id"]) == WorkflowExecutionStatus.RUNNING
        await billing.env.sleep(timedelta(days=2))

        async def released() -> Entitlement:
            found = await row(billing, ent["id"])
            assert found.status == "expired"
            return found

        done = await eventually(released)
        await billing.env.client.get_workflow_handle(entitlement_workflow_id(ent["id"])).result()
        assert (done.released_at, done.remaining_balance, done.used_count) == (done.expires_at, 0, 1)
        assert abs(done.expires_at - expires) < timedelta(milliseconds=1)  # the wire shows milliseconds
        chain = await run_chain(billing, entitlement_workflow_id(ent["id"]))
    # 10 funded, 1 reserved, 0.25 used from it, 0.75 given back at expiry.
    assert await wallet(billing, setup.customer_id) == {
        "customer_main": 9_750_000_000,
        "customer_reserved": 0,
    }
    assert (await wallet(billing, billing.merchant.merchant_id))["merchant_revenue"] == DOLLAR // 4
    assert await releases(billing) == [f"release:{ent['id']}"]
    got = await billing.get(f"/v0/entitlements/{ent['id']}")
    assert (got["status"], got["remainingBalance"]) == ("expired", "0")
    assert await audit(billing) == []
    await replay(chain)
    if RECORD:
        save("entitlement-timer", chain)


async def test_a_worker_restart_mid_way_releases_once(timed: Billing) -> None:
    billing = timed
    setup = await legacy(billing.engine, billing.merchant)
    # No workflow cache (no sticky queue the test server would keep the next task on after the shutdown).
    first = build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE, cached_workflows=0)
    async with first:
        ent = await create(billing, setup, maxUses=3)
        handle = billing.env.client.get_workflow_handle(entitlement_workflow_id(ent["id"]))

        async def loaded() -> None:
            assert await handle.query("live_state") is not None

        await eventually(loaded)
    # The first worker is gone with the timer pending; another one picks the workflow up.
    await billing.env.sleep(timedelta(days=10))
    async with build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE):
        await billing.env.sleep(timedelta(days=21))
        await handle.result()
    assert (await row(billing, ent["id"])).status == "expired"
    # The activity run again (a retry after a lost answer) finds the work done.
    m = billing.merchant
    again = await ActivityEnvironment().run(
        EntitlementActivities(billing.engine).expire_entitlement,
        ExpireEntitlement(
            entitlement_id=ent["id"],
            merchant_id=m.merchant_id,
            environment=m.environment,
            at=datetime.now(UTC) + timedelta(days=60),
        ),
    )
    assert (again.status, again.released) == ("expired", 0)
    assert await releases(billing) == [f"release:{ent['id']}"]
    assert await wallet(billing, setup.customer_id) == {"customer_main": 10 * DOLLAR, "customer_reserved": 0}
    assert await audit(billing) == []


async def test_an_exhausted_reservation_just_ends_at_expiry(timed: Billing) -> None:
    billing = timed
    setup = await legacy(billing.engine, billing.merchant)
    async with build_worker(billing.env.client, billing.engine, billing.task_queue, GRACE):
        ent = await create(billing, setup)  # maxUses 1
        await consume(billing, setup, ent["id"], DOLLAR // 10, datetime.now(UTC))
        assert (await row(billing, ent["id"])).status == "exhausted"
        await billing.env.sleep(timedelta(days=31))
        await billing.env.client.get_workflow_handle(entitlement_workflow_id(ent["id"])).result()
    done = await row(billing, ent["id"])
    assert (done.status, done.remaining_balance) == ("exhausted", 0)
    assert await releases(billing) == [f"release:{ent['id']}"]  # the one consume released, not another
    assert await wallet(billing, setup.customer_id) == {
        "customer_main": 9_900_000_000,
        "customer_reserved": 0,
    }
    assert await audit(billing) == []


async def test_a_clock_advance_past_expiry_releases_in_time_order(billing: Billing) -> None:
    clock = await Factory(billing.engine, billing.merchant).test_clock(current_time=JAN31)
    setup = await legacy(billing.engine, billing.merchant, test_clock_id=clock.id)
    first = await create(billing, setup)
    assert _parse(first["expiresAt"]) == JAN31 + timedelta(days=30)
    await billing.advance(clock.id, JAN31 + timedelta(days=10))
    second = await create(billing, setup, quantity=2000)
    assert _parse(second["expiresAt"]) == JAN31 + timedelta(days=40)
    assert await wallet(billing, setup.customer_id) == {
        "customer_main": 7 * DOLLAR,
        "customer_reserved": 3 * DOLLAR,
    }
    await billing.advance(clock.id, JAN31 + timedelta(days=29))
    assert [(await row(billing, e["id"])).status for e in (first, second)] == ["active", "active"]
    await billing.advance(clock.id, JAN31 + timedelta(days=35))
    done = await row(billing, first["id"])
    assert (done.status, done.released_at) == ("expired", JAN31 + timedelta(days=30))
    assert (await row(billing, second["id"])).status == "active"
    assert await wallet(billing, setup.customer_id) == {
        "customer_main": 8 * DOLLAR,
        "customer_reserved": 2 * DOLLAR,
    }
    await billing.env.client.get_workflow_handle(entitlement_workflow_id(first["id"])).result()
    active = await billing.get("/v0/entitlements/activeEntitlements", customerId=setup.customer_id)
    assert [a["id"] for a in active["data"]] == [second["id"]]
    await billing.advance(clock.id, JAN31 + timedelta(days=60))
    later = await row(billing, second["id"])
    assert (later.status, later.released_at) == ("expired", JAN31 + timedelta(days=40))
    assert await wallet(billing, setup.customer_id) == {"customer_main": 10 * DOLLAR, "customer_reserved": 0}
    assert await releases(billing) == [f"release:{first['id']}", f"release:{second['id']}"]
    assert await audit(billing) == []
    chain = await run_chain(billing, entitlement_workflow_id(second["id"]))
    await replay(chain)
    if RECORD:
        save("entitlement-clock", chain)


async def test_one_advance_across_several_expiries_releases_them_in_time_order(billing: Billing) -> None:
    clock = await Factory(billing.engine, billing.merchant).test_clock(current_time=JAN31)
    setup = await legacy(billing.engine, billing.merchant, test_clock_id=clock.id)
    created = []
    for day in (0, 5, 8, 9):
        if day:
            await billing.advance(clock.id, JAN31 + timedelta(days=day))
        created.append((await create(billing, setup))["id"])
    await billing.advance(clock.id, JAN31 + timedelta(days=60))
    assert await releases(billing) == [f"release:{i}" for i in created]  # ids are random; expiry is not
    for day, entitlement_id in zip((0, 5, 8, 9), created, strict=True):
        done = await row(billing, entitlement_id)
        assert (done.status, done.released_at) == ("expired", JAN31 + timedelta(days=day + 30))
    assert await wallet(billing, setup.customer_id) == {"customer_main": 10 * DOLLAR, "customer_reserved": 0}
    assert await audit(billing) == []


async def test_the_reconciler_starts_a_missing_workflow(billing: Billing) -> None:
    setup = await legacy(billing.engine, billing.merchant)
    m = billing.merchant
    # What a crash between the API's commit and its workflow start leaves: the reservation, no workflow.
    async with session_factory(billing.engine)() as session:
        crashed = await entitlements.create(
            session, merchant_id=m.merchant_id, environment=m.environment, customer_id=setup.customer_id,
            subscription_id=setup.subscription_id, plan_id=setup.plan_id, product_id=setup.product_id,
            currency="USD", billable_metrics=[], amount=DOLLAR, max_uses=1,
            expires_at=datetime.now(UTC) + timedelta(days=30), test_clock_id=None,
        )  # fmt: skip
        await session.commit()
    assert await status_of(billing, crashed.id) is None
    result = await billing.env.client.execute_workflow(
        ReconcilerWorkflow.run,
        ReconcileRequest(min_age_seconds=0, merchant_id=m.merchant_id),
        id=f"reconciler-{billing.task_queue}",
        task_queue=billing.task_queue,
    )
    assert crashed.id in result.started
    assert await status_of(billing, crashed.id) == WorkflowExecutionStatus.RUNNING
    async with session_factory(billing.engine)() as session:
        count = await session.scalar(select(func.count()).where(Entitlement.id == crashed.id))
    assert count == 1
