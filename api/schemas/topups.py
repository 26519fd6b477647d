"""Wire shapes of wallet top-ups (`/v0/customers/{id}/topups`, an extension: docs/api-extensions.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Strict, StringConstraints

from api.schemas.subscriptions import RedirectUrls
from api.wire import Id, MoneyStr, Timestamp, WireModel
from db.models import Invoice, PaymentSession
from domain.money import format_money

Currency = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Za-z]{3}$")]


class TopupCreate(WireModel):
    amount: MoneyStr
    currency: Currency | None = None
    subscription_id: Id | None = None
    redirect_urls: RedirectUrls | None = None


class TopupOut(WireModel):
    """A top-up is its invoice: `id` is the top-up invoice's id."""

    object: Literal["walletTopup"] = "walletTopup"
    id: str
    customer_id: str
    subscription_id: str
    invoice_id: str
    amount: str
    currency: str
    # The payment session's, as the checkout shows it: open | declined (still payable) | completed |
    # expired | cancelled. `completed` means the wallet was credited.
    status: str
    payment_session_id: str
    checkout_url: str
    expires_at: Timestamp
    completed_at: Timestamp | None
    created_at: Timestamp

    @classmethod
    def of(
        cls, invoice: Invoice, payment: PaymentSession, status: str, base_url: str, created_at: datetime
    ) -> TopupOut:
        return cls(
            id=invoice.id,
            customer_id=invoice.customer_id,
            subscription_id=invoice.subscription_id,
            invoice_id=invoice.id,
            amount=format_money(invoice.grand_total, invoice.currency),
            currency=invoice.currency,
            status=status,
            payment_session_id=payment.id,
            checkout_url=f"{base_url}/checkout/{payment.id}",
            expires_at=payment.expires_at,
            completed_at=payment.completed_at if status == "completed" else None,
            created_at=created_at,
        )
