"""The reconciler's Temporal Schedule on a real dev server (the time-skipping server has no schedules)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleDescription
from temporalio.service import RPCError

import worker
from settings import Settings
from tests.e2e.dev_server import SPARE_NAMESPACES, DevServer
from workflows.client import connect, ensure_reconciler_schedule
from workflows.reconciler import RECONCILER_SCHEDULE_ID

SPARE_NAMESPACE, _, WORKER_NAMESPACE = SPARE_NAMESPACES


async def describe(client: Client) -> ScheduleDescription:
    return await client.get_schedule_handle(RECONCILER_SCHEDULE_ID).describe()


def shape(description: ScheduleDescription) -> tuple[timedelta, str, str]:
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    (interval,) = description.schedule.spec.intervals
    return interval.every, action.task_queue, action.workflow


async def test_created_once_then_kept_up_to_date(temporal_dev_server: DevServer) -> None:
    client = await connect(temporal_dev_server.address, SPARE_NAMESPACE)
    await ensure_reconciler_schedule(client, "accrue-a", timedelta(minutes=5))
    assert shape(await describe(client)) == (timedelta(minutes=5), "accrue-a", "ReconcilerWorkflow")
    # A worker with other settings (a redeploy) updates it instead of failing on the existing one.
    await ensure_reconciler_schedule(client, "accrue-b", timedelta(minutes=2))
    assert shape(await describe(client)) == (timedelta(minutes=2), "accrue-b", "ReconcilerWorkflow")
    schedules = [s.id async for s in await client.list_schedules()]
    assert schedules.count(RECONCILER_SCHEDULE_ID) <= 1


async def test_worker_creates_it_on_start(temporal_dev_server: DevServer, settings: Settings) -> None:
    settings = settings.model_copy(
        update={
            "temporal_address": temporal_dev_server.address,
            "temporal_namespace": WORKER_NAMESPACE,
            "reconcile_interval": timedelta(minutes=7),
        }
    )
    client = await connect(temporal_dev_server.address, WORKER_NAMESPACE)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(settings, stop))
    try:
        for _ in range(100):
            try:
                found = shape(await describe(client))
                break
            except RPCError:  # not created yet
                assert not running.done(), running.exception()
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the worker did not create the reconciler schedule")
        assert found == (timedelta(minutes=7), settings.task_queue, "ReconcilerWorkflow")
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
