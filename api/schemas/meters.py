from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from api.wire import Pagination, Timestamp, WireModel
from db.models import MeterEvent

WindowSize = Literal["MINUTE", "HOUR", "DAY", "MONTH"]


def number(value: Decimal) -> int | float:
    """A JSON number for the wire: exact integers stay integers; the contract types these as number."""
    return int(value) if value == value.to_integral_value() else float(value)


class WindowedValue(WireModel):
    window_start: Timestamp
    window_end: Timestamp
    value: int | float


class GroupedValue(WireModel):
    group_by: dict[str, str]
    value: int | float


class UsageResponse(WireModel):
    object: Literal["meter"] = "meter"
    billable_metric_id: str
    total_value: int | float
    windowed_values: list[WindowedValue] | None = None
    grouped_values: list[GroupedValue] | None = None


class MeterEventOut(WireModel):
    id: str
    object: Literal["meterEvent"] = "meterEvent"
    type: str
    source: str
    subject: str
    time: Timestamp
    idempotency_key: str
    data: dict[str, Any]

    @classmethod
    def of(cls, row: MeterEvent) -> MeterEventOut:
        return cls(
            id=row.id,
            type=row.type,
            source=row.source,
            subject=row.subject,
            time=row.timestamp,
            idempotency_key=row.idempotency_key,
            data=row.data,
        )


class MeterEventList(WireModel):
    object: Literal["list"] = "list"
    billable_metric_id: str
    events: list[MeterEventOut]
    pagination: Pagination


def window(start: datetime, end: datetime, value: Decimal) -> WindowedValue:
    return WindowedValue(window_start=start, window_end=end, value=number(value))
