from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import PlainSerializer

from api.wire import Id, Name, Text, Timestamp, WireModel
from db.models import Fee, Price


class FeeCreate(WireModel):
    merchant_id: Id
    product_id: Id
    name: Name
    description: Text
    item_id: Id | None = None


class FeeUpdate(WireModel):
    name: Name | None = None
    description: Text | None = None
    item_id: Id | None = None


class FeeOut(WireModel):
    id: str
    object: Literal["fee"] = "fee"
    merchant_id: str
    product_id: str
    item_id: str | None = None
    name: str
    description: str
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: Fee) -> FeeOut:
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            product_id=row.product_id,
            name=row.name,
            description=row.description,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


# ---- GET /v0/fees/{id}/price/{subscriptionId} ------------------------------------------------------------


# A JSON number (FeePrice.taxRate is `number`): a tax percent such as 10 or 8.875, not money.
def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


PercentNumber = Annotated[Decimal, PlainSerializer(_number)]


class FeePriceProperties(WireModel):
    unit_price: str


class FeePriceOut(WireModel):
    """The price a fee has on one subscription's plan, with the tax percent that applies to its lines."""

    id: str
    fee_id: str
    model: Literal["standard"] = "standard"
    payment_term: str
    invoice_display_name: str
    properties: FeePriceProperties
    billing_cadence: str | None = None
    tax_rate: PercentNumber | None = None

    @classmethod
    def of(cls, price: Price, tax_rate: Decimal) -> FeePriceOut:
        props: dict[str, Any] = price.properties or {}
        return cls(
            id=price.id,
            fee_id=price.fee_id or "",
            payment_term=price.payment_term,
            invoice_display_name=price.invoice_display_name,
            properties=FeePriceProperties(unit_price=str(props.get("unitPrice", "0"))),
            billing_cadence=price.billing_cadence,
            tax_rate=tax_rate,
        )
