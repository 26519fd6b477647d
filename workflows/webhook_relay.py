"""WebhookRelayWorkflow (`webhook-relay`, one per deployment): keeps the outbox relay running.

The relay itself is one long activity (activities/webhook_relay.py) that listens for outbox commits and turns
them into messages; it returns after `listen_seconds` so the workflow can loop, and a worker that dies under
it is noticed by the heartbeat timeout and the activity retried on another worker. After `runs_per_history`
runs the workflow continues as new, so its history stays small forever.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy


class RelayInput(BaseModel):
    listen_seconds: int = 300  # one activity's span
    runs_per_history: int = 48  # activity runs before continue-as-new (4 h at the default span)
    poll_seconds: float = 5.0
    runs: int = 0  # runs by earlier workflow runs, carried across continue-as-new


class RelayRun(BaseModel):
    listen_seconds: int = 300
    poll_seconds: float = 5.0  # the fallback when a notification is missed (it is not durable)


class RelayRunResult(BaseModel):
    relayed: int  # outbox rows turned into messages
    woken: int  # endpoint wakes sent (an endpoint once per batch that gave it work, plus the start's)


class WebhookRelayActivityDefs:
    """Declared here, implemented by activities.webhook_relay.WebhookRelayActivities."""

    @activity.defn
    async def relay_outbox(self, request: RelayRun) -> RelayRunResult:
        raise NotImplementedError


@workflow.defn
class WebhookRelayWorkflow:
    def __init__(self) -> None:
        self._runs = 0
        self._last: RelayRunResult | None = None

    @workflow.run
    async def run(self, input: RelayInput) -> None:
        self._runs = input.runs
        for _ in range(input.runs_per_history):
            self._last = await workflow.execute_activity_method(
                WebhookRelayActivityDefs.relay_outbox,
                RelayRun(listen_seconds=input.listen_seconds, poll_seconds=input.poll_seconds),
                start_to_close_timeout=timedelta(seconds=input.listen_seconds + 60),
                heartbeat_timeout=timedelta(seconds=30),
                # The relay must always come back: retry forever, at most a minute apart.
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
                ),
                summary=f"relay the outbox for {input.listen_seconds} s",
            )
            self._runs += 1
            workflow.set_current_details(
                f"relay run {self._runs}: {self._last.relayed} messages relayed, {self._last.woken} wakes"
            )
        workflow.continue_as_new(input.model_copy(update={"runs": self._runs}))
