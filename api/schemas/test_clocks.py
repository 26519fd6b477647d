from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Strict, StringConstraints

from api.wire import Id, Name, Text, Timestamp, UtcDatetime, WireModel
from db.models import TestClock


class TestClockCreate(WireModel):
    current_time: UtcDatetime | None = None
    name: Name | None = None
    description: Text | None = None
    merchant_id: Id | None = None


class TestClockAdvance(WireModel):
    """Exactly one of the two (the contract's oneOf); the router says which is missing or extra."""

    current_time: UtcDatetime | None = None
    advance_by: Annotated[str, Strict(), StringConstraints(max_length=64)] | None = None


class TestClockOut(WireModel):
    id: str
    merchant_id: str
    name: str | None
    description: str | None
    current_time: Timestamp
    deleted_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    # Extension: "advancing" while the clock's workflow drives its bound subscriptions to currentTime.
    advance_status: Literal["ready", "advancing"]

    @classmethod
    def of(cls, row: TestClock) -> TestClockOut:
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            name=row.name,
            description=row.description,
            current_time=row.current_time,
            deleted_at=row.deleted_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            advance_status="advancing" if row.advancing_to is not None else "ready",
        )
