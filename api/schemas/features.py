from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Strict, StringConstraints

from api.wire import Id, Name, Timestamp, WireModel
from db.models import Feature

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"must be a slug of lowercase letters and digits separated by single hyphens "
            f"(e.g. 'api-access'), got {value!r}"
        )
    return value


Key = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255), AfterValidator(_slug)]
FeatureType = Literal["boolean", "static", "metered"]


class FeatureCreate(WireModel):
    merchant_id: Id
    product_id: Id
    key: Key
    name: Name
    type: FeatureType = "boolean"
    metadata: dict[str, str] | None = None


class FeatureUpdate(WireModel):
    key: Key | None = None
    name: Name | None = None
    type: FeatureType | None = None
    metadata: dict[str, str] | None = None


class FeatureOut(WireModel):
    id: str
    object: Literal["feature"] = "feature"
    merchant_id: str
    product_id: str
    key: str
    name: str
    type: str
    metadata: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: Feature) -> FeatureOut:
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            product_id=row.product_id,
            key=row.key,
            name=row.name,
            type=row.type,
            metadata=row.metadata_ or {},
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
