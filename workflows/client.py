"""Client-side helpers: everything that talks to the Temporal server from outside a workflow (the API, the
worker's start-up, activities, the CLI). The workflow modules beside this one stay deterministic and do no
I/O; this module connects, starts and messages workflows, keeps the Schedules and registers search
attributes.

Every start is idempotent (`USE_EXISTING`): a repeated create, a reconciler pass and a payment all find the
running workflow, or start it when a crash (or the end of the workflow) left none. Payments use
signal-with-start so that an invoice paid after its subscription's workflow finished still reaches a (new)
run of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WithStartWorkflowOperation,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from workflows import search_attributes as sa
from workflows.entitlement import EntitlementWorkflow
from workflows.entitlement import search_attributes as entitlement_search_attributes
from workflows.entitlement_messages import EntitlementInput
from workflows.ids import (
    WEBHOOK_RELAY_WORKFLOW_ID,
    entitlement_workflow_id,
    payment_workflow_id,
    source_installation_workflow_id,
    subscription_workflow_id,
    test_clock_workflow_id,
    webhook_endpoint_workflow_id,
)
from workflows.payment import PaymentWorkflow
from workflows.payment import search_attributes as payment_search_attributes
from workflows.payment_messages import PaymentInput, PaymentOutcome
from workflows.reconciler import RECONCILER_SCHEDULE_ID, ReconcileRequest, ReconcilerWorkflow
from workflows.source_installation import SourceInstallationWorkflow
from workflows.source_messages import (
    AwaitConnected,
    Connected,
    Disconnected,
    DisconnectRequest,
    InstallationInput,
    PollNow,
    ReviewEvents,
    ReviewResult,
)
from workflows.subscription import SubscriptionWorkflow
from workflows.subscription_messages import (
    AwaitCreated,
    Created,
    PaymentCompleted,
    PaymentDeclined,
    SubscriptionInput,
    WatchPayments,
)
from workflows.test_clock import AdvanceClock, ClockAdvanceResult, TestClockInput, TestClockWorkflow
from workflows.webhook_endpoint import WebhookEndpointWorkflow
from workflows.webhook_messages import EndpointInput, EndpointRef, Wake
from workflows.webhook_relay import RelayInput, WebhookRelayWorkflow


async def connect(address: str, namespace: str = "default") -> Client:
    """Every client and worker uses the pydantic data converter (Decimal and date need it)."""
    return await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)


# ---- subscriptions ---------------------------------------------------------------------------------------


async def start_subscription_workflow(
    client: Client, task_queue: str, subscription_id: str, signal: str | None = None, message: Any = None
) -> None:
    """Start the subscription's workflow unless it runs; with `signal`, deliver `message` to it either way."""
    await client.start_workflow(
        SubscriptionWorkflow.run,
        SubscriptionInput(subscription_id=subscription_id),
        id=subscription_workflow_id(subscription_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=signal,
        start_signal_args=[message] if signal else [],
    )


async def create_subscription(
    client: Client,
    task_queue: str,
    subscription_id: str,
    search_attributes: Sequence[SearchAttributePair[Any]] = (),
) -> Created:
    """Start the subscription's workflow (or find it) and wait until it has written Invoice 0 and, when
    Invoice 0 is free, the activation: one update-with-start round trip. A repeated create finds the same
    run and gets the same answer. The start carries `search_attributes` (sa.subscription of the row), so the
    workflow upserts only what Invoice 0 changed."""
    start = WithStartWorkflowOperation(
        SubscriptionWorkflow.run,
        SubscriptionInput(subscription_id=subscription_id),
        id=subscription_workflow_id(subscription_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(list(search_attributes)),
    )
    return await client.execute_update_with_start_workflow(
        SubscriptionWorkflow.await_created,
        AwaitCreated(subscription_id=subscription_id),
        start_workflow_operation=start,
    )


async def send_payment_completed(
    client: Client, task_queue: str, subscription_id: str, message: PaymentCompleted
) -> None:
    await start_subscription_workflow(client, task_queue, subscription_id, "payment_completed", message)


async def send_payment_declined(
    client: Client, task_queue: str, subscription_id: str, message: PaymentDeclined
) -> None:
    await start_subscription_workflow(client, task_queue, subscription_id, "payment_declined", message)


async def send_watch_payments(
    client: Client, task_queue: str, subscription_id: str, message: WatchPayments
) -> None:
    """Issue 11: a payment of the subscription was opened at a provider outside its workflow (the page)."""
    await start_subscription_workflow(client, task_queue, subscription_id, "watch_payments", message)


# ---- webhooks --------------------------------------------------------------------------------------------


async def wake_webhook_endpoints(
    client: Client, task_queue: str, endpoints: Sequence[EndpointRef], reason: str
) -> None:
    """Signal-with-start each endpoint's workflow: it looks at its pending deliveries now. Concurrent."""

    async def wake(endpoint: EndpointRef) -> None:
        merchant = SearchAttributePair(sa.MERCHANT_ID, endpoint.merchant_id)
        await client.start_workflow(
            WebhookEndpointWorkflow.run,
            EndpointInput(endpoint=endpoint),
            id=webhook_endpoint_workflow_id(endpoint.endpoint_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="wake",
            start_signal_args=[Wake(reason=reason)],
            search_attributes=TypedSearchAttributes([merchant]),
        )

    await asyncio.gather(*(wake(e) for e in endpoints))


async def ensure_webhook_relay(client: Client, task_queue: str, relay: RelayInput | None = None) -> None:
    """Start the deployment's one outbox relay unless it runs (every worker calls this at start)."""
    await client.start_workflow(
        WebhookRelayWorkflow.run,
        relay or RelayInput(),
        id=WEBHOOK_RELAY_WORKFLOW_ID,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


# ---- source installations -------------------------------------------------------------------------------


async def connect_installation(
    client: Client,
    task_queue: str,
    installation: InstallationInput,
    search_attributes: Sequence[SearchAttributePair[Any]] = (),
) -> Connected:
    """Start the installation's workflow (or find it) and wait until it has validated the customer's key:
    one update-with-start round trip, so the API's connect answers `active` or `error`. The start carries
    `search_attributes` (sa.installation of the row)."""
    start = WithStartWorkflowOperation(
        SourceInstallationWorkflow.run,
        installation,
        id=source_installation_workflow_id(installation.installation_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(list(search_attributes)),
    )
    return await client.execute_update_with_start_workflow(
        SourceInstallationWorkflow.await_connected,
        AwaitConnected(installation_id=installation.installation_id),
        start_workflow_operation=start,
    )


async def review_source_events(client: Client, installation_id: str, request: ReviewEvents) -> ReviewResult:
    """Approve or reject events of one installation through its workflow. A refused single review raises
    WorkflowUpdateFailedError whose cause is an ApplicationError (type NotPending, …)."""
    handle = client.get_workflow_handle(source_installation_workflow_id(installation_id))
    return await handle.execute_update(SourceInstallationWorkflow.review, request)


async def disconnect_installation(
    client: Client, installation_id: str, request: DisconnectRequest | None = None
) -> Disconnected:
    handle = client.get_workflow_handle(source_installation_workflow_id(installation_id))
    return await handle.execute_update(SourceInstallationWorkflow.disconnect, request or DisconnectRequest())


async def poll_installation_now(client: Client, installation_id: str, reason: str = "") -> None:
    """Signal the installation to poll at once; an installation whose workflow has ended is left alone."""
    handle = client.get_workflow_handle(source_installation_workflow_id(installation_id))
    try:
        await handle.signal(SourceInstallationWorkflow.poll_now, PollNow(reason=reason))
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise


# ---- entitlements ----------------------------------------------------------------------------------------


async def start_entitlement_workflow(
    client: Client,
    task_queue: str,
    entitlement_id: str,
    *,
    merchant_id: str,
    customer_id: str,
    subscription_id: str,
    test_clock_id: str | None,
) -> None:
    """Start the entitlement's expiry timer unless it runs (the API after its commit, the reconciler)."""
    await client.start_workflow(
        EntitlementWorkflow.run,
        EntitlementInput(entitlement_id=entitlement_id),
        id=entitlement_workflow_id(entitlement_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            entitlement_search_attributes(merchant_id, customer_id, subscription_id, test_clock_id)
        ),
    )


# ---- one-off payments -----------------------------------------------------------------------------------


async def start_payment_workflow(
    client: Client,
    task_queue: str,
    payment_id: str,
    *,
    merchant_id: str | None,
    customer_id: str | None,
    outcome: PaymentOutcome | None = None,
) -> None:
    """Start the payment's workflow unless it runs (the API after its commit, the reconciler); with
    `outcome`, deliver it either way (signal-with-start: a payment whose workflow finished still gets a run
    that answers it)."""
    await client.start_workflow(
        PaymentWorkflow.run,
        PaymentInput(payment_id=payment_id),
        id=payment_workflow_id(payment_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            payment_search_attributes(merchant_id, customer_id) if merchant_id else []
        ),
        start_signal="outcome" if outcome is not None else None,
        start_signal_args=[outcome] if outcome is not None else [],
    )


async def send_one_off_payment_outcome(
    client: Client,
    task_queue: str,
    payment_id: str,
    outcome: PaymentOutcome,
    *,
    merchant_id: str | None = None,
) -> None:
    """The provider's outcome for a one-off payment (sandbox page, Stripe webhook): signal-with-start. A
    run it starts sets its search attributes when it loads the payment, so `merchant_id` may be unknown."""
    await start_payment_workflow(
        client, task_queue, payment_id, merchant_id=merchant_id, customer_id=None, outcome=outcome
    )


# ---- test clocks -----------------------------------------------------------------------------------------


async def advance_test_clock(
    client: Client, task_queue: str, test_clock_id: str, expected_from: datetime, to: datetime
) -> ClockAdvanceResult:
    """Have the clock's workflow (started if need be) move it from `expected_from` to `to` and drive every
    clock-bound workflow there; returns once all have caught up. Cancelling the wait leaves the advance
    running in the workflow."""
    start = WithStartWorkflowOperation(
        TestClockWorkflow.run,
        TestClockInput(test_clock_id=test_clock_id),
        id=test_clock_workflow_id(test_clock_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return await client.execute_update_with_start_workflow(
        TestClockWorkflow.advance,
        AdvanceClock(to=to, expected_from=expected_from),
        start_workflow_operation=start,
    )


async def end_test_clock_workflow(client: Client, test_clock_id: str) -> None:
    """Tell a deleted clock's workflow to finish; a clock never advanced has none, and one already finished
    is left as it is."""
    try:
        await client.get_workflow_handle(test_clock_workflow_id(test_clock_id)).signal(
            TestClockWorkflow.clock_deleted
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise


# ---- schedules -------------------------------------------------------------------------------------------


def reconciler_schedule(task_queue: str, every: timedelta) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcilerWorkflow.run,
            ReconcileRequest(),
            id="reconciler",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A slow pass is not doubled by the next one.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_reconciler_schedule(client: Client, task_queue: str, every: timedelta) -> None:
    """Create the reconciler's Schedule, or update it to this worker's task queue and interval."""
    schedule = reconciler_schedule(task_queue, every)
    try:
        await client.create_schedule(RECONCILER_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(RECONCILER_SCHEDULE_ID).update(replace)


# ---- search attributes -----------------------------------------------------------------------------------


class SearchAttributeConflict(RuntimeError):
    """A search attribute exists under our name with another type; Temporal cannot change its type."""


def _indexed_type(key: SearchAttributeKey[Any]) -> IndexedValueType.ValueType:
    return IndexedValueType.ValueType(int(key.indexed_value_type))


async def _existing(client: Client, namespace: str) -> dict[str, IndexedValueType.ValueType] | None:
    """Registered custom attributes, or None where the server cannot list them (the time-skipping server)."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.UNIMPLEMENTED:
            return None
        raise
    return dict(listed.custom_attributes)


async def ensure_search_attributes(client: Client, namespace: str = "default") -> list[str]:
    """Register every Accrue search attribute that is missing; returns the names added.

    Idempotent and safe to run concurrently: an attribute that appears meanwhile counts as present.
    """
    existing = await _existing(client, namespace)
    added: list[str] = []
    for key in sa.ALL:
        wanted = _indexed_type(key)
        if existing is not None and key.name in existing:
            if existing[key.name] != wanted:
                raise SearchAttributeConflict(
                    f"search attribute {key.name} exists in namespace {namespace!r} with type "
                    f"{IndexedValueType.Name(existing[key.name])}, expected {IndexedValueType.Name(wanted)}"
                )
            continue
        # One request per attribute: a batch fails as a whole when any one of them already exists.
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes={key.name: wanted})
            )
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise
            continue
        added.append(key.name)
    return added
