"""SubscriptionWorkflow's typed messages: one pydantic model per input, signal, update, query and activity."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from domain.status import InvoiceStatus, SubscriptionStatus


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
#   3: the workflow writes Invoice 0 (create_invoice0) and answers the API's update-with-start; it continues
#      as new every CONTINUE_AS_NEW_PERIODS periods (or when Temporal suggests it), not after every period
#   4: once the state is loaded, the quick activities (all but finalize_invoice) run as local activities,
#      markers in the workflow's own task (bench/README.md: a period close's history events and workflow
#      tasks, and the Temporal server's CPU per subscription)
#   5: autoCharge invoices are charged off-session by the workflow (charge_invoice) once issued, and a failed
#      charge is retried on the dunning schedule as durable deadlines (`dunning`); before, finalize_invoice
#      marked them PAID at once
WORKFLOW_VERSION = 5


class Dunning(BaseModel):
    """An issued autoCharge invoice the workflow still has to charge (version 5): attempt `attempts + 1`
    is due at `next_at` (the issue time for the first charge, then the dunning schedule's retries)."""

    invoice_id: str
    sequence_number: int
    attempts: int = 0  # charges made so far
    next_at: datetime


class SubscriptionState(BaseModel):
    subscription_id: str
    merchant_id: str
    environment: str
    customer_id: str
    plan_id: str
    status: SubscriptionStatus
    test_clock_id: str | None = None
    clock_now: datetime | None = None  # the test clock's time; None for real-time subscriptions
    activation_deadline: datetime | None = None  # payment session expiry while pending_payment
    current_period: int = 0  # sequence number of the ACTIVE invoice; 0 before activation
    current_period_end: datetime | None = None
    ending_at: datetime | None = None
    pending_closes: list[PendingClose] = []
    waiting_for: str = ""
    workflow_version: int = 0  # absent in states written before versioning: see WORKFLOW_VERSION
    # The API stored the row but nobody wrote Invoice 0 yet (version 3: the workflow's first activity does).
    needs_invoice0: bool = False
    attention: list[str] = []  # invoices that FAILED and need an operator (shown in the current details)
    dunning: list[Dunning] = []  # version 5: autoCharge invoices awaiting a charge or a retry
    # Issue 11: when to ask the payment provider about this subscription's open payments (a Stripe
    # PaymentIntent whose webhook has not come), in workflow time: None while nothing is open at a provider.
    # Set by the workflow from activity results (`payment_check_in`: load_subscription_state's, Invoice 0's,
    # a finalized invoice's) and the watch_payments signal, so runs without provider payments never start it.
    payment_check_at: datetime | None = None
    payment_check_in: timedelta | None = None  # load_subscription_state: ask the provider this soon


class PaymentCompleted(BaseModel):
    """Signal: the payer completed the checkout of `payment_session_id` for `invoice_id`."""

    invoice_id: str
    payment_session_id: str
    # The method the payer paid with, when the provider saved it for off-session charges (autoCharge): the
    # sandbox page's test method, the PaymentIntent's payment_method and customer (Stripe).
    payment_method: str | None = None
    provider_customer: str | None = None


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
    """The answer of every clock-bound workflow (subscriptions, source installations) to `advance_clock`."""

    processed_up_to: datetime
    status: str  # the answering workflow's own status (a subscription's, an installation's)


class AwaitCreated(BaseModel):
    """Update (sent with the start by the API's create): returns once Invoice 0 and, when it is free, the
    activation are written, so the create answers with them."""

    subscription_id: str


class Created(BaseModel):
    subscription_id: str
    status: SubscriptionStatus


# Activity inputs and results (workflows/subscription_activities.py declares the activities).


class LoadState(BaseModel):
    subscription_id: str


class CreateInvoice0(BaseModel):
    subscription_id: str


class Invoice0Created(BaseModel):
    invoice_id: str
    status: SubscriptionStatus  # active when Invoice 0 was free
    activation_deadline: datetime | None  # when its checkout expires unpaid
    payment_check_in: timedelta | None = None  # its payment is at a provider: ask it this soon (issue 11)


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
    # Version 5: an autoCharge invoice stays ISSUED (InvoiceOutcome.charge) and the workflow charges it;
    # False keeps the earlier behaviour (PAID at once) for runs recorded before.
    charge_off_session: bool = False


class InvoiceOutcome(BaseModel):
    invoice_id: str
    status: InvoiceStatus
    grand_total: str
    failure: str | None = None  # why the invoice is FAILED
    payment_check_in: timedelta | None = None  # its checkout's payment is at a provider: ask this soon
    charge: bool = False  # ISSUED with something to collect on an autoCharge subscription: charge it


class RecordPayment(BaseModel):
    subscription_id: str
    invoice_id: str
    payment_session_id: str
    at: datetime
    succeeded: bool
    payment_method: str | None = None  # PaymentCompleted's: saved for an autoCharge subscription
    provider_customer: str | None = None


class PaymentOutcome(BaseModel):
    applied: bool  # False when the session or invoice was no longer payable (duplicate, expired, cancelled)
    activated: bool  # Invoice 0 paid: the subscription became active
    settled: bool = False  # the invoice is no longer payable (paid, here or before): its retries end


class ChargeInvoice(BaseModel):
    """Charge an issued autoCharge invoice off-session with the saved payment method (version 5)."""

    subscription_id: str
    invoice_id: str
    attempt: int  # 1: the charge at issue; 2, 3, …: the dunning retries (idempotency `<inv>:charge:<n>`)
    at: datetime  # when the charge is due (the issue time, a retry deadline): the clock's time


class ChargeOutcome(BaseModel):
    invoice_id: str
    status: InvoiceStatus  # afterwards: PAID, PAYMENT_FAILED, or whatever settled it before this attempt
    charged: bool  # the provider was asked (False: the invoice was no longer payable)
    retry_at: datetime | None = None  # the next retry; None once paid, settled, or after the last retry
    terminate: bool = False  # the last retry failed and the dunning policy terminates the subscription
    failure: str | None = None  # the provider's reason for the decline


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


class WatchPayments(BaseModel):
    """Signal (issue 11): a payment of this subscription was opened at a provider outside the workflow's
    activities (the hosted page, for a top-up invoice): ask the provider about it within `check_in` unless
    the workflow already asks sooner."""

    check_in: timedelta


class ReconcilePayments(BaseModel):
    subscription_id: str


class PaymentsReconciled(BaseModel):
    """What the provider says about the subscription's open payments: outcomes to record exactly as if their
    signals had come (the webhook that never arrived), and when to ask again (None: nothing left open)."""

    completed: list[PaymentCompleted] = []
    declined: list[PaymentDeclined] = []
    next_check_in: timedelta | None = None


SubscriptionInput.model_rebuild()
