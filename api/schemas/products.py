from __future__ import annotations

from typing import Any, Literal

from api.wire import Id, Name, Text, Timestamp, WireModel
from db.models import Product


class ProductCreate(WireModel):
    merchant_id: Id
    name: Name
    description: Text
    metadata: dict[str, str] | None = None


class ProductUpdate(WireModel):
    name: Name | None = None
    description: Text | None = None


class ProductOut(WireModel):
    id: str
    object: Literal["product"] = "product"
    merchant_id: str
    name: str
    description: str
    metadata: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: Product) -> ProductOut:
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            name=row.name,
            description=row.description,
            metadata=row.metadata_ or {},
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
