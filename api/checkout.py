"""A checkout as the payer sees it: the payment session with its invoice and subscription, and the status
those give it. Shared by the hosted checkout pages and the portal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Invoice, Organization, PaymentSession, Subscription, TestClock
from domain.ids import has_prefix
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


async def load_checkout(session: AsyncSession, payment_session_id: str) -> Checkout | None:
    """The checkout of a payment session id (None: no such session), read with its subscription's time."""
    if not has_prefix(payment_session_id, "payment_session"):
        return None
    payment = await session.get(PaymentSession, payment_session_id)
    if payment is None:
        return None
    invoice = await session.get_one(Invoice, payment.invoice_id)
    subscription = await session.get_one(Subscription, payment.subscription_id)
    merchant = await session.get_one(Organization, payment.merchant_id)
    now = datetime.now(UTC)
    if subscription.test_clock_id is not None:
        clock = await session.get(TestClock, subscription.test_clock_id)
        if clock is not None:
            now = clock.current_time
    return Checkout(payment, invoice, subscription, merchant.name, now)
