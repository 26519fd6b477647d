"""The Temporal Schedules Accrue relies on, created (or brought up to date) by every worker at start."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from workflows.reconciler import RECONCILER_SCHEDULE_ID, ReconcileRequest, ReconcilerWorkflow


def reconciler_schedule(task_queue: str, every: timedelta) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcilerWorkflow.run,
            ReconcileRequest(),
            id="reconciler",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A slow pass is not doubled by the next one.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_reconciler_schedule(client: Client, task_queue: str, every: timedelta) -> None:
    """Create the reconciler's Schedule, or update it to this worker's task queue and interval."""
    schedule = reconciler_schedule(task_queue, every)
    try:
        await client.create_schedule(RECONCILER_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(RECONCILER_SCHEDULE_ID).update(replace)
