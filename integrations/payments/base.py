"""The payment-provider seam (D14): every payment Accrue collects goes through one `PaymentProvider`.

Invoice 0, period invoices (`paymentUrl`), wallet top-ups and one-off payments (`/v0/payments`) all ask the
provider chosen for their merchant and environment (`provider_for`) for a payment; the payer pays on a page
Accrue hosts (`/checkout/<our id>`: the sandbox's buttons, or card entry with Stripe.js); the outcome reaches
the *owning workflow* as one signal, `PaymentCompleted` or `PaymentDeclined`, whether it came from the page,
the provider's webhook or the owner's own timer (`retrieve`). The owner records it, idempotently.

Conventions every implementation keeps:
- Amounts are `Decimal` in major units of `currency` (an ISO code, upper case) everywhere on this seam;
  minor units exist only inside the Stripe implementation (domain.money.to_minor_units).
- `our_id` is Accrue's id of the thing being paid (a payment session `ps_…` of an invoice, or a one-off
  payment `pay_…`). Provider calls that create something carry the idempotency key `<our id>:<step>`
  (`ps_x:create`, `ps_x:confirm:<tok_…>`, `pay_x:charge:<n>`), so a retried activity creates nothing twice.
- The provider's object names its owner (`PaymentOwner`) so its webhook can be routed without a lookup:
  Stripe PaymentIntents carry it in their metadata (`accrue_owner_kind`, `accrue_owner_id`, `accrue_id`,
  `accrue_invoice_id`, `accrue_merchant_id`, `accrue_environment`; see `owner_of`). Owner kinds today:
  `subscription` (signal `subscription-<id>`: invoice payments, top-ups) and `payment` (`payment-<id>`, the
  one-off payment workflow).
- Errors: `ProviderUnavailable` (retry later: network, 429, 5xx), `ProviderRejected` (the request itself is
  wrong: a retry fails the same way), `PaymentDeclinedError` (the payer's card was declined: a fact, not a
  fault). Nothing here logs or echoes a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

ProviderName = Literal["sandbox", "stripe"]
OwnerKind = Literal["subscription", "payment"]

# PaymentIntent metadata keys that name the owner (kept short: Stripe allows 40-character keys).
META_OWNER_KIND = "accrue_owner_kind"
META_OWNER_ID = "accrue_owner_id"
META_OUR_ID = "accrue_id"
META_INVOICE_ID = "accrue_invoice_id"
META_MERCHANT_ID = "accrue_merchant_id"
META_ENVIRONMENT = "accrue_environment"


class PaymentStatus(StrEnum):
    """Where a provider's payment stands, the same words for every provider."""

    REQUIRES_PAYMENT = "requires_payment"  # open: the payer has not paid (or may try again after a decline)
    REQUIRES_ACTION = "requires_action"  # the payer must authenticate (3-D Secure) on the page
    PROCESSING = "processing"  # submitted; the provider reports the outcome later
    SUCCEEDED = "succeeded"  # paid: the owner records PaymentCompleted
    FAILED = "failed"  # the last attempt was declined (`failure` says why); still payable until it expires
    CANCELED = "canceled"  # cancelled at the provider: nothing can be paid any more

    @property
    def final(self) -> bool:
        return self in (PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED)


@dataclass(frozen=True)
class PaymentOwner:
    """The workflow that owns the payment and receives its outcome signal."""

    kind: OwnerKind
    id: str  # sub_… (workflow subscription-<id>) or pay_… (workflow payment-<id>)


@dataclass(frozen=True)
class PaymentRequest:
    """Create a payment the payer completes on Accrue's hosted page."""

    our_id: str  # ps_… or pay_…: the idempotency key prefix and the hosted page's id
    merchant_id: str
    environment: str  # "sandbox" | "live"
    amount: Decimal  # major units, > 0
    currency: str  # ISO code, upper case
    owner: PaymentOwner
    description: str
    page_url: str  # Accrue's hosted page for it (`<base>/checkout/<our id>`); what the payer opens
    invoice_id: str | None = None
    customer_id: str | None = None  # Accrue's cus_…
    customer_email: str | None = None
    customer_name: str | None = None
    # The provider's customer for `customer_id`, when Accrue already has one (db: provider_customers);
    # None makes the provider create one when it needs one (save_payment_method), returned in the result.
    provider_customer: str | None = None
    save_payment_method: bool = False  # keep the card for off-session charges (autoCharge)
    success_url: str | None = None  # where the page sends the payer after paying (redirectUrls.onSuccess …)
    failure_url: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # extra provider metadata (string map)


@dataclass(frozen=True)
class CreatedPayment:
    provider: ProviderName
    reference: str  # the provider's id (Stripe: pi_…; sandbox: our_id), stored with our row
    payment_url: str  # the URL the payer opens (Accrue's hosted page for both providers)
    status: PaymentStatus = PaymentStatus.REQUIRES_PAYMENT
    provider_customer: str | None = None  # created or used for the payment; the caller stores it


@dataclass(frozen=True)
class PaymentState:
    """What `retrieve` (and a confirm or an off-session charge) found."""

    reference: str
    status: PaymentStatus
    amount: Decimal | None = None  # major units
    currency: str | None = None
    owner: PaymentOwner | None = None
    our_id: str | None = None
    invoice_id: str | None = None
    failure_code: str | None = None  # e.g. card_declined, when status is FAILED
    failure_message: str | None = None
    payment_method: str | None = None  # the provider's saved method (Stripe pm_…/card_…) after success
    provider_customer: str | None = None
    client_secret: str | None = None  # Stripe: for Stripe.js on the hosted page only; never logged or stored
    environment: str | None = None  # the Accrue environment it was created for (metadata)


@dataclass(frozen=True)
class OffSessionCharge:
    """Charge a saved payment method without the payer (autoCharge, dunning retries)."""

    our_id: str  # e.g. the invoice's payment session; with `attempt`, the idempotency key
    attempt: int  # 1, 2, …: each retry is a new charge (`<our id>:charge:<attempt>`)
    merchant_id: str
    environment: str
    amount: Decimal
    currency: str
    owner: PaymentOwner
    description: str
    provider_customer: str  # Stripe cus_…
    payment_method: str  # Stripe pm_…/card_…
    invoice_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class ProviderError(Exception):
    """Base of the provider's errors; str() is safe to show and log (never a key or a client secret)."""


class ProviderUnavailable(ProviderError):
    """Network trouble, rate limiting or a provider outage: retry later."""


class ProviderRejected(ProviderError):
    """The provider refused the request (bad parameters, unknown object, wrong key): a retry fails too."""


class PaymentDeclinedError(ProviderError):
    """The card was declined while confirming or charging; `state` is the payment afterwards."""

    def __init__(self, message: str, state: PaymentState | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.state = state
        self.code = code


@runtime_checkable
class PaymentProvider(Protocol):
    """One implementation per provider (sandbox.py, stripe.py), chosen by `provider_for`."""

    name: ProviderName

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment:
        """A payment for `request.amount`; idempotent by `request.our_id` (`<our id>:create`)."""
        ...

    async def retrieve(self, reference: str) -> PaymentState:
        """Where the payment stands now (the owner's timer reconcile; the page after confirming)."""
        ...

    async def confirm_with_card_token(self, reference: str, token: str, attempt: str) -> PaymentState:
        """Confirm with a card the payer entered on the hosted page (a Stripe.js token): SUCCEEDED,
        REQUIRES_ACTION (the page authenticates with the client secret), or PaymentDeclinedError.
        `attempt` names the payer's try, unique per try (the page passes the token's id: a token is
        single-use), for the idempotency keys `<our id>:card|method|confirm:<attempt>`."""
        ...

    async def charge_off_session(self, request: OffSessionCharge) -> PaymentState:
        """Charge a saved method now: SUCCEEDED, PROCESSING, or PaymentDeclinedError (a state FAILED)."""
        ...


def owner_metadata(request: PaymentRequest | OffSessionCharge) -> dict[str, str]:
    """The metadata that routes a provider object's webhook back to its owner."""
    meta = {
        **request.metadata,
        META_OWNER_KIND: request.owner.kind,
        META_OWNER_ID: request.owner.id,
        META_OUR_ID: request.our_id,
        META_MERCHANT_ID: request.merchant_id,
        META_ENVIRONMENT: request.environment,
    }
    if request.invoice_id:
        meta[META_INVOICE_ID] = request.invoice_id
    return meta


def owner_of(metadata: dict[str, str] | None) -> PaymentOwner | None:
    """The owner named by a provider object's metadata; None for objects Accrue did not create."""
    metadata = metadata or {}
    kind, owner_id = metadata.get(META_OWNER_KIND), metadata.get(META_OWNER_ID)
    if kind not in ("subscription", "payment") or not owner_id:
        return None
    return PaymentOwner(kind=kind, id=owner_id)  # type: ignore[arg-type]
