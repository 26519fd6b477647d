"""TestClockWorkflow: one per test clock (`test-clock-<id>`), the owner of advancing it.

An advance arrives as the `advance` update (update-with-start from the API). The workflow records the new
time on the clock row (activity), then drives every clock-bound workflow to it in batches: each batch
activity lists the next bound workflows and sends each the `advance_clock` update, a bounded number at a
time, until it has caught up (a bound workflow walks its own deadlines in time order). Only then does the
row say `ready` again and the update answer. The caller may go away at any point (an API process killed, a
client that stops waiting): the advance belongs to this workflow and finishes regardless.

Which workflows are clock-bound is not this module's business: the batch activity walks a registry of
clock-bound kinds (activities/clock_bound.py), each listing its workflow ids; a later kind (source
installations, entitlements, webhook retries, payment expiry) registers there and answers `advance_clock`
with `ClockAdvance` → `ClockAdvanced`, and this code stays as it is.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

# The update every clock-bound workflow answers (SubscriptionWorkflow.advance_clock).
ADVANCE_CLOCK = "advance_clock"
ADVANCES_PER_RUN = 50  # then continue as new (design rule 5)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


class TestClockInput(BaseModel):
    __test__ = False  # not a pytest test class

    test_clock_id: str
    current_time: datetime | None = None  # carried across continue-as-new; loaded on a fresh start


class AdvanceClock(BaseModel):
    """Update: move the clock from `expected_from` (what the caller read) to `to`, later."""

    to: datetime
    expected_from: datetime


class ClockAdvanceResult(BaseModel):
    current_time: datetime
    driven: int  # bound workflows brought to current_time


class LoadClock(BaseModel):
    test_clock_id: str


class ClockReading(BaseModel):
    current_time: datetime
    # A DELETE that committed between a PATCH's check and its update-with-start starting this workflow.
    deleted: bool = False


class RecordClockTime(BaseModel):
    test_clock_id: str
    current_time: datetime
    advancing: bool  # bound workflows are still being driven to current_time


class BatchCursor(BaseModel):
    kind: str  # a clock-bound kind's name (activities/clock_bound.py)
    after: str | None = None  # the last business id of that kind already driven


class AdvanceBatch(BaseModel):
    test_clock_id: str
    to: datetime
    cursor: BatchCursor | None = None  # None: from the start of the first kind


class BatchAdvanced(BaseModel):
    driven: int
    next: BatchCursor | None  # None: every kind is done


class TestClockActivityDefs:
    """Declared here, implemented by activities.test_clock.TestClockActivities (names are the methods')."""

    __test__ = False

    @activity.defn
    async def load_test_clock(self, request: LoadClock) -> ClockReading:
        raise NotImplementedError

    @activity.defn
    async def record_clock_time(self, request: RecordClockTime) -> None:
        raise NotImplementedError

    @activity.defn
    async def advance_bound_batch(self, request: AdvanceBatch) -> BatchAdvanced:
        raise NotImplementedError


@workflow.defn
class TestClockWorkflow:
    __test__ = False

    @workflow.init
    def __init__(self, request: TestClockInput) -> None:
        self.clock_id = request.test_clock_id
        self.current: datetime | None = request.current_time
        self.lock = asyncio.Lock()
        self.advances = 0
        self.deleted = False

    @workflow.update
    async def advance(self, request: AdvanceClock) -> ClockAdvanceResult:
        await workflow.wait_condition(lambda: self.current is not None)
        if self.deleted:
            raise self._deleted()
        async with self.lock:
            assert self.current is not None
            if request.to < self.current:
                # A repeated request (a client retrying after losing the answer) finds it done.
                return ClockAdvanceResult(current_time=self.current, driven=0)
            if request.to == self.current:
                # Nothing to record; workflows bound since the last advance are brought to the time.
                return ClockAdvanceResult(current_time=self.current, driven=await self._drive(request.to))
            if request.expected_from != self.current:
                raise ApplicationError(
                    f"the clock moved to {self.current.isoformat()} meanwhile", type="ClockMoved"
                )
            await self._record(request.to, advancing=True)
            self.current = request.to
            driven = await self._drive(request.to)
            await self._record(request.to, advancing=False)
            self.advances += 1
            return ClockAdvanceResult(current_time=request.to, driven=driven)

    @advance.validator
    def validate_advance(self, request: AdvanceClock) -> None:
        if self.deleted:
            raise self._deleted()
        if self.current is not None and request.to > self.current and request.expected_from != self.current:
            raise ApplicationError(
                f"the clock moved to {self.current.isoformat()} meanwhile", type="ClockMoved"
            )

    @workflow.signal
    def clock_deleted(self) -> None:
        """The clock row is soft-deleted (DELETE /v0/testClocks/{id}): finish once any advance is done."""
        self.deleted = True

    @workflow.query
    def current_time(self) -> datetime | None:
        return self.current

    @workflow.run
    async def run(self, request: TestClockInput) -> None:
        if self.current is None:
            reading = await workflow.execute_activity_method(
                TestClockActivityDefs.load_test_clock,
                LoadClock(test_clock_id=self.clock_id),
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=RETRY,
                summary="load clock",
            )
            self.current = reading.current_time
            self.deleted = self.deleted or reading.deleted
        workflow.set_current_details(f"ready at {self.current.isoformat()}")
        await workflow.wait_condition(
            lambda: (
                self.deleted
                or self.advances >= ADVANCES_PER_RUN
                or workflow.info().is_continue_as_new_suggested()
            )
        )
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and not self.lock.locked())
        if self.deleted:
            workflow.set_current_details("test clock deleted")
            return
        workflow.continue_as_new(TestClockInput(test_clock_id=self.clock_id, current_time=self.current))

    def _deleted(self) -> ApplicationError:
        return ApplicationError(f"test clock {self.clock_id} was deleted", type="ClockDeleted")

    async def _record(self, at: datetime, *, advancing: bool) -> None:
        await workflow.execute_activity_method(
            TestClockActivityDefs.record_clock_time,
            RecordClockTime(test_clock_id=self.clock_id, current_time=at, advancing=advancing),
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=RETRY,
            summary=f"clock {'advancing to' if advancing else 'ready at'} {at.isoformat()}",
        )

    async def _drive(self, to: datetime) -> int:
        """Every clock-bound workflow to `to`, one batch after another; a batch retried after a crash
        re-sends updates its first attempt sent, which a caught-up workflow answers at once."""
        cursor: BatchCursor | None = None
        driven, batch = 0, 0
        while True:
            batch += 1
            workflow.set_current_details(f"advancing to {to.isoformat()}: batch {batch}, {driven} caught up")
            done = await workflow.execute_activity_method(
                TestClockActivityDefs.advance_bound_batch,
                AdvanceBatch(test_clock_id=self.clock_id, to=to, cursor=cursor),
                # A batch waits for its workflows' period closes; its heartbeat shows it is alive.
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RETRY,
                summary=f"drive batch {batch} to {to.isoformat()}",
            )
            driven += done.driven
            if done.next is None:
                workflow.set_current_details(f"ready at {to.isoformat()} ({driven} caught up)")
                return driven
            cursor = done.next
