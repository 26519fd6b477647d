"""v0 entitlements (`/v0/entitlements`, Legacy billing): the create body, the Entitlement and the
ActiveEntitlement representations (behavior §7.1). `remainingBalance` is atomic nanodollars as a string."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, Strict

from api.wire import Id, MoneyStr, Timestamp, WireModel
from db.models import Entitlement

MAX_QUANTITY = Decimal(10**15)
MAX_DATA = 100
MAX_USES = 1000


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


# A JSON number (the SDK sends one); at most nine decimal places (nanodollar precision).
Quantity = Annotated[
    Decimal,
    Field(ge=0, le=MAX_QUANTITY, decimal_places=9, allow_inf_nan=False),
    PlainSerializer(_number, return_type=float),
]


class EntitlementDatumIn(WireModel):
    billable_metric_id: Id
    quantity: Quantity = Field(description="Units of the metric to pre-authorize payment for (≥ 0).")
    price: MoneyStr | None = Field(
        default=None,
        description="Per-unit price override (decimal string, ≥ 0); without it the plan's price prices "
        "`quantity` units as one record (a dynamic price at its maxPrice).",
    )


class EntitlementCreate(WireModel):
    customer_id: Id
    merchant_id: Id
    entitlement_data: list[EntitlementDatumIn] = Field(min_length=1, max_length=MAX_DATA)
    max_uses: Annotated[int, Strict(), Field(ge=1, le=MAX_USES)] = 1


class EntitlementBillableMetricOut(WireModel):
    billable_metric_id: str
    quantity: int | float
    price: str


class EntitlementOut(WireModel):
    id: str
    object: Literal["entitlement"] = "entitlement"
    billable_metrics: list[EntitlementBillableMetricOut]
    customer_id: str
    merchant_id: str
    created_at: Timestamp
    expires_at: Timestamp
    region: str
    max_uses: int
    remaining_balance: str
    used_count: int
    # Extensions (docs/api-extensions.md): where the reservation stands and what it belongs to.
    status: str
    subscription_id: str
    plan_id: str
    product_id: str
    currency: str
    reserved_amount: str
    released_at: Timestamp | None

    @classmethod
    def of(cls, row: Entitlement) -> EntitlementOut:
        return cls(
            id=row.id,
            billable_metrics=[_metric(m) for m in row.billable_metrics],
            customer_id=row.customer_id,
            merchant_id=row.merchant_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
            region=row.region,
            max_uses=row.max_uses,
            remaining_balance=str(row.remaining_balance),
            used_count=row.used_count,
            status=row.status,
            subscription_id=row.subscription_id,
            plan_id=row.plan_id,
            product_id=row.product_id,
            currency=row.currency,
            reserved_amount=str(row.reserved_amount),
            released_at=row.released_at,
        )


def _metric(stored: dict[str, Any]) -> EntitlementBillableMetricOut:
    return EntitlementBillableMetricOut(
        billable_metric_id=str(stored["billableMetricId"]),
        quantity=_number(Decimal(str(stored["quantity"]))),
        price=str(stored["price"]),
    )


class ActiveEntitlementOut(WireModel):
    id: str
    object: Literal["entitlement"] = "entitlement"
    billable_metrics: list[str]
    customer_id: str
    plan_id: str
    product_id: str
    subscription_id: str
    verified_at: Timestamp
    # Extensions: what is left of it.
    expires_at: Timestamp
    remaining_balance: str
    used_count: int
    max_uses: int

    @classmethod
    def of(cls, row: Entitlement, verified_at: datetime) -> ActiveEntitlementOut:
        return cls(
            id=row.id,
            billable_metrics=[str(m["billableMetricId"]) for m in row.billable_metrics],
            customer_id=row.customer_id,
            plan_id=row.plan_id,
            product_id=row.product_id,
            subscription_id=row.subscription_id,
            verified_at=verified_at,
            expires_at=row.expires_at,
            remaining_balance=str(row.remaining_balance),
            used_count=row.used_count,
            max_uses=row.max_uses,
        )


class ActivePagination(WireModel):
    offset: int
    limit: int
    total: int
    has_more: bool


class ActiveEntitlementList(WireModel):
    object: Literal["list"] = "list"
    data: list[ActiveEntitlementOut]
    pagination: ActivePagination
