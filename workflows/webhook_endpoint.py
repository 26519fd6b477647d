"""WebhookEndpointWorkflow (`webhook-endpoint-<ep_id>`): delivers one endpoint's backlog in batches.

One workflow per endpoint, never one per message (design rule 11): messages and deliveries live in
PostgreSQL, and each batch activity claims up to 100 due deliveries, POSTs them concurrently (in order per
resource) and records every attempt. Between batches the workflow sleeps on a durable timer until the
earliest scheduled retry (D18) or until the `wake` signal says there is new work (the relay, a resend or
recover, a PATCH or DELETE of the endpoint), whichever comes first. It is started by signal-with-start
(workflows.client.wake_webhook_endpoints) with the merchant's search attribute, ends when the endpoint is
deleted, idles while it is disabled, and continues as new every `batches_per_run` batches (200).

Current details show the backlog, the oldest undelivered message, the next retry and the last batch.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.webhook_retry import duration_words
    from workflows.webhook_activities import WebhookActivityDefs as Activities
    from workflows.webhook_messages import BatchDelivered, DeliverBatch, EndpointInput, Wake

BATCH = 100  # deliveries claimed per batch activity
# A batch POSTs for at most about a minute (activities/webhook_delivery.py BUDGET) plus one request's
# timeout; a worker that dies mid-batch is noticed by the missing heartbeat within HEARTBEAT.
BATCH_TIMEOUT = timedelta(minutes=5)
HEARTBEAT = timedelta(seconds=10)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


@workflow.defn
class WebhookEndpointWorkflow:
    @workflow.init
    def __init__(self, input: EndpointInput) -> None:
        self.endpoint = input.endpoint
        self.batches = input.batches
        # A new run looks at the database at once: a wake that raced the previous run's continue-as-new
        # (or that started this workflow) is never lost.
        self.woken = True

    @workflow.signal
    def wake(self, message: Wake) -> None:
        self.woken = True

    @workflow.run
    async def run(self, input: EndpointInput) -> None:
        run_batches = 0
        due: datetime | None = None
        while True:
            await self._sleep_until(due)
            self.woken = False
            self.batches += 1
            run_batches += 1
            try:
                result = await workflow.execute_activity_method(
                    Activities.deliver_webhook_batch,
                    DeliverBatch(endpoint=self.endpoint, now=workflow.now(), batch=self.batches, limit=BATCH),
                    start_to_close_timeout=BATCH_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=RETRY,
                    summary=f"deliver batch {self.batches} (up to {BATCH} messages)",
                )
            except ActivityError as err:
                # Only failures no retry can fix reach here (e.g. a secret sealed under another
                # ACCRUE_SECRET_KEY): say so and wait for the next wake instead of retrying forever.
                cause = err.cause
                if not isinstance(cause, ApplicationError) or not cause.non_retryable:
                    raise
                workflow.set_current_details(
                    f"stalled in batch {self.batches}: {cause.message}\n\nwaiting for a wake"
                )
                due = None
                continue
            if result.gone:
                workflow.set_current_details(f"endpoint deleted after {self.batches} batches")
                return
            self._describe(result)
            if result.disabled:
                due = None
            elif result.more_due:
                due = workflow.now()
            else:
                due = result.next_due_at
            if run_batches >= input.batches_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(input.model_copy(update={"batches": self.batches}))

    async def _sleep_until(self, due: datetime | None) -> None:
        """Until woken, or until `due` (None: no retry is scheduled, only a wake ends the wait)."""
        if self.woken:
            return
        if due is None:
            await workflow.wait_condition(lambda: self.woken)
            return
        wait = due - workflow.now()
        if wait <= timedelta(0):
            return
        try:
            await workflow.wait_condition(lambda: self.woken, timeout=wait)
        except TimeoutError:
            pass

    def _describe(self, result: BatchDelivered) -> None:
        now = workflow.now()
        lines = [f"batch {self.batches}: {result.summary}"]
        if result.disabled:
            reason = {
                "failing": "its attempts failed for 5 days",
                "manual": "by the merchant",
                "webhooks disabled": "the merchant's webhooks are disabled",
            }.get(result.disabled_reason or "", "disabled")
            lines.insert(0, f"endpoint disabled ({reason}): waiting to be re-enabled")
        if result.backlog == 0:
            lines.append("backlog: empty")
        else:
            count = f"{result.backlog:,}{'+' if result.backlog_capped else ''}"
            oldest = ""
            if result.oldest_message_id and result.oldest_message_at:
                age = duration_words(now - result.oldest_message_at)
                oldest = f"; oldest undelivered {result.oldest_message_id} ({age} old)"
            lines.append(f"backlog: {count} pending{oldest}")
        if result.next_due_at is not None and not result.disabled:
            wait = duration_words(result.next_due_at - now)
            lines.append(f"next retry: {result.next_due_at.isoformat()} (in {wait})")
        workflow.set_current_details("\n\n".join(lines))
