"""PaymentWorkflow's messages and its activity declarations (one pydantic model per message)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from temporalio import activity

WORKFLOW_VERSION = 1
OUTCOMES_PER_RUN = 200  # provider outcomes handled per run, then continue as new (design rule 5)
RECONCILE_EVERY_SECONDS = 15 * 60  # a provider with webhooks (Stripe) is also asked on this timer

Outcome = Literal["processing", "completed", "declined"]


class PaymentState(BaseModel):
    """What the workflow knows of its payment (loaded once; carried across continue-as-new)."""

    payment_id: str
    merchant_id: str
    environment: str
    customer_id: str | None = None
    expires_at: datetime
    status: str  # pending, processing, completed, expired, cancelled (the row's, as last seen)
    provider: str = "sandbox"
    workflow_version: int = WORKFLOW_VERSION


class PaymentInput(BaseModel):
    payment_id: str
    state: PaymentState | None = None  # None: loaded from the database by the first run
    outcomes: list[PaymentOutcome] = []  # received but not yet recorded when the last run continued as new


class PaymentOutcome(BaseModel):
    """A fact from the payment provider (signal `outcome`): the sandbox page's buttons, the Stripe webhook,
    or the workflow's own reconcile with the provider. Duplicates are harmless: the activity records each
    change once, under the row lock."""

    payment_id: str
    outcome: Outcome
    provider_reference: str | None = None  # e.g. the Stripe PaymentIntent id
    source: str = "sandbox"  # sandbox page, stripe webhook, reconcile … (for the history and logs)


class LoadPayment(BaseModel):
    payment_id: str


class RecordOutcome(BaseModel):
    payment_id: str
    outcome: Outcome
    at: datetime  # workflow time: completedAt / declinedAt
    provider_reference: str | None = None


class ExpirePayment(BaseModel):
    """Expire the payment if it is still open and `at` ≥ its expiresAt."""

    payment_id: str
    at: datetime


class CheckProvider(BaseModel):
    payment_id: str


class Recorded(BaseModel):
    status: str  # the row's status afterwards
    changed: bool = False  # this call changed the row (and wrote its webhook, if the change has one)


class ProviderCheck(BaseModel):
    outcome: Outcome | None = None  # what the provider says happened, None when nothing new


PaymentInput.model_rebuild()


class PaymentActivityDefs:
    """Declared here, implemented by activities.payment.PaymentActivities (names are the methods')."""

    @activity.defn
    async def load_payment(self, request: LoadPayment) -> PaymentState:
        raise NotImplementedError

    @activity.defn
    async def record_payment_outcome(self, request: RecordOutcome) -> Recorded:
        raise NotImplementedError

    @activity.defn
    async def expire_payment(self, request: ExpirePayment) -> Recorded:
        raise NotImplementedError

    @activity.defn
    async def check_payment_provider(self, request: CheckProvider) -> ProviderCheck:
        raise NotImplementedError
