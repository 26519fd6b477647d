"""SourceInstallationWorkflow: one per source installation (`source-installation-<id>`), the owner of its
lifecycle and of its source events' reviews.

It loads its state (the pending events from the database), validates the customer's Stripe key (→ active or
error), then polls paid invoices at once and every poll_interval: on Temporal time, or, for an installation
of a clock-bound subscription, on the test clock's reading pushed by `advance_clock` (an advance across
several poll times polls once). `poll_now` polls at once. Reviews are `review` updates whose validator
refuses a single review of an event that is not pending before anything enters history. After a disconnect
or a revoked key it stops polling but keeps running while any of its events is pending, so a review always
has a workflow to go to; then it completes. It continues as new every polls_per_run polls or when Temporal
suggests it, carrying its small state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.types import MethodAsyncSingleParam

with workflow.unsafe.imports_passed_through():
    from workflows import search_attributes as sa
    from workflows.source_activities import SourceInstallationActivityDefs as Activities
    from workflows.source_messages import (
        WORKFLOW_VERSION,
        AwaitConnected,
        Connected,
        Disconnected,
        DisconnectInstallation,
        DisconnectRequest,
        InstallationInput,
        InstallationState,
        LoadInstallation,
        Polled,
        PollInstallation,
        PollNow,
        ReviewEvents,
        ReviewFailure,
        ReviewRequest,
        ReviewResult,
        ValidateKey,
    )
    from workflows.subscription_messages import ClockAdvance, ClockAdvanced

A = TypeVar("A")
R = TypeVar("R")

QUICK = timedelta(seconds=30)  # local activities: a few batched statements under the installation's lock
STRIPE = timedelta(minutes=10)  # a poll walks pages of Stripe invoices; it heartbeats every page
HEARTBEAT = timedelta(seconds=5)  # a dead worker mid-poll is noticed within it (pages take well under)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
POLLING = ("pending", "active")


def _not_pending(ids: list[str]) -> ApplicationError:
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return ApplicationError(
        f"source event {shown} is not pending (already processed, rejected or failed), so it cannot be "
        "reviewed again",
        type="NotPending",
        non_retryable=True,
    )


@workflow.defn
class SourceInstallationWorkflow:
    @workflow.init
    def __init__(self, request: InstallationInput) -> None:
        self.state: InstallationState | None = request.state
        self.poll_interval = request.poll_interval
        self.polls_per_run = request.polls_per_run
        self.polls_this_run = 0
        self.poll_requested = False
        self.woken = False  # a handler changed the state: the loop looks again
        self.processed_up_to: datetime | None = None
        self.finished = False
        self.continuing = False
        self.attention: str | None = None  # the last poll's non-retryable failure, for the Temporal UI
        # Reviewed while a poll was out: its answer may still list them as pending.
        self.reviewed_during_poll: set[str] | None = None

    # ---- messages -------------------------------------------------------------------------------------

    @workflow.update
    async def await_connected(self, request: AwaitConnected) -> Connected:
        await workflow.wait_condition(lambda: self.state is not None and self.state.status != "pending")
        state = self._state()
        return Connected(
            installation_id=request.installation_id, status=state.status, error_message=state.error_message
        )

    @workflow.update
    async def review(self, request: ReviewEvents) -> ReviewResult:
        await workflow.wait_condition(lambda: self.state is not None)
        state = self._state()
        pending = set(state.pending_event_ids)
        wanted = list(dict.fromkeys(request.event_ids))
        refused = [i for i in wanted if i not in pending]
        if refused and request.single:
            raise _not_pending(refused)  # the validator passed before the state was loaded
        sent = [i for i in wanted if i in pending]
        result = ReviewResult()
        if sent:
            result = await self._act(
                Activities.review_source_events,
                ReviewRequest(
                    ref=state.ref, action=request.action, event_ids=sent, processed_by=request.processed_by,
                    at=self._now(),
                ),
                f"{request.action} {len(sent)} source event(s)",
            )  # fmt: skip
            # Whatever the activity answered for is no longer pending (done, failed, or found not pending).
            answered = set(result.done) | {f.id for f in result.failed}
            state.pending_event_ids = [i for i in state.pending_event_ids if i not in answered]
            if self.reviewed_during_poll is not None:
                self.reviewed_during_poll |= answered
            self.woken = True
        failures = [ReviewFailure(id=i, error=f"source event {i} is not pending") for i in refused]
        return ReviewResult(done=result.done, failed=[*result.failed, *failures])

    @review.validator
    def validate_review(self, request: ReviewEvents) -> None:
        if not request.event_ids:
            raise ApplicationError("event_ids must not be empty", type="InvalidRequest")
        if request.single and self.state is not None:
            pending = set(self.state.pending_event_ids)
            refused = [i for i in request.event_ids if i not in pending]
            if refused:
                raise _not_pending(refused)

    @workflow.update
    async def disconnect(self, request: DisconnectRequest) -> Disconnected:
        await workflow.wait_condition(lambda: self.state is not None)
        state = self._state()
        result = await self._act(
            Activities.disconnect_installation,
            DisconnectInstallation(ref=state.ref, at=self._now(), reason=request.reason),
            "disconnect",
        )
        if state.status != "disconnected":
            state.status = "disconnected"
            self._publish()
        self.woken = True
        return result

    @workflow.update
    async def advance_clock(self, request: ClockAdvance) -> ClockAdvanced:
        """Returns once a poll due by `now` is done (one poll however many intervals the advance crossed)."""
        await workflow.wait_condition(lambda: self.state is not None)
        state = self._state()
        if state.clock_now is None or request.now > state.clock_now:
            state.clock_now = request.now
        await workflow.wait_condition(
            lambda: (
                self.finished
                or self.continuing
                or (self.processed_up_to is not None and self.processed_up_to >= request.now)
            )
        )
        reached = request.now if self.finished or self.processed_up_to is None else self.processed_up_to
        return ClockAdvanced(processed_up_to=min(reached, request.now), status=self._state().status)

    @advance_clock.validator
    def validate_advance(self, request: ClockAdvance) -> None:
        if self.state is not None and self.state.ref.test_clock_id is None:
            raise ApplicationError("Installation is not bound to a test clock", type="InvalidRequest")

    @workflow.signal
    def poll_now(self, request: PollNow) -> None:
        self.poll_requested = True

    @workflow.query
    def live_state(self) -> InstallationState | None:
        return self.state

    # ---- the loop -------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: InstallationInput) -> None:
        if self.state is None:
            self.state = await self._act(
                Activities.load_installation,
                LoadInstallation(installation_id=request.installation_id),
                "load installation",
            )
            self._publish(unless_started_with=True)
        state = self._state()
        if state.status == "pending":
            validated = await self._stripe(
                Activities.validate_installation_key,
                ValidateKey(ref=state.ref, at=self._now()),
                "validate the Stripe key",
            )
            state.status, state.error_message = validated.status, validated.error_message
            self._publish()
        while True:
            if state.status in POLLING and self._poll_due():
                await self._poll()
            if state.status not in POLLING and not state.pending_event_ids:
                break
            self.processed_up_to = self._now()
            if self._should_continue_as_new():
                self.continuing = True
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self.poll_requested:
                    state.workflow_version = WORKFLOW_VERSION
                    workflow.continue_as_new(
                        InstallationInput(
                            installation_id=state.ref.installation_id,
                            poll_interval=self.poll_interval,
                            polls_per_run=self.polls_per_run,
                            state=state,
                        )
                    )
                self.continuing = False
                continue
            await self._wait()
        self.finished = True
        self._describe()
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _state(self) -> InstallationState:
        assert self.state is not None
        return self.state

    def _now(self) -> datetime:
        state = self._state()
        return state.clock_now if state.ref.test_clock_id and state.clock_now else workflow.now()

    def _poll_due(self) -> bool:
        state = self._state()
        return self.poll_requested or state.next_poll_at is None or self._now() >= state.next_poll_at

    def _should_continue_as_new(self) -> bool:
        return workflow.info().is_continue_as_new_suggested() or self.polls_this_run >= self.polls_per_run

    async def _poll(self) -> None:
        state = self._state()
        self.poll_requested = False
        at = self._now()
        state.polls += 1
        self.polls_this_run += 1
        state.next_poll_at = at + self.poll_interval
        self.reviewed_during_poll = set()
        try:
            polled: Polled = await self._stripe(
                Activities.poll_installation,
                PollInstallation(ref=state.ref, at=at, poll=state.polls),
                f"poll {state.polls}",
            )
        except ActivityError as err:
            # A failure no retry fixes (Stripe rejected the request): visible in the UI, the next poll tries.
            cause = err.cause
            self.attention = str(cause.message if isinstance(cause, ApplicationError) else err)
            workflow.logger.error(
                "installation %s: poll %d failed: %s", state.ref.installation_id, state.polls, self.attention
            )
            return
        finally:
            reviewed = self.reviewed_during_poll or set()
            self.reviewed_during_poll = None
        self.attention = None
        known = set(state.pending_event_ids) | reviewed
        state.pending_event_ids += list(dict.fromkeys(i for i in polled.new_pending_ids if i not in known))
        if polled.skipped is None or polled.status in POLLING:
            state.last_sync_at = at
        if polled.status != state.status:
            state.status, state.error_message = polled.status, polled.error_message
            self._publish()

    async def _wait(self) -> None:
        state = self._state()
        self._describe()
        self.woken = False
        if state.ref.test_clock_id:
            reading = state.clock_now
            await workflow.wait_condition(
                lambda: self.poll_requested or self.woken or self._state().clock_now != reading
            )
            return
        timeout = None
        if state.status in POLLING and state.next_poll_at is not None:
            timeout = max(state.next_poll_at - workflow.now(), timedelta(seconds=1))
        try:
            await workflow.wait_condition(lambda: self.poll_requested or self.woken, timeout=timeout)
        except TimeoutError:
            pass

    async def _act(self, activity: MethodAsyncSingleParam[Activities, A, R], arg: A, summary: str) -> R:
        # Quick database work runs as a local activity (a marker in the workflow task, no server round
        # trips); a worker dying inside one is noticed when the task times out, and it runs again.
        return await workflow.execute_local_activity_method(
            activity, arg, start_to_close_timeout=QUICK, retry_policy=RETRY, summary=summary
        )

    async def _stripe(self, activity: MethodAsyncSingleParam[Activities, A, R], arg: A, summary: str) -> R:
        # Stripe calls are server-side activities with heartbeats: rate limits and outages are retried with
        # backoff for as long as they last, and a dead worker is noticed within HEARTBEAT.
        return await workflow.execute_activity_method(
            activity, arg, start_to_close_timeout=STRIPE, heartbeat_timeout=HEARTBEAT, retry_policy=RETRY,
            summary=summary,
        )  # fmt: skip

    def _publish(self, *, unless_started_with: bool = False) -> None:
        state = self._state()
        ref = state.ref
        pairs = sa.installation(ref.merchant_id, ref.source_id, ref.subscription_id, state.status)
        current = workflow.info().typed_search_attributes
        updates = [
            pair.key.value_set(pair.value)
            for pair in pairs
            if not unless_started_with or current.get(pair.key) != pair.value
        ]
        if updates:
            workflow.upsert_search_attributes(updates)

    def _describe(self) -> None:
        state = self._state()
        parts = [state.status]
        last = f"last sync {state.last_sync_at:%Y-%m-%d %H:%M}" if state.last_sync_at else "not synced yet"
        detail = [last, f"{len(state.pending_event_ids)} pending"]
        if state.status in POLLING and state.next_poll_at is not None:
            detail.append(f"next poll {state.next_poll_at:%Y-%m-%d %H:%M}")
        elif state.status not in POLLING:
            detail.append("polling stopped" + (": " + state.error_message if state.error_message else ""))
        if state.ref.test_clock_id:
            detail.append(f"test clock {state.ref.test_clock_id} reads {state.clock_now}")
        text = f"{parts[0]}: " + ", ".join(detail)
        if self.attention:
            text = f"NEEDS ATTENTION: {self.attention}; {text}"
        workflow.set_current_details(text)
