"""The activity WebhookEndpointWorkflow calls, declared without its implementation (as
workflows/subscription_activities.py does): `activities.webhook_delivery.WebhookDeliveryActivities`
overrides it with the real POSTs. The method's name is the activity name recorded in histories."""

from __future__ import annotations

from temporalio import activity

from workflows.webhook_messages import BatchDelivered, DeliverBatch


class WebhookActivityDefs:
    @activity.defn
    async def deliver_webhook_batch(self, request: DeliverBatch) -> BatchDelivered:
        raise NotImplementedError
