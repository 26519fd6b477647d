from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Strict, StringConstraints

from api.problems import invalid
from api.wire import Id, Name, Text, Timestamp, UtcDatetime, WireModel
from db.models import BillableMetric

Aggregation = Literal["SUM", "COUNT", "AVG", "MIN", "MAX", "UNIQUE_COUNT", "LATEST"]
# COUNT counts events; every other aggregation reads a value out of each event.
NEEDS_VALUE = frozenset({"SUM", "AVG", "MIN", "MAX", "LATEST", "UNIQUE_COUNT"})


def _jsonpath(value: str) -> str:
    if not value.startswith("$"):
        raise ValueError(f"must be a JSONPath starting with '$' (e.g. '$.tokens'), got {value!r}")
    return value


JsonPath = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=1000), AfterValidator(_jsonpath)
]
Dimension = Annotated[str, StringConstraints(min_length=1, max_length=255)]
GroupBy = dict[Dimension, JsonPath]


def check_value_property(aggregation: str, value_property: str | None) -> None:
    if value_property is None and aggregation in NEEDS_VALUE:
        raise invalid(
            "valueProperty",
            f"is required when aggregation is {aggregation}: give the JSONPath of the value to aggregate "
            "(e.g. '$.tokens')",
            code="required",
        )


class BillableMetricCreate(WireModel):
    merchant_id: Id
    product_id: Id
    name: Name
    description: Text
    unit: Name
    aggregation: Aggregation
    event_type: Name | None = None
    value_property: JsonPath | None = None
    group_by: GroupBy | None = None
    event_from: UtcDatetime | None = None
    item_id: Id | None = None


class BillableMetricUpdate(WireModel):
    name: Name | None = None
    description: Text | None = None
    unit: Name | None = None
    event_type: Name | None = None
    value_property: JsonPath | None = None
    group_by: GroupBy | None = None
    event_from: UtcDatetime | None = None
    item_id: Id | None = None
    # Declared only so that a body carrying it can be refused rather than silently ignored.
    aggregation: Any = None


# PATCH fields whose explicit null clears the stored value.
CLEARABLE = frozenset({"event_type", "value_property", "group_by", "event_from", "item_id"})


class BillableMetricOut(WireModel):
    id: str
    object: Literal["billableMetric"] = "billableMetric"
    merchant_id: str
    product_id: str
    item_id: str | None = None
    name: str
    description: str
    unit: str
    aggregation: str
    event_type: str | None
    value_property: str | None
    group_by: dict[str, str] | None
    event_from: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: BillableMetric) -> BillableMetricOut:
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            product_id=row.product_id,
            name=row.name,
            description=row.description,
            unit=row.unit,
            aggregation=row.aggregation,
            event_type=row.event_type,
            value_property=row.value_property,
            group_by=row.group_by,
            event_from=row.event_from,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
