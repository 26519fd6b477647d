"""The typed messages of SubscriptionWorkflow: one pydantic model per workflow input, signal, update, query."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class SubscriptionInput(BaseModel):
    subscription_id: str
    # Carried across continue-as-new; a fresh start (or a restart after completion) loads it from the DB.
    state: SubscriptionState | None = None


class PendingClose(BaseModel):
    """A period whose invoice is CLOSING: it is finalized once `grace_period_end` passes."""

    sequence_number: int
    grace_period_end: datetime


class SubscriptionState(BaseModel):
    subscription_id: str
    merchant_id: str
    environment: str
    status: str  # pending_payment | active | terminated
    test_clock_id: str | None = None
    clock_now: datetime | None = None  # the test clock's time; None for real-time subscriptions
    activation_deadline: datetime | None = None  # payment session expiry while pending_payment
    invoice0_id: str | None = None
    current_period: int = 0  # sequence number of the ACTIVE invoice; 0 before activation
    current_period_end: datetime | None = None
    ending_at: datetime | None = None
    pending_closes: list[PendingClose] = []
    waiting_for: str = ""


class PaymentCompleted(BaseModel):
    """Signal: the payer completed the checkout of `payment_session_id` for `invoice_id`."""

    invoice_id: str
    payment_session_id: str


class PaymentDeclined(BaseModel):
    invoice_id: str
    payment_session_id: str


class TerminateRequest(BaseModel):
    reason: str
    terminated_by: str


class TerminateResult(BaseModel):
    subscription_id: str
    terminated_at: datetime


class ClockAdvance(BaseModel):
    """Update: the subscription's test clock now reads `now`; returns once everything due is processed."""

    now: datetime


class ClockAdvanced(BaseModel):
    processed_up_to: datetime
    status: str


SubscriptionInput.model_rebuild()
