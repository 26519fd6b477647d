"""WebhookEndpointWorkflow (`webhook-endpoint-<ep_id>`): delivers one endpoint's backlog in batches.

SKELETON by the lead: helper 1 owns this file and replaces the body. The signatures below are the seam
other code relies on (workflows/client.py wake_webhook_endpoints)."""

from __future__ import annotations

from temporalio import workflow

from workflows.webhook_messages import EndpointInput, Wake


@workflow.defn
class WebhookEndpointWorkflow:
    def __init__(self) -> None:
        self._wake = False

    @workflow.run
    async def run(self, input: EndpointInput) -> None:
        raise NotImplementedError

    @workflow.signal
    def wake(self, message: Wake) -> None:
        self._wake = True
