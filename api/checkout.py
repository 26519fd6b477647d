"""A checkout as the payer sees it: the payment session with its invoice and subscription, and the status
those give it. Shared by the hosted checkout pages and the portal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from db.models import Invoice, PaymentSession, Subscription
from domain.status import INVOICE_PAYABLE, PAYMENT_SESSION_PAYABLE

# A declined attempt leaves the checkout payable until it expires, as a card checkout does.
PAYABLE: frozenset[str] = PAYMENT_SESSION_PAYABLE


@dataclass
class Checkout:
    payment: PaymentSession
    invoice: Invoice
    subscription: Subscription
    merchant_name: str
    now: datetime  # the subscription's time: its test clock's reading when bound to one

    @property
    def live(self) -> bool:
        return self.payment.environment != "sandbox"

    @property
    def status(self) -> str:
        """The session's status as the payer sees it: past its expiry it is expired even before the
        workflow has got round to recording that, and an invoice settled or voided elsewhere ends it."""
        status = self.payment.status
        if status in PAYABLE:
            if self.invoice.status == "PAID":
                return "completed"
            if self.invoice.status not in INVOICE_PAYABLE:
                return "cancelled"
            if self.payment.expires_at <= self.now:
                return "expired"
        return status
