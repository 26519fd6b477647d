"""A provider's payment outcome, sent to the workflow that owns the payment: the one place the Stripe
webhook endpoint and the Stripe checkout page turn "the PaymentIntent succeeded / was declined" into the
signal the sandbox checkout sends too (PaymentCompleted / PaymentDeclined).

The owner comes from the provider object's metadata (integrations.payments.base.owner_of):
`subscription` → `subscription-<id>` (invoice payments, top-ups), `payment` → `payment-<id>` (one-off
payments). Another owner kind registers its sender in `OWNER_SIGNALS` (helper "payments": the one-off
payment workflow), with the same signature.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from temporalio.client import Client
from temporalio.service import RPCError

from api.app_state import temporal_client
from api.problems import ApiError
from db.models import PaymentSession
from integrations.payments.base import PaymentState
from workflows.client import send_one_off_payment_outcome, send_payment_completed, send_payment_declined
from workflows.payment_messages import PaymentOutcome
from workflows.subscription_messages import PaymentCompleted, PaymentDeclined

RECORD_TIMEOUT_SECONDS = 10.0

# (Temporal client, task queue, the payment as the provider reports it, succeeded?) → signal sent.
OwnerSignal = Callable[[Client, str, PaymentState, bool], Awaitable[None]]


class UnknownOwner(Exception):
    """The provider object names no owner Accrue knows (not created by Accrue, or an owner kind without a
    registered sender)."""


async def _signal_subscription(client: Client, task_queue: str, state: PaymentState, succeeded: bool) -> None:
    assert state.owner is not None
    if not state.invoice_id or not state.our_id:
        raise UnknownOwner(f"{state.reference} names no invoice or payment session")
    if succeeded:
        completed = PaymentCompleted(invoice_id=state.invoice_id, payment_session_id=state.our_id)
        # Invoice 0 of an autoCharge subscription saves the card for the period invoices' off-session charges.
        if "payment_method" in PaymentCompleted.model_fields and state.payment_method:
            completed = completed.model_copy(
                update={"payment_method": state.payment_method, "provider_customer": state.provider_customer}
            )
        await send_payment_completed(client, task_queue, state.owner.id, completed)
    else:
        declined = PaymentDeclined(invoice_id=state.invoice_id, payment_session_id=state.our_id)
        await send_payment_declined(client, task_queue, state.owner.id, declined)


async def _signal_payment(client: Client, task_queue: str, state: PaymentState, succeeded: bool) -> None:
    """A one-off payment's outcome (owner `payment`): the payment workflow's `outcome` signal."""
    assert state.owner is not None
    outcome = PaymentOutcome(
        payment_id=state.owner.id,
        outcome="completed" if succeeded else "declined",
        provider_reference=state.reference,
        source="stripe",
    )
    await send_one_off_payment_outcome(client, task_queue, state.owner.id, outcome)


OWNER_SIGNALS: dict[str, OwnerSignal] = {"subscription": _signal_subscription, "payment": _signal_payment}


async def signal_owner(app: FastAPI, task_queue: str, state: PaymentState, succeeded: bool) -> None:
    """Signal-with-start the owner, so the outcome reaches it even if its workflow had finished. Raises
    UnknownOwner, or ApiError 503 when Temporal cannot be reached (nothing was recorded: retry)."""
    owner = state.owner
    sender = OWNER_SIGNALS.get(owner.kind) if owner is not None else None
    if owner is None or sender is None:
        raise UnknownOwner(f"{state.reference} has no owner Accrue signals")
    try:
        client = await temporal_client(app)
        await sender(client, task_queue, state, succeeded)
    except (RPCError, RuntimeError, OSError) as exc:
        raise ApiError(
            503,
            f"Could not reach the workflow of {owner.kind} {owner.id} ({exc}); nothing was recorded, retry",
        ) from None


async def session_recorded(app: FastAPI, payment_session_id: str, before: str) -> PaymentSession | None:
    """The payment session once its workflow has recorded an outcome (its status left `before`); None on
    timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_TIMEOUT_SECONDS
    while True:
        async with app.state.sessions() as session:
            row: PaymentSession | None = await session.get(PaymentSession, payment_session_id)
        if row is not None and row.status != before:
            return row
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.1)
