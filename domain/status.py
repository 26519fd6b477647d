"""Status machines: one transition table per resource, asked by the activities that write a status and by
the API that reads one. Nothing else spells out which statuses allow what.

An illegal transition is an `IllegalTransition`, never a silent overwrite: a workflow that asks for one has a
bug or a race, and retrying it cannot help (activities turn it into a non-retryable ApplicationError of that
type).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

InvoiceStatus = Literal[
    "ACTIVE",  # the period is open: usage and manual lines accrue
    "CLOSING",  # the period ended; late usage is still accepted until gracePeriodEnd
    "CLOSED",  # the grace window passed: nothing more lands on it
    "CALCULATING",  # lines, tax and totals are being written
    "DRAFT",  # calculated, awaiting approval (auto-approved invoices pass straight on)
    "ISSUED",  # payable
    "PAYMENT_FAILED",  # a charge or checkout failed; still payable
    "PAID",
    "CANCELLED",
    "WRITTEN_OFF",
    "FAILED",  # the calculation failed in a way no retry fixes (metadata.failure says why)
]
SubscriptionStatus = Literal["pending_payment", "active", "terminated"]
PaymentSessionStatus = Literal["open", "declined", "completed", "expired", "cancelled"]
PaymentStatus = Literal["pending", "processing", "completed", "expired", "cancelled"]
InstallationStatus = Literal["pending", "active", "error", "disconnected"]
SourceEventStatus = Literal["pending", "processed", "failed", "rejected"]

INVOICE_STATUSES: tuple[InvoiceStatus, ...] = get_args(InvoiceStatus)
SUBSCRIPTION_STATUSES: tuple[SubscriptionStatus, ...] = get_args(SubscriptionStatus)


class IllegalTransition(ValueError):
    """A status change the resource's table does not allow."""

    def __init__(self, machine: Machine, current: str, wanted: str) -> None:
        allowed = ", ".join(sorted(machine.transitions.get(current, ()))) or "none (it is final)"
        super().__init__(
            f"{machine.resource} cannot go from {current} to {wanted}; allowed from {current}: {allowed}"
        )
        self.resource, self.current, self.wanted = machine.resource, current, wanted


@dataclass(frozen=True)
class Machine:
    resource: str
    transitions: Mapping[str, frozenset[str]]

    def may(self, current: str, wanted: str) -> bool:
        return wanted in self.transitions.get(current, frozenset())

    def check(self, current: str, wanted: str) -> None:
        if not self.may(current, wanted):
            raise IllegalTransition(self, current, wanted)


INVOICE = Machine(
    "invoice",
    {
        "ACTIVE": frozenset({"CLOSING"}),
        "CLOSING": frozenset({"CLOSED"}),
        "CLOSED": frozenset({"CALCULATING"}),
        # A zero-total Invoice 0 is paid as soon as it is calculated (nothing to approve or collect).
        "CALCULATING": frozenset({"DRAFT", "PAID", "FAILED"}),
        "DRAFT": frozenset({"ISSUED", "CANCELLED"}),
        "ISSUED": frozenset({"PAID", "PAYMENT_FAILED", "CANCELLED", "WRITTEN_OFF"}),
        "PAYMENT_FAILED": frozenset({"PAID", "CANCELLED", "WRITTEN_OFF"}),
        "PAID": frozenset(),
        "CANCELLED": frozenset(),
        "WRITTEN_OFF": frozenset(),
        # An operator who fixed the cause sends it back through the calculation.
        "FAILED": frozenset({"CALCULATING", "CANCELLED"}),
    },
)

SUBSCRIPTION = Machine(
    "subscription",
    {
        "pending_payment": frozenset({"active", "terminated"}),
        "active": frozenset({"terminated"}),
        "terminated": frozenset(),
    },
)

# A declined attempt leaves the checkout payable until it expires, as a card checkout does.
PAYMENT_SESSION = Machine(
    "payment session",
    {
        "open": frozenset({"declined", "completed", "expired", "cancelled"}),
        "declined": frozenset({"declined", "completed", "expired", "cancelled"}),
        "completed": frozenset(),
        "expired": frozenset(),
        "cancelled": frozenset(),
    },
)

# A one-off payment (POST /v0/payments, behavior §12.2): `processing` while the provider confirms a submitted
# payment (a declined attempt goes back to `pending`, payable until it expires); `cancelled` is reserved (no
# operation cancels a payment yet).
PAYMENT = Machine(
    "payment",
    {
        "pending": frozenset({"processing", "completed", "expired", "cancelled"}),
        "processing": frozenset({"pending", "completed", "expired", "cancelled"}),
        "completed": frozenset(),
        "expired": frozenset(),
        "cancelled": frozenset(),
    },
)

# A source installation (D15): `pending` until its workflow validated the key; `error` when Stripe refused
# it (at connect, or revoked later); the customer may still disconnect one in error.
INSTALLATION = Machine(
    "source installation",
    {
        "pending": frozenset({"active", "error", "disconnected"}),
        "active": frozenset({"error", "disconnected"}),
        "error": frozenset({"disconnected"}),
        "disconnected": frozenset(),
    },
)

# A source event (D16): reviewed once. `failed` is an approval whose usage could not be recorded.
SOURCE_EVENT = Machine(
    "source event",
    {
        "pending": frozenset({"processed", "failed", "rejected"}),
        "processed": frozenset(),
        "failed": frozenset(),
        "rejected": frozenset(),
    },
)

# Named for the questions the activities and the API ask (tests/domain/test_status.py checks each against
# the machines above).

# The period's usage and manual lines may still change the invoice: its totals are computed live.
INVOICE_LIVE: frozenset[InvoiceStatus] = frozenset({"ACTIVE", "CLOSING", "CLOSED"})
# Manual lines may still attach (D11: ACTIVE or CLOSING only).
INVOICE_OPEN_FOR_LINES: frozenset[InvoiceStatus] = frozenset({"ACTIVE", "CLOSING"})
# The period ended and the invoice waits for its finalize: the subscription's workflow still owes it work.
INVOICE_AWAITING_FINALIZE: frozenset[InvoiceStatus] = frozenset({"CLOSING", "CLOSED", "CALCULATING"})
# Calculated, or given up on (FAILED): a repeated finalize leaves it as it is.
INVOICE_FINALIZED: frozenset[InvoiceStatus] = (
    frozenset(INVOICE_STATUSES) - INVOICE_AWAITING_FINALIZE - {"ACTIVE"}
)
# The payer owes it.
INVOICE_PAYABLE: frozenset[InvoiceStatus] = frozenset({"ISSUED", "PAYMENT_FAILED"})
PAYMENT_SESSION_PAYABLE: frozenset[PaymentSessionStatus] = frozenset({"open", "declined"})
# A one-off payment the payer can still pay (and whose workflow still holds the expiry timer).
PAYMENT_OPEN: frozenset[PaymentStatus] = frozenset({"pending", "processing"})
# The installation's workflow polls the customer's Stripe.
INSTALLATION_POLLING: frozenset[InstallationStatus] = frozenset({"pending", "active"})
