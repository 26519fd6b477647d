"""What the API sends to subscription workflows. Payments use signal-with-start so that an invoice paid
after its subscription's workflow finished still reaches a (new) run of it."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from workflows.ids import subscription_workflow_id
from workflows.subscription_messages import PaymentCompleted, PaymentDeclined, SubscriptionInput


async def send_payment_completed(
    client: Client, task_queue: str, subscription_id: str, message: PaymentCompleted
) -> None:
    from workflows.subscription import SubscriptionWorkflow

    await client.start_workflow(
        SubscriptionWorkflow.run,
        SubscriptionInput(subscription_id=subscription_id),
        id=subscription_workflow_id(subscription_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal="payment_completed",
        start_signal_args=[message],
    )


async def send_payment_declined(
    client: Client, task_queue: str, subscription_id: str, message: PaymentDeclined
) -> None:
    from workflows.subscription import SubscriptionWorkflow

    await client.start_workflow(
        SubscriptionWorkflow.run,
        SubscriptionInput(subscription_id=subscription_id),
        id=subscription_workflow_id(subscription_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal="payment_declined",
        start_signal_args=[message],
    )
