"""SubscriptionWorkflow: one per subscription (`subscription-<id>`), the owner of its lifecycle.

It gates activation on Invoice 0, opens and closes every service period, finalizes each invoice once its
grace window has passed, records payments and carries out termination. Time comes from one place: the
workflow clock for real subscriptions, the test clock's reading (pushed by the `advance_clock` update) for
clock-bound ones, so tests and test clocks exercise the production path. It continues as new every
CONTINUE_AS_NEW_PERIODS periods or when Temporal suggests it (after each period before version 3), carrying
its small state explicitly.

Since version 5 it charges issued invoices of autoCharge subscriptions off-session (`charge_invoice`) and
retries a failed charge on the dunning schedule: each retry is a deadline in `state.dunning`, waited for
like every other deadline (a durable timer, or the test clock's reading); a payment recorded meanwhile (the
portal's Pay now) ends the retries of its invoice.

Since version 3 it also writes Invoice 0: the API stores the subscription row and starts this workflow with
the `await_created` update (update-with-start), which answers once Invoice 0 is written: by
`load_subscription_state` for a row without one, by `create_invoice0` in runs recorded before that.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.types import MethodAsyncSingleParam

# Pure data modules, imported once for all runs instead of re-imported in every sandboxed run (each
# continue-as-new is a new run).
with workflow.unsafe.imports_passed_through():
    from workflows import search_attributes as sa
    from workflows.subscription_activities import SubscriptionActivityDefs as Activities
    from workflows.subscription_messages import (
        WORKFLOW_VERSION,
        AwaitCreated,
        ChargeInvoice,
        ClockAdvance,
        ClockAdvanced,
        ClosePeriod,
        Created,
        CreateInvoice0,
        Dunning,
        ExpireActivation,
        FinalizeInvoice,
        InvoiceOutcome,
        LoadState,
        OpenPeriod,
        PaymentCompleted,
        PaymentDeclined,
        ReconcilePayments,
        RecordPayment,
        SubscriptionInput,
        SubscriptionState,
        Terminate,
        Terminated,
        TerminateRequest,
        TerminateResult,
        WatchPayments,
    )

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# Every activity heartbeats while it runs longer than a second (activities/heartbeat.py), so a worker that
# dies mid-activity costs HEARTBEAT before the retry, whatever the activity's own time budget.
HEARTBEAT = timedelta(seconds=10)
QUICK = timedelta(seconds=30)  # a few statements under one row lock
CALCULATION = timedelta(minutes=5)  # finalize: aggregates the period's meter events in SQL, writes lines
INHERIT_SEARCH_ATTRIBUTES = "continued-runs-inherit-search-attributes"  # superseded by workflow_version 1
CONTINUE_AS_NEW_PERIODS = 12  # version 3 on: periods per run (design rule 5)

A = TypeVar("A")
R = TypeVar("R")
DueKind = Literal["expire", "close", "finalize", "charge"]


@dataclass
class Due:
    at: datetime
    kind: DueKind
    sequence_number: int = 0


@workflow.defn
class SubscriptionWorkflow:
    @workflow.init
    def __init__(self, request: SubscriptionInput) -> None:
        self.state: SubscriptionState | None = request.state
        self.payments: list[tuple[bool, PaymentCompleted | PaymentDeclined]] = []
        self.lock = asyncio.Lock()
        self.processed_up_to: datetime | None = None
        self.boundaries_crossed = 0
        self.finished = False
        self.continuing = False  # handing over to the next run before catching up with the clock
        self.woken = False  # a handler changed the state: the loop must look again

    # ---- messages -------------------------------------------------------------------------------------

    @workflow.signal
    def payment_completed(self, message: PaymentCompleted) -> None:
        self.payments.append((True, message))

    @workflow.signal
    def payment_declined(self, message: PaymentDeclined) -> None:
        self.payments.append((False, message))

    @workflow.signal
    def watch_payments(self, message: WatchPayments) -> None:
        """Issue 11: a payment of this subscription is open at a provider: ask it within `check_in`."""
        if self.state is not None:
            self._watch(message.check_in)
            self.woken = True

    @workflow.update
    async def await_created(self, request: AwaitCreated) -> Created:
        await workflow.wait_condition(lambda: self.state is not None and not self.state.needs_invoice0)
        return Created(subscription_id=request.subscription_id, status=self._state().status)

    @workflow.update
    async def terminate(self, request: TerminateRequest) -> TerminateResult:
        await workflow.wait_condition(lambda: self.state is not None and not self.state.needs_invoice0)
        async with self.lock:
            state = self._state()
            if state.status == "terminated":
                raise ApplicationError("Subscription is already terminated", type="AlreadyTerminated")
            result = await self._act(
                Activities.terminate_subscription,
                Terminate(
                    subscription_id=state.subscription_id,
                    at=self._now(),
                    terminated_by=request.terminated_by,
                    reason=request.reason,
                ),
                "terminate",
            )
            self._terminated(result)
            self.woken = True
            return TerminateResult(subscription_id=state.subscription_id, terminated_at=result.terminated_at)

    @terminate.validator
    def validate_terminate(self, request: TerminateRequest) -> None:
        if self.state is not None and self.state.status == "terminated":
            raise ApplicationError("Subscription is already terminated", type="AlreadyTerminated")
        if not request.reason.strip():
            raise ApplicationError("reason must not be empty", type="InvalidRequest")

    @workflow.update
    async def advance_clock(self, request: ClockAdvance) -> ClockAdvanced:
        """Returns once everything due up to `now` is processed, or, when this run hands over to a new one
        first (version 3), with `processed_up_to` short of `now`: the caller asks the next run again."""
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
        if self.state is not None and self.state.test_clock_id is None:
            raise ApplicationError("Subscription is not bound to a test clock", type="InvalidRequest")

    @workflow.query
    def live_state(self) -> SubscriptionState | None:
        return self.state

    # ---- the loop -------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: SubscriptionInput) -> None:
        if self.state is None:
            self.state = await self._act(
                Activities.load_subscription_state,
                LoadState(subscription_id=request.subscription_id),
                "load state",
            )
            if self.state.workflow_version >= 3 and self.state.needs_invoice0:
                await self._create_invoice0()
            self._watch(self.state.payment_check_in)
            self.state.payment_check_in = None
            self._publish(unless_started_with=True)
        elif self.state.workflow_version < 1 and not workflow.patched(INHERIT_SEARCH_ATTRIBUTES):
            # Runs recorded before version 1 re-upserted the unchanged attributes after continue-as-new.
            self._publish()
        while True:
            await self._apply_payments()
            if self._payment_check_due():
                await self._reconcile_payments()
                continue
            async with self.lock:
                due = self._next_due()
                if due is not None and due.at <= self._now():
                    await self._process(due)
                    if self._state().workflow_version >= 3 and self._should_continue_as_new():
                        # Mid catch-up: everything up to this deadline is done; the next run does the rest.
                        self.processed_up_to = due.at
                        self.continuing = True
                    else:
                        continue
                elif self._state().status == "active" and self._state().current_period == 0:
                    await self._open(1)
                    continue
            if self._done():
                break
            if not self.continuing:
                self.processed_up_to = self._now()
            if self.continuing or self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self.payments:
                    state = self._state()
                    state.workflow_version = WORKFLOW_VERSION
                    workflow.continue_as_new(
                        SubscriptionInput(subscription_id=state.subscription_id, state=state)
                    )
                self.continuing = False
                continue
            await self._wait(due)
        self.finished = True
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _state(self) -> SubscriptionState:
        assert self.state is not None
        return self.state

    def _now(self) -> datetime:
        state = self._state()
        return state.clock_now if state.test_clock_id and state.clock_now else workflow.now()

    def _next_due(self) -> Due | None:
        state = self._state()
        candidates = [Due(c.grace_period_end, "finalize", c.sequence_number) for c in state.pending_closes]
        if state.status == "pending_payment" and state.activation_deadline is not None:
            candidates.append(Due(state.activation_deadline, "expire"))
        if state.status == "active" and state.current_period and state.current_period_end is not None:
            candidates.append(Due(state.current_period_end, "close", state.current_period))
        candidates += [Due(d.next_at, "charge", d.sequence_number) for d in state.dunning]
        return min(candidates, key=lambda d: (d.at, d.kind != "close"), default=None)

    def _done(self) -> bool:
        state = self._state()
        return (
            state.status == "terminated"
            and not state.pending_closes
            and not state.dunning
            and not self.payments
        )

    def _should_continue_as_new(self) -> bool:
        if workflow.info().is_continue_as_new_suggested():
            return True
        if self._state().workflow_version < 3:
            return self.boundaries_crossed > 0
        return self.boundaries_crossed >= CONTINUE_AS_NEW_PERIODS

    async def _wait(self, due: Due | None) -> None:
        state = self._state()
        self._describe(due)
        self.woken = False
        check = state.payment_check_at  # real time, also for clock-bound runs (the provider's clock)
        if state.test_clock_id:
            # Clock-bound: only the clock moves time, through the advance_clock update.
            reading = state.clock_now

            def moved() -> bool:
                return bool(self.payments) or self.woken or self._state().clock_now != reading

            if check is None:
                await workflow.wait_condition(moved)
                return
            try:
                await workflow.wait_condition(
                    moved, timeout=max(check - workflow.now(), timedelta(seconds=1))
                )
            except TimeoutError:
                pass
            return
        timeout = (due.at - workflow.now()) if due is not None else None
        if check is not None:
            until_check = max(check - workflow.now(), timedelta(seconds=1))
            timeout = until_check if timeout is None else min(timeout, until_check)
        try:
            await workflow.wait_condition(lambda: bool(self.payments) or self.woken, timeout=timeout)
        except TimeoutError:
            pass

    async def _create_invoice0(self) -> None:
        state = self._state()
        created = await self._act(
            Activities.create_invoice0,
            CreateInvoice0(subscription_id=state.subscription_id),
            "create Invoice 0",
        )
        state.status, state.activation_deadline = created.status, created.activation_deadline
        state.needs_invoice0 = False
        self._watch(created.payment_check_in)

    async def _process(self, due: Due) -> None:
        state = self._state()
        if due.kind == "expire":
            result = await self._act(
                Activities.expire_activation,
                ExpireActivation(subscription_id=state.subscription_id, at=due.at),
                "expire unpaid Invoice 0",
            )
            self._terminated(result)
        elif due.kind == "close":
            closed = await self._act(
                Activities.close_period,
                ClosePeriod(subscription_id=state.subscription_id, sequence_number=due.sequence_number),
                f"close period {due.sequence_number} ({due.at:%Y-%m-%d})",
            )
            state.pending_closes.append(closed.pending)
            self.boundaries_crossed += 1
            if closed.terminated:
                self._terminated(Terminated(terminated_at=due.at, closed=None))
            elif closed.pending.grace_period_end <= self._now() and state.workflow_version >= 2:
                # The clock already passed this invoice's grace window: the next period's invoice and this
                # one touch different rows, so both activities go out in one workflow task.
                await asyncio.gather(
                    self._open(due.sequence_number + 1),
                    self._finalize(Due(closed.pending.grace_period_end, "finalize", due.sequence_number)),
                )
            else:
                await self._open(due.sequence_number + 1)
        elif due.kind == "charge":
            await self._charge(due)
        else:
            await self._finalize(due)

    async def _finalize(self, due: Due) -> None:
        state = self._state()
        outcome: InvoiceOutcome = await self._act(
            Activities.finalize_invoice,
            FinalizeInvoice(
                subscription_id=state.subscription_id,
                sequence_number=due.sequence_number,
                at=due.at,
                charge_off_session=state.workflow_version >= 5,
            ),
            f"finalize invoice {due.sequence_number}",
            CALCULATION,
        )
        state.pending_closes = [c for c in state.pending_closes if c.sequence_number != due.sequence_number]
        self._watch(outcome.payment_check_in)
        if outcome.status == "FAILED":
            # No retry can fix it (activities/subscription.py marked the invoice): billing goes on, and the
            # Temporal UI says which invoice needs an operator.
            notice = f"invoice {outcome.invoice_id} FAILED: {outcome.failure}"
            state.attention = [*state.attention, notice]
            workflow.logger.error("subscription %s: %s", state.subscription_id, notice)
        else:
            workflow.logger.info(
                "invoice %s is %s (%s)", outcome.invoice_id, outcome.status, outcome.grand_total
            )
        if outcome.charge:
            # Charged by the loop as a deadline due now, so it runs in time order with everything else
            # (and never inside the gather that opens the next period).
            state.dunning.append(
                Dunning(invoice_id=outcome.invoice_id, sequence_number=due.sequence_number, next_at=due.at)
            )

    async def _charge(self, due: Due) -> None:
        """One off-session charge of an autoCharge invoice; a failure schedules the next retry (the
        activity reads the dunning schedule) or, after the last, applies the dunning policy."""
        state = self._state()
        entry = next(d for d in state.dunning if d.sequence_number == due.sequence_number)
        attempt = entry.attempts + 1
        outcome = await self._act(
            Activities.charge_invoice,
            ChargeInvoice(
                subscription_id=state.subscription_id, invoice_id=entry.invoice_id, attempt=attempt, at=due.at
            ),
            f"charge invoice {due.sequence_number} (attempt {attempt})",
        )
        state.dunning = [d for d in state.dunning if d.invoice_id != entry.invoice_id]
        if outcome.retry_at is not None:
            state.dunning.append(entry.model_copy(update={"attempts": attempt, "next_at": outcome.retry_at}))
        if outcome.status == "PAYMENT_FAILED":
            workflow.logger.warning(
                "invoice %s: charge %d failed (%s); next retry %s",
                entry.invoice_id, attempt, outcome.failure, outcome.retry_at or "none",
            )  # fmt: skip
        if outcome.terminate and state.status != "terminated":
            result = await self._act(
                Activities.terminate_subscription,
                Terminate(
                    subscription_id=state.subscription_id,
                    at=due.at,
                    terminated_by="system",
                    reason=f"invoice {entry.invoice_id} was still unpaid after {attempt} charges",
                ),
                "terminate: dunning exhausted",
            )
            self._terminated(result)

    async def _open(self, sequence_number: int) -> None:
        state = self._state()
        period = await self._act(
            Activities.open_period,
            OpenPeriod(subscription_id=state.subscription_id, sequence_number=sequence_number),
            f"open period {sequence_number}",
        )
        state.current_period, state.current_period_end = period.sequence_number, period.period_end

    async def _apply_payments(self) -> None:
        while self.payments:
            succeeded, message = self.payments.pop(0)
            state = self._state()
            async with self.lock:
                outcome = await self._act(
                    Activities.record_payment,
                    RecordPayment(
                        subscription_id=state.subscription_id,
                        invoice_id=message.invoice_id,
                        payment_session_id=message.payment_session_id,
                        at=self._now(),
                        succeeded=succeeded,
                        payment_method=getattr(message, "payment_method", None),
                        provider_customer=getattr(message, "provider_customer", None),
                    ),
                    f"record {'payment' if succeeded else 'declined payment'} of {message.invoice_id}",
                )
                if outcome.activated:
                    state.status, state.activation_deadline = "active", None
                    self._publish()
                if outcome.settled and state.dunning:
                    # Paid by hand (the portal's Pay now) mid-dunning: no more retries.
                    state.dunning = [d for d in state.dunning if d.invoice_id != message.invoice_id]
                    self.woken = True

    # ---- payments at a provider (issue 11) ------------------------------------------------------------

    def _watch(self, check_in: timedelta | None) -> None:
        """Ask the provider within `check_in` of now, workflow time (keeps an earlier check)."""
        state = self._state()
        if check_in is None:
            return
        check_at = workflow.now() + check_in
        if state.payment_check_at is None or check_at < state.payment_check_at:
            state.payment_check_at = check_at

    def _payment_check_due(self) -> bool:
        check = self._state().payment_check_at
        return check is not None and check <= workflow.now()

    async def _reconcile_payments(self) -> None:
        """The provider's word on open payments whose webhook did not come: recorded like their signals."""
        state = self._state()
        async with self.lock:
            found = await self._act(
                Activities.reconcile_payments,
                ReconcilePayments(subscription_id=state.subscription_id),
                "ask the payment provider about open payments",
            )
        state.payment_check_at = None
        self._watch(found.next_check_in)
        for completed in found.completed:
            self.payments.append((True, completed))
        for declined in found.declined:
            self.payments.append((False, declined))

    def _terminated(self, result: Terminated) -> None:
        state = self._state()
        state.status = "terminated"
        state.activation_deadline = None
        state.current_period_end = None
        pending = {c.sequence_number for c in state.pending_closes}
        if result.closed is not None and result.closed.sequence_number not in pending:
            state.pending_closes.append(result.closed)
        self._publish()

    async def _act(
        self,
        activity: MethodAsyncSingleParam[Activities, A, R],
        arg: A,
        summary: str,
        budget: timedelta = QUICK,
    ) -> R:
        if budget == QUICK and self.state is not None and self.state.workflow_version >= 4:
            # Version 4: a quick activity is a few statements under one row lock, so the Temporal server
            # need not schedule, dispatch and record it; as a local activity it is a marker in the workflow
            # task that ran it. A worker dying mid-activity is noticed when that task times out, and the
            # activity runs again on another worker (every activity is idempotent by business key). The
            # finalize (minutes of aggregation at worst) stays a server-side activity with heartbeats.
            return await workflow.execute_local_activity_method(
                activity, arg, start_to_close_timeout=budget, retry_policy=RETRY, summary=summary
            )
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=budget,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=RETRY,
            summary=summary,
        )

    def _publish(self, *, unless_started_with: bool = False) -> None:
        """Search attributes, so the Temporal UI finds it by merchant, customer, status, plan or clock.
        `unless_started_with` leaves out those the start already set to the same value (the API's create
        sets them): an upsert costs the Temporal server about a fifth of its work for a create
        (bench/README.md)."""
        state = self._state()
        pairs = sa.subscription(
            state.merchant_id, state.customer_id, state.plan_id, state.status, state.test_clock_id
        )
        current = workflow.info().typed_search_attributes
        updates = [
            pair.key.value_set(pair.value)
            for pair in pairs
            if not unless_started_with or current.get(pair.key) != pair.value
        ]
        if updates:
            workflow.upsert_search_attributes(updates)

    def _describe(self, due: Due | None) -> None:
        state = self._state()
        if due is None:
            waiting = "nothing scheduled"
        elif due.kind == "expire":
            waiting = f"awaiting Invoice 0 payment (checkout expires {due.at.isoformat()})"
        elif due.kind == "close":
            waiting = f"period {due.sequence_number} runs until {due.at.isoformat()}"
        elif due.kind == "charge":
            waiting = f"invoice {due.sequence_number} unpaid: next charge {due.at.isoformat()}"
        else:
            waiting = f"invoice {due.sequence_number} in grace window until {due.at.isoformat()}"
        if state.test_clock_id:
            waiting += f"; test clock {state.test_clock_id} reads {state.clock_now}"
        state.waiting_for = waiting
        attention = "".join(f"NEEDS AN OPERATOR: {notice}; " for notice in state.attention)
        workflow.set_current_details(f"{attention}{state.status}: {waiting}")
