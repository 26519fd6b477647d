"""TestClockWorkflow's side effects: the clock row, and driving a batch of clock-bound workflows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.clock_bound import KINDS, kind_after, kind_named
from db.models import TestClock
from db.session import session_factory
from workflows.subscription_messages import ClockAdvance, ClockAdvanced
from workflows.test_clock import (
    ADVANCE_CLOCK,
    AdvanceBatch,
    BatchAdvanced,
    BatchCursor,
    ClockReading,
    LoadClock,
    RecordClockTime,
    TestClockActivityDefs,
)

BATCH = 500  # bound workflows per batch activity
CONCURRENCY = 64  # advance_clock updates in flight at once
HANDOVER_PAUSE = 0.05  # seconds before asking a workflow's next run again


class TestClockActivities(TestClockActivityDefs):
    __test__ = False

    def __init__(self, engine: AsyncEngine, client: Client) -> None:
        self.sessions = session_factory(engine)
        self.client = client

    @activity.defn
    async def load_test_clock(self, request: LoadClock) -> ClockReading:
        async with self.sessions() as session:
            clock = await session.get(TestClock, request.test_clock_id)
            if clock is None:
                raise ApplicationError(
                    f"test clock {request.test_clock_id} not found", type="NotFound", non_retryable=True
                )
            return ClockReading(current_time=clock.current_time, deleted=clock.deleted_at is not None)

    @activity.defn
    async def record_clock_time(self, request: RecordClockTime) -> None:
        """The row's time only moves forward; `advancing_to` says bound workflows are still catching up."""
        async with self.sessions() as session:
            await session.execute(
                update(TestClock)
                .where(TestClock.id == request.test_clock_id, TestClock.current_time <= request.current_time)
                .values(
                    current_time=request.current_time,
                    advancing_to=request.current_time if request.advancing else None,
                )
            )
            await session.commit()

    @activity.defn
    async def advance_bound_batch(self, request: AdvanceBatch) -> BatchAdvanced:
        cursor = request.cursor or BatchCursor(kind=KINDS[0].name)
        kind = kind_named(cursor.kind)
        async with self.sessions() as session:
            ids = await kind.bound_ids(session, request.test_clock_id, cursor.after, BATCH)
        # FIFO: with one permit, the workflows are driven in the order listed (a kind that needs time order).
        gate = asyncio.Semaphore(1 if kind.in_order else CONCURRENCY)
        caught_up = 0

        async def drive(business_id: str) -> None:
            nonlocal caught_up
            async with gate:
                await self._drive(kind.workflow_id(business_id), request.to)
                caught_up += 1
                activity.heartbeat(caught_up)

        await asyncio.gather(*(drive(i) for i in ids))
        if len(ids) == BATCH:
            following: BatchCursor | None = BatchCursor(kind=kind.name, after=ids[-1])
        else:
            nxt = kind_after(kind.name)
            following = BatchCursor(kind=nxt.name) if nxt is not None else None
        return BatchAdvanced(driven=len(ids), next=following)

    async def _drive(self, workflow_id: str, to: datetime) -> None:
        """Until the workflow has processed everything due up to `to`. A run that hands over to its next
        one (continue-as-new) answers short of `to`; the next run is asked again."""
        handle = self.client.get_workflow_handle(workflow_id)
        while True:
            try:
                reached = await handle.execute_update(
                    ADVANCE_CLOCK, ClockAdvance(now=to), result_type=ClockAdvanced
                )
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return  # finished (a terminated subscription with every invoice final), or not started
                raise
            except WorkflowUpdateFailedError as exc:
                activity.logger.warning("%s rejected the clock advance: %s", workflow_id, exc.cause)
                return
            if reached.processed_up_to >= to:
                return
            await asyncio.sleep(HANDOVER_PAUSE)

    def all(self) -> list[Callable[..., Any]]:
        return [self.load_test_clock, self.record_clock_time, self.advance_bound_batch]
