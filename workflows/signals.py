"""How the API and the worker reach subscription workflows. Every start is idempotent (`USE_EXISTING`): a
repeated create, a reconciler pass and a payment all find the running workflow, or start it when a crash (or
the end of the workflow) left none. Payments use signal-with-start so that an invoice paid after its
subscription's workflow finished still reaches a (new) run of it."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from workflows.ids import subscription_workflow_id
from workflows.subscription_messages import PaymentCompleted, PaymentDeclined, SubscriptionInput


async def start_subscription_workflow(
    client: Client, task_queue: str, subscription_id: str, signal: str | None = None, message: Any = None
) -> None:
    """Start the subscription's workflow unless it runs; with `signal`, deliver `message` to it either way."""
    from workflows.subscription import SubscriptionWorkflow

    await client.start_workflow(
        SubscriptionWorkflow.run,
        SubscriptionInput(subscription_id=subscription_id),
        id=subscription_workflow_id(subscription_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=signal,
        start_signal_args=[message] if signal else [],
    )


async def send_payment_completed(
    client: Client, task_queue: str, subscription_id: str, message: PaymentCompleted
) -> None:
    await start_subscription_workflow(client, task_queue, subscription_id, "payment_completed", message)


async def send_payment_declined(
    client: Client, task_queue: str, subscription_id: str, message: PaymentDeclined
) -> None:
    await start_subscription_workflow(client, task_queue, subscription_id, "payment_declined", message)
