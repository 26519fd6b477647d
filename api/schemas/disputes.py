"""Wire shapes of /v0/disputes: create, the merchant's resolution (extension), Dispute and
DisputeWithCustomer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Strict, StringConstraints

from api.schemas.invoices import exact
from api.wire import Id, Timestamp, WireModel
from db.models import Dispute, Organization

MESSAGE_MIN, MESSAGE_MAX = 10, 1000

CustomerMessage = Annotated[
    str,
    Strict(),
    StringConstraints(strip_whitespace=True, min_length=MESSAGE_MIN, max_length=MESSAGE_MAX),
]
MerchantMessage = Annotated[
    str, Strict(), StringConstraints(strip_whitespace=True, min_length=1, max_length=MESSAGE_MAX)
]
DisputeStatus = Literal["pending", "accepted", "declined"]


class DisputeCreate(WireModel):
    usage_event_id: Id
    message: CustomerMessage


class DisputeResolve(WireModel):
    """PATCH /v0/disputes/{id} (extension): the merchant accepts (the usage event is refunded) or declines."""

    status: Literal["accepted", "declined"]
    message: MerchantMessage | None = None


class DisputeOut(WireModel):
    id: str
    object: Literal["dispute"] = "dispute"
    usage_event_id: str
    customer_id: str
    merchant_id: str
    customer_message: str
    merchant_message: str | None
    status: str
    disputed_amount: str
    resolved_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def fields_of(cls, row: Dispute, currency: str) -> dict[str, Any]:
        return {
            "id": row.id,
            "usage_event_id": row.usage_event_id,
            "customer_id": row.customer_id,
            "merchant_id": row.merchant_id,
            "customer_message": row.customer_message,
            "merchant_message": row.merchant_message,
            "status": row.status,
            "disputed_amount": exact(row.disputed_amount, currency),
            "resolved_at": row.resolved_at,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }

    @classmethod
    def of(cls, row: Dispute, currency: str) -> DisputeOut:
        return cls.model_validate(cls.fields_of(row, currency))


class DisputeCustomerOut(WireModel):
    id: str
    email: str
    name: str


class DisputeWithCustomerOut(DisputeOut):
    customer: DisputeCustomerOut

    @classmethod
    def with_customer(cls, row: Dispute, currency: str, consumer: Organization) -> DisputeWithCustomerOut:
        customer = DisputeCustomerOut(id=row.customer_id, email=consumer.email or "", name=consumer.name)
        return cls.model_validate(cls.fields_of(row, currency) | {"customer": customer})
