from __future__ import annotations

from typing import Literal

from api.wire import Id, Name, Text, Timestamp, WireModel
from db.models import Fee


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
