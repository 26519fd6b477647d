"""SubscriptionWorkflow's typed messages: one pydantic model per input, signal, update, query and activity."""

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


# The workflow behaviour a state was written for. A run decides versioned behaviour from the number its state
# carries (recorded in its history as the load_subscription_state result or the continue-as-new input), so
# old histories replay on their old path, and unlike workflow.patched it costs no marker or search-attribute
# upsert in every run. Continue-as-new hands the current number on.
#   1: continued runs inherit their search attributes instead of upserting them again
#   2: the next period opens alongside the finalize of an invoice whose grace window already passed
WORKFLOW_VERSION = 2


class SubscriptionState(BaseModel):
    subscription_id: str
    merchant_id: str
    environment: str
    customer_id: str
    plan_id: str
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
    workflow_version: int = 0  # absent in states written before versioning: see WORKFLOW_VERSION


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


# Activity inputs and results (activities/subscription.py implements them; the workflow calls them by name).


class LoadState(BaseModel):
    subscription_id: str


class OpenPeriod(BaseModel):
    subscription_id: str
    sequence_number: int


class PeriodInfo(BaseModel):
    sequence_number: int
    period_end: datetime
    is_final: bool


class ClosePeriod(BaseModel):
    subscription_id: str
    sequence_number: int


class PeriodClosed(BaseModel):
    pending: PendingClose
    terminated: bool  # the period ended at endingAt, which terminated the subscription


class FinalizeInvoice(BaseModel):
    subscription_id: str
    sequence_number: int
    at: datetime


class InvoiceOutcome(BaseModel):
    invoice_id: str
    status: str
    grand_total: str


class RecordPayment(BaseModel):
    subscription_id: str
    invoice_id: str
    payment_session_id: str
    at: datetime
    succeeded: bool


class PaymentOutcome(BaseModel):
    applied: bool  # False when the session or invoice was no longer payable (duplicate, expired, cancelled)
    activated: bool  # Invoice 0 paid: the subscription became active


class ExpireActivation(BaseModel):
    subscription_id: str
    at: datetime


class Terminate(BaseModel):
    subscription_id: str
    at: datetime
    terminated_by: str
    reason: str


class Terminated(BaseModel):
    terminated_at: datetime
    closed: PendingClose | None  # the period cut short at terminatedAt, now CLOSING


SubscriptionInput.model_rebuild()
