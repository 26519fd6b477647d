from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Strict, StringConstraints

from api.wire import Id, Timestamp, UtcDatetime, WireModel, iso
from db.events import StoredEvent

MAX_BATCH = 1000

EventType = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]
Source = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=2048)]
Subject = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]
IdempotencyKey = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]


class IngestEvent(WireModel):
    type: EventType = Field(description="Must equal the eventType of one of your billable metrics.")
    source: Source
    subject: Subject | None = Field(
        default=None, description="Required: the customer's id or externalId, stored as given."
    )
    # paygentic-sdk 0.6.3 may send the customer's externalId here instead of `subject`.
    external_subject: Subject | None = None
    data: dict[str, Any]
    namespace: Id | None = None
    timestamp: UtcDatetime | None = None
    idempotency_key: IdempotencyKey | None = None


class EventResponse(WireModel):
    id: str
    object: Literal["event"] = "event"
    type: str
    source: str
    subject: str
    namespace: str
    timestamp: Timestamp
    idempotency_key: str

    @staticmethod
    def wire(event: StoredEvent, namespace: str) -> dict[str, str]:
        """The JSON body, built without a model instance: this answers every ingested event."""
        return {
            "id": event.id,
            "object": "event",
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "namespace": namespace,
            "timestamp": iso(event.timestamp),
            "idempotencyKey": event.idempotency_key,
        }


class BatchIngest(WireModel):
    events: list[IngestEvent] = Field(
        description=f"1 to {MAX_BATCH} events, each shaped like POST /v0/events."
    )


class BatchEnvelope(WireModel):
    """A batch with some malformed event: its events are then validated one by one, each with its result."""

    events: list[Any]


class BatchItemResult(WireModel):
    index: int
    status: int = Field(
        description="202 stored (or already stored under its idempotencyKey), else 400/403/422."
    )
    id: str | None = None
    idempotency_key: str | None = None
    error: dict[str, Any] | None = Field(default=None, description="The error envelope of a rejected event.")


class BatchIngestResponse(WireModel):
    object: Literal["list"] = "list"
    data: list[BatchItemResult]
    accepted: int
    rejected: int
