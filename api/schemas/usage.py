"""Usage events (`/v0/usage`, Legacy billing): the request bodies and the UsageEvent representation.

Money in `billing` is atomic nanodollar integers (behavior §1.5); a property's `price` is a decimal string.
The representation is built as a plain dict (`wire`): it answers every ingested event, and a model instance
per response costs more than the rest of the request's Python.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, Strict, StringConstraints

from api.wire import Id, MoneyStr, Timestamp, UtcDatetime, WireModel, iso
from domain.money import to_nanos_rounded

MAX_BATCH = 1000
MAX_PROPERTIES = 100
MAX_QUANTITY = 10**15

IdempotencyKey = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]
MetadataValue = Annotated[str, Strict(), StringConstraints(max_length=1000)]
Quantity = Annotated[int, Strict(), Field(ge=1, le=MAX_QUANTITY)]


class UsagePropertyIn(WireModel):
    billable_metric_id: Id
    quantity: Quantity = Field(description="A positive whole number of the metric's units.")
    price: MoneyStr | None = Field(
        default=None,
        description="The unit price of a dynamic price, within its [minPrice, maxPrice] (decimal string). "
        "Only dynamic prices take one.",
    )


class CreateUsageEvent(WireModel):
    customer_id: Id
    idempotency_key: IdempotencyKey
    merchant_id: Id
    properties: list[UsagePropertyIn] = Field(min_length=1, max_length=MAX_PROPERTIES)
    timestamp: UtcDatetime
    entitlement_id: Id | None = None
    metadata: dict[str, MetadataValue] | None = Field(default=None, max_length=50)


class BatchCreateUsageEvents(WireModel):
    events: list[CreateUsageEvent] = Field(description=f"1 to {MAX_BATCH} usage events.")


class RefundUsageEvent(WireModel):
    refunded: Literal[True] = True
    reason: Annotated[str, Strict(), StringConstraints(max_length=1000)] | None = None


# ---- the representation -------------------------------------------------------------------------------


class UsagePropertyOut(WireModel):
    billable_metric_id: str
    quantity: int
    price: str | None = None


class BillingOut(WireModel):
    billing_event_id: str | None
    currency: str | None
    invoice_id: str | None
    price: int | None
    total_tax: int | None
    total_amount: int | None


class RefundOut(WireModel):
    reason: str | None
    refunded_at: Timestamp | None


class UsageEventOut(WireModel):
    id: str
    object: Literal["usageEvent"] = "usageEvent"
    created_at: Timestamp
    customer_id: str
    merchant_id: str
    properties: list[UsagePropertyOut]
    subscription_id: str
    timestamp: Timestamp
    billing: BillingOut | None
    consumer_id: str | None
    description: str | None
    entitlement_id: str | None
    idempotency_key: str | None
    metadata: dict[str, str] | None
    refund: RefundOut | None


class FailedOut(WireModel):
    index: int
    idempotency_key: str
    error: str


class SummaryOut(WireModel):
    total: int
    successful: int
    failed: int


class BatchUsageEventsOut(WireModel):
    object: Literal["batchUsageEvents"] = "batchUsageEvents"
    successful: list[UsageEventOut]
    failed: list[FailedOut]
    summary: SummaryOut


class UsageRow(Protocol):
    """What the representation reads: a db.models.UsageEvent, or the group-commit writer's stored row."""

    id: str
    created_at: datetime
    customer_id: str
    merchant_id: str
    consumer_id: str
    subscription_id: str
    entitlement_id: str | None
    idempotency_key: str
    timestamp: datetime
    properties: list[dict[str, Any]]
    description: str | None
    currency: str
    price: Decimal
    total_tax: Decimal
    total_amount: Decimal
    transaction_id: str | None
    invoice_id: str | None
    refunded_at: datetime | None
    refund_reason: str | None

    @property
    def metadata_(self) -> dict[str, Any] | None: ...


def wire_properties(properties: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in properties:
        item: dict[str, Any] = {"billableMetricId": p["billableMetricId"], "quantity": p["quantity"]}
        if p.get("price") is not None:
            item["price"] = p["price"]
        out.append(item)
    return out


def wire(row: UsageRow) -> dict[str, Any]:
    """The UsageEvent JSON of a stored usage event."""
    refund = (
        {"reason": row.refund_reason, "refundedAt": iso(row.refunded_at)}
        if row.refunded_at is not None
        else None
    )
    price = to_nanos_rounded(row.price)
    tax = to_nanos_rounded(row.total_tax) if row.total_tax else 0
    total = (
        price if not row.total_tax and row.total_amount == row.price else to_nanos_rounded(row.total_amount)
    )
    return {
        "id": row.id,
        "object": "usageEvent",
        "createdAt": iso(row.created_at),
        "customerId": row.customer_id,
        "merchantId": row.merchant_id,
        "properties": wire_properties(row.properties),
        "subscriptionId": row.subscription_id,
        "timestamp": iso(row.timestamp),
        "billing": {
            "billingEventId": row.transaction_id,
            "currency": row.currency,
            "invoiceId": row.invoice_id,
            "price": price,
            "totalTax": tax,
            "totalAmount": total,
        },
        "consumerId": row.consumer_id,
        "description": row.description,
        "entitlementId": row.entitlement_id,
        "idempotencyKey": row.idempotency_key,
        "metadata": row.metadata_,
        "refund": refund,
    }
