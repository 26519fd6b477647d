"""EntitlementWorkflow: one per v0 entitlement (`entitlement-<id>`), the durable timer that releases the
unused remainder of its reservation at `expiresAt` (behavior §7.1, issue 10 item 4).

It loads the entitlement once, then waits until expiresAt: on Temporal time, or, for an entitlement of a
clock-bound subscription, on the test clock's reading pushed by `advance_clock` (it joins the clock's
fan-out through activities/clock_bound.py). Once due, one activity releases the remainder (status
`expired`, ledger key `release:<com_id>`, stamped at expiresAt) unless the reservation was exhausted or
released meanwhile, and the workflow ends. Consumption never goes through the workflow: a usage event
consumes the row under its lock (db/entitlements.consume), so a hot entitlement costs no workflow work.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.types import MethodAsyncSingleParam

with workflow.unsafe.imports_passed_through():
    from workflows import search_attributes as sa
    from workflows.entitlement_messages import (
        ADVANCES_PER_RUN,
        WORKFLOW_VERSION,
        EntitlementActivityDefs,
        EntitlementInput,
        EntitlementState,
        ExpireEntitlement,
        LoadEntitlement,
    )
    from workflows.subscription_messages import ClockAdvance, ClockAdvanced

A = TypeVar("A")
R = TypeVar("R")

QUICK = timedelta(seconds=30)  # local activities: one row and two ledger accounts under their locks
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["NotFound"],
)
MIN_WAIT = timedelta(seconds=1)


def search_attributes(
    merchant_id: str, customer_id: str, subscription_id: str, test_clock_id: str | None
) -> list[SearchAttributePair[str]]:
    """An entitlement workflow's attributes (set at start by the API and the reconciler)."""
    pairs = [
        SearchAttributePair(sa.MERCHANT_ID, merchant_id),
        SearchAttributePair(sa.CUSTOMER_ID, customer_id),
        SearchAttributePair(sa.SUBSCRIPTION_ID, subscription_id),
    ]
    if test_clock_id:
        pairs.append(SearchAttributePair(sa.TEST_CLOCK_ID, test_clock_id))
    return pairs


@workflow.defn
class EntitlementWorkflow:
    @workflow.init
    def __init__(self, request: EntitlementInput) -> None:
        self.entitlement_id = request.entitlement_id
        self.state: EntitlementState | None = request.state
        self.processed_up_to: datetime | None = None
        self.finished = False
        self.continuing = False
        self.advances = 0
        self.outcome = ""

    # ---- messages -------------------------------------------------------------------------------------

    @workflow.update
    async def advance_clock(self, request: ClockAdvance) -> ClockAdvanced:
        """Returns once the entitlement is processed up to `now`: released if it expired by then."""
        await workflow.wait_condition(lambda: self.state is not None or self.finished)
        if self.state is None:  # the row is gone: nothing to release
            return ClockAdvanced(processed_up_to=request.now, status="missing")
        state = self.state
        if state.clock_now is None or request.now > state.clock_now:
            state.clock_now = request.now
        self.advances += 1
        await workflow.wait_condition(
            lambda: (
                self.finished
                or self.continuing
                or (self.processed_up_to is not None and self.processed_up_to >= request.now)
            )
        )
        reached = request.now if self.finished or self.processed_up_to is None else self.processed_up_to
        return ClockAdvanced(processed_up_to=min(reached, request.now), status=state.status)

    @advance_clock.validator
    def validate_advance(self, request: ClockAdvance) -> None:
        if self.state is not None and self.state.test_clock_id is None:
            raise ApplicationError("Entitlement is not bound to a test clock", type="InvalidRequest")

    @workflow.query
    def live_state(self) -> EntitlementState | None:
        return self.state

    # ---- the timer ------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: EntitlementInput) -> None:
        if self.state is None:
            try:
                self.state = await self._act(
                    EntitlementActivityDefs.load_entitlement,
                    LoadEntitlement(entitlement_id=self.entitlement_id),
                    "load entitlement",
                )
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError) and cause.type == "NotFound":
                    self.finished = True
                    workflow.set_current_details(
                        f"entitlement {self.entitlement_id} not found: nothing to do"
                    )
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return
                raise
            self._publish()
        state = self.state
        while state.status == "active":
            now = self._now()
            if now >= state.expires_at:
                expired = await self._act(
                    EntitlementActivityDefs.expire_entitlement,
                    ExpireEntitlement(
                        entitlement_id=state.entitlement_id,
                        merchant_id=state.merchant_id,
                        environment=state.environment,
                        at=now,
                    ),
                    f"release the remainder at {state.expires_at.isoformat()}",
                )
                # Settled either way: released now, or exhausted/released before (nothing to give back).
                state.status = expired.status
                if expired.released:
                    self.outcome = f"released {expired.released} nanodollars back to the wallet"
                break
            self.processed_up_to = now
            if self._should_continue_as_new():
                self.continuing = True
                await workflow.wait_condition(workflow.all_handlers_finished)
                state.workflow_version = WORKFLOW_VERSION
                workflow.continue_as_new(EntitlementInput(entitlement_id=self.entitlement_id, state=state))
            await self._wait()
        self.processed_up_to = self._now()
        self.finished = True
        self._describe()
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _now(self) -> datetime:
        state = self.state
        assert state is not None
        if state.test_clock_id and state.clock_now is not None:
            return state.clock_now
        return workflow.now()

    def _should_continue_as_new(self) -> bool:
        return self.advances >= ADVANCES_PER_RUN or workflow.info().is_continue_as_new_suggested()

    async def _wait(self) -> None:
        state = self.state
        assert state is not None
        self._describe()
        if state.test_clock_id:
            reading = state.clock_now
            await workflow.wait_condition(
                lambda: state.clock_now != reading or self._should_continue_as_new()
            )
            return
        # A durable timer: survives worker restarts; the activity re-checks expiry under the row lock.
        await workflow.sleep(max(state.expires_at - workflow.now(), MIN_WAIT))

    async def _act(
        self, activity: MethodAsyncSingleParam[EntitlementActivityDefs, A, R], arg: A, summary: str
    ) -> R:
        return await workflow.execute_local_activity_method(
            activity, arg, start_to_close_timeout=QUICK, retry_policy=RETRY, summary=summary
        )

    def _publish(self) -> None:
        state = self.state
        assert state is not None
        pairs = search_attributes(
            state.merchant_id, state.customer_id, state.subscription_id, state.test_clock_id
        )
        current = workflow.info().typed_search_attributes
        updates = [p.key.value_set(p.value) for p in pairs if current.get(p.key) != p.value]
        if updates:
            workflow.upsert_search_attributes(updates)

    def _describe(self) -> None:
        state = self.state
        assert state is not None
        if state.status == "active":
            text = f"active: reserved until {state.expires_at.isoformat()}"
            if state.test_clock_id:
                shown = state.clock_now.isoformat() if state.clock_now else "not yet read"
                text += f" (test clock {state.test_clock_id} reads {shown})"
        else:
            text = f"{state.status}" + (f": {self.outcome}" if self.outcome else ": nothing left to release")
        workflow.set_current_details(text)
