"""Wire shapes of /v0/payments (one-off payments, behavior §12.2): CreatePaymentRequest and Payment.

No FastAPI here: activities/payment.py renders webhook payloads (payment.completed.v0, payment.expired.v0)
with PaymentOut, so a payload says exactly what GET /v0/payments/{id} says.

Limits beyond the contract's (docs/decisions.md, "One-off payments"): a line item's amount is its unit
amount with at most two decimals (0.00–5,000.00), its quantity 1–10,000, and Σ amount × quantity must equal
the payment's amount; metadata holds at most 50 keys of ≤ 40 characters with values of ≤ 500.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, StrictBool, StringConstraints

from api.wire import Id, Timestamp, WireModel
from db.models import Payment
from domain.money import format_money

MIN_AMOUNT, MAX_AMOUNT = Decimal("1.00"), Decimal("5000.00")
MAX_LINE_ITEMS = 100
MAX_QUANTITY = 10_000
CURRENCIES = ("USD", "EUR", "GBP", "AUD")
DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN = "P30D", "P31D"

_AMOUNT_RE = re.compile(r"\d+(\.\d{1,2})?")


def _amount_text(value: str) -> Decimal:
    # fullmatch: `$` would let a trailing newline through; the length cap keeps Decimal small.
    if len(value) > 16 or _AMOUNT_RE.fullmatch(value) is None:
        raise ValueError(f'{value!r} is not an amount like "10.50" (digits, at most two decimals)')
    return Decimal(value)


def _payment_amount(value: str) -> str:
    amount = _amount_text(value)
    if not MIN_AMOUNT <= amount <= MAX_AMOUNT:
        raise ValueError(f"{value!r} is out of range: a payment is between 1.00 and 5000.00")
    return value


def _line_amount(value: str) -> str:
    if _amount_text(value) > MAX_AMOUNT:
        raise ValueError(f"{value!r} is out of range: a line item's amount is at most 5000.00")
    return value


PaymentAmount = Annotated[str, Strict(), AfterValidator(_payment_amount)]
LineAmount = Annotated[str, Strict(), AfterValidator(_line_amount)]
Currency = Literal["USD", "EUR", "GBP", "AUD"]
Key = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]
Reference = Annotated[str, Strict(), StringConstraints(max_length=255)]
Description = Annotated[str, Strict(), StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
MetadataKey = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=40)]
MetadataValue = Annotated[str, Strict(), StringConstraints(max_length=500)]
Url = Annotated[str, Strict(), StringConstraints(pattern=r"^https?://\S+$", max_length=2000)]
Duration = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)]
Quantity = Annotated[int, Strict(), Field(ge=1, le=MAX_QUANTITY)]
PaymentStatus = Literal["pending", "processing", "completed", "expired", "cancelled"]


class PaymentLineItemIn(WireModel):
    description: Description
    amount: LineAmount = Field(description="The unit amount (decimal string, at most two decimals).")
    quantity: Quantity = 1


class PaymentCreate(WireModel):
    amount: PaymentAmount = Field(description="1.00 to 5000.00, at most two decimals (e.g. '10.50').")
    currency: Currency
    merchant_id: Id | None = None
    customer_id: Id | None = None
    idempotency_key: Key | None = None
    reference: Reference | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=50)
    line_items: list[PaymentLineItemIn] | None = Field(default=None, max_length=MAX_LINE_ITEMS)
    success_redirect_url: Url | None = None
    failure_redirect_url: Url | None = None
    save_payment_method: StrictBool = False
    expires_in: Duration | None = Field(
        default=None, description="ISO-8601 duration, default P30D, at most P31D (e.g. 'PT1H', 'P7D')."
    )

    def line_total(self) -> Decimal:
        """Σ amount × quantity of the line items (the router checks it equals the amount)."""
        return sum((Decimal(i.amount) * i.quantity for i in self.line_items or ()), Decimal(0))


class PaymentLineItemOut(WireModel):
    description: str
    amount: str
    quantity: int


class PaymentOut(WireModel):
    id: str
    object: Literal["payment"] = "payment"
    amount: str
    currency: str
    status: str
    payment_url: str | None
    customer_id: str | None
    idempotency_key: str | None
    reference: str | None
    metadata: dict[str, str] | None
    line_items: list[PaymentLineItemOut] | None
    expires_at: Timestamp
    created_at: Timestamp

    @classmethod
    def of(cls, row: Payment) -> PaymentOut:
        lines: Any = row.line_items
        return cls(
            id=row.id,
            amount=format_money(row.amount, row.currency),
            currency=row.currency,
            status=row.status,
            payment_url=row.payment_url,
            customer_id=row.customer_id,
            idempotency_key=row.idempotency_key,
            reference=row.reference,
            metadata=row.payment_metadata,
            line_items=[PaymentLineItemOut.model_validate(i) for i in lines] if lines is not None else None,
            expires_at=row.expires_at,
            created_at=row.created_at,
        )
