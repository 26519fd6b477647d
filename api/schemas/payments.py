from __future__ import annotations

from typing import Literal

from api.wire import Timestamp, WireModel
from db.models import PaymentSession
from domain.money import format_money


class PaymentSessionOut(WireModel):
    """A sandbox-provider checkout (extension): open, declined, completed, expired or cancelled."""

    object: Literal["paymentSession"] = "paymentSession"
    id: str
    status: str
    invoice_id: str
    subscription_id: str
    amount: str
    currency: str
    expires_at: Timestamp

    @classmethod
    def of(cls, row: PaymentSession, status: str) -> PaymentSessionOut:
        return cls(
            id=row.id,
            status=status,
            invoice_id=row.invoice_id,
            subscription_id=row.subscription_id,
            amount=format_money(row.amount, row.currency),
            currency=row.currency,
            expires_at=row.expires_at,
        )
