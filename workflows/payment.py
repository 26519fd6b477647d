"""PaymentWorkflow: one per one-off payment (`payment-<id>`, POST /v0/payments, issue 11 item 4).

It loads the payment once, then waits, on Temporal time, for whichever comes first:
- an `outcome` signal from the payment provider (the sandbox page's buttons, the Stripe webhook): one
  activity records it under the row lock (completed → payment.completed.v0; declined → still pending,
  payable until it expires; processing while the provider confirms), so a duplicate signal changes nothing;
- `expiresAt`: a durable timer; one activity expires the payment (payment.expired.v0) unless an outcome got
  there first, and the workflow ends;
- for a provider with webhooks (Stripe), every RECONCILE_EVERY_SECONDS it asks the provider itself, so a
  lost webhook still ends in the same outcome.

Payments are not bound to test clocks: a payment has no subscription, and its link is a real URL the payer
opens in real time (docs/decisions.md, "One-off payments").
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.types import MethodAsyncSingleParam

with workflow.unsafe.imports_passed_through():
    from workflows import search_attributes as sa
    from workflows.payment_messages import (
        OUTCOMES_PER_RUN,
        RECONCILE_EVERY_SECONDS,
        WORKFLOW_VERSION,
        CheckProvider,
        ExpirePayment,
        LoadPayment,
        PaymentActivityDefs,
        PaymentInput,
        PaymentOutcome,
        PaymentState,
        RecordOutcome,
    )

A = TypeVar("A")
R = TypeVar("R")

QUICK = timedelta(seconds=30)  # local activities: one row under its lock (and an outbox row)
PROVIDER = timedelta(minutes=1)  # the provider's API (Stripe) answers a retrieve within this
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["NotFound", "IllegalTransition"],
)
MIN_WAIT = timedelta(seconds=1)
OPEN = ("pending", "processing")
WITH_WEBHOOKS = ("stripe",)  # providers whose outcome may be lost in transit: reconciled on a timer


def search_attributes(merchant_id: str, customer_id: str | None) -> list[SearchAttributePair[str]]:
    """A payment workflow's attributes (set at start by the API and the reconciler)."""
    pairs = [SearchAttributePair(sa.MERCHANT_ID, merchant_id)]
    if customer_id:
        pairs.append(SearchAttributePair(sa.CUSTOMER_ID, customer_id))
    return pairs


@workflow.defn
class PaymentWorkflow:
    @workflow.init
    def __init__(self, request: PaymentInput) -> None:
        self.payment_id = request.payment_id
        self.state: PaymentState | None = request.state
        self.outcomes: list[PaymentOutcome] = list(request.outcomes)
        self.handled = 0
        self.note = ""

    # ---- messages -------------------------------------------------------------------------------------

    @workflow.signal
    def outcome(self, message: PaymentOutcome) -> None:
        """The provider's outcome; recorded in arrival order by the run loop."""
        if message.payment_id == self.payment_id:
            self.outcomes.append(message)

    @workflow.query
    def live_state(self) -> PaymentState | None:
        return self.state

    # ---- the loop -------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: PaymentInput) -> None:
        if self.state is None:
            try:
                self.state = await self._act(
                    PaymentActivityDefs.load_payment, LoadPayment(payment_id=self.payment_id), "load payment"
                )
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError) and cause.type == "NotFound":
                    workflow.set_current_details(f"payment {self.payment_id} not found: nothing to do")
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return
                raise
            self._publish()
        state = self.state
        # Outcomes queued before a (re)start are recorded even when the payment is already settled: the
        # activity then reports the status and changes nothing.
        await self._record_outcomes()
        while state.status in OPEN:
            now = workflow.now()
            if now >= state.expires_at:
                expired = await self._act(
                    PaymentActivityDefs.expire_payment,
                    ExpirePayment(payment_id=state.payment_id, at=now),
                    f"expire at {state.expires_at.isoformat()}",
                )
                state.status = expired.status
                break
            if self.handled >= OUTCOMES_PER_RUN or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                state.workflow_version = WORKFLOW_VERSION
                workflow.continue_as_new(
                    PaymentInput(payment_id=self.payment_id, state=state, outcomes=self.outcomes)
                )
            self._describe()
            wait = max(state.expires_at - now, MIN_WAIT)
            reconcile = state.provider in WITH_WEBHOOKS
            if reconcile:
                wait = min(wait, timedelta(seconds=RECONCILE_EVERY_SECONDS))
            try:
                await workflow.wait_condition(lambda: bool(self.outcomes), timeout=wait)
            except TimeoutError:
                if reconcile and workflow.now() < state.expires_at:
                    await self._reconcile()
                continue
            await self._record_outcomes()
        self._describe()
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _record_outcomes(self) -> None:
        state = self.state
        assert state is not None
        while self.outcomes:
            message = self.outcomes.pop(0)
            self.handled += 1
            recorded = await self._act(
                PaymentActivityDefs.record_payment_outcome,
                RecordOutcome(
                    payment_id=state.payment_id,
                    outcome=message.outcome,
                    at=workflow.now(),
                    provider_reference=message.provider_reference,
                ),
                f"record {message.outcome} ({message.source})",
            )
            state.status = recorded.status
            if recorded.changed:
                self.note = f"{message.outcome} ({message.source})"

    async def _reconcile(self) -> None:
        """Ask the provider; what it reports goes through the same path as a signal."""
        state = self.state
        assert state is not None
        try:
            checked = await workflow.execute_activity_method(
                PaymentActivityDefs.check_payment_provider,
                CheckProvider(payment_id=state.payment_id),
                start_to_close_timeout=PROVIDER,
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=["NotFound"]),
                summary="ask the provider",
            )
        except ActivityError:
            # The provider is unreachable for now: the next timer asks again (the webhook may come first).
            self.note = "the provider could not be asked"
            return
        if checked.outcome is not None and checked.outcome != "declined":
            self.outcomes.append(
                PaymentOutcome(payment_id=state.payment_id, outcome=checked.outcome, source="reconcile")
            )
            await self._record_outcomes()

    async def _act(
        self, activity: MethodAsyncSingleParam[PaymentActivityDefs, A, R], arg: A, summary: str
    ) -> R:
        return await workflow.execute_local_activity_method(
            activity, arg, start_to_close_timeout=QUICK, retry_policy=RETRY, summary=summary
        )

    def _publish(self) -> None:
        state = self.state
        assert state is not None
        current = workflow.info().typed_search_attributes
        pairs = search_attributes(state.merchant_id, state.customer_id)
        updates = [p.key.value_set(p.value) for p in pairs if current.get(p.key) != p.value]
        if updates:
            workflow.upsert_search_attributes(updates)

    def _describe(self) -> None:
        state = self.state
        assert state is not None
        if state.status in OPEN:
            text = f"{state.status}: awaiting payment until {state.expires_at.isoformat()}"
        else:
            text = state.status
        if self.note:
            text += f" (last: {self.note})"
        workflow.set_current_details(text)
