"""Webhooks on the wire: SDK 0.6.3's `Webhooks` and `WebhookPortal`, and the extensions (D2) with Svix's
names: endpoints, their secret, messages, attempts, resend and recover, the event type catalog."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, StringConstraints

from api.wire import Id, Timestamp, UtcDatetime, WireModel
from db.models import WebhookApp, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage
from domain.webhook_events import EVENT_TYPES, EventType
from domain.webhook_urls import MAX_URL_LENGTH

MAX_DESCRIPTION = 1024
# Messages per second; Svix's own ceiling is far below what one receiver takes, this only stops nonsense.
MAX_RATE_LIMIT = 10_000
MAX_FILTER_TYPES = 100


def _known_types(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("must list at least one event type; omit it (or send null) to receive every type")
    unknown = [t for t in dict.fromkeys(value) if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(
            f"unknown event type(s) {', '.join(unknown)}; GET /v0/webhooks/eventTypes lists the known ones"
        )
    return list(dict.fromkeys(value))  # duplicates once, in the order given


# Length and scheme only: which URLs an environment allows is domain/webhook_urls.py's, in the router.
Url = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=MAX_URL_LENGTH)]
Description = Annotated[str, Strict(), StringConstraints(max_length=MAX_DESCRIPTION)]
EventTypeName = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=128)]
FilterTypes = Annotated[list[EventTypeName], Field(max_length=MAX_FILTER_TYPES), AfterValidator(_known_types)]
RateLimit = Annotated[int, Strict(), Field(ge=1, le=MAX_RATE_LIMIT)]
DeliveryStatus = Literal["pending", "delivered", "failed", "skipped"]


# ---- 0.6.3 -----------------------------------------------------------------------------------------------


class WebhooksOut(WireModel):
    object: Literal["webhooks"] = "webhooks"
    application_id: str
    merchant_id: str
    enabled: bool
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: WebhookApp) -> WebhooksOut:
        return cls(
            application_id=row.id,
            merchant_id=row.merchant_id,
            enabled=row.enabled,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class WebhooksUpdate(WireModel):
    enabled: Annotated[bool, Strict()]


class WebhookPortalOut(WireModel):
    object: Literal["webhookPortal"] = "webhookPortal"
    url: str
    expires_at: Timestamp


# ---- endpoints -------------------------------------------------------------------------------------------


class EndpointCreate(WireModel):
    url: Url
    description: Description = ""
    filter_types: FilterTypes | None = Field(
        default=None, description="Event types to receive; omitted or null: every type."
    )
    disabled: Annotated[bool, Strict()] = False
    rate_limit: RateLimit | None = Field(
        default=None, description="At most this many messages per second; omitted or null: no limit."
    )


class EndpointUpdate(WireModel):
    """Fields given change; filterTypes and rateLimit may be null (every type, no limit)."""

    url: Url | None = None
    description: Description | None = None
    filter_types: FilterTypes | None = None
    disabled: Annotated[bool, Strict()] | None = None
    rate_limit: RateLimit | None = None


class EndpointOut(WireModel):
    object: Literal["webhookEndpoint"] = "webhookEndpoint"
    id: str
    url: str
    description: str
    filter_types: list[str] | None
    disabled: bool
    # manual: disabled through the API or the portal; failing: every attempt failed for 5 days.
    disabled_reason: Literal["manual", "failing"] | None
    rate_limit: int | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: WebhookEndpoint) -> EndpointOut:
        return cls(
            id=row.id,
            url=row.url,
            description=row.description,
            filter_types=row.filter_types,
            disabled=row.disabled,
            disabled_reason=row.disabled_reason,
            rate_limit=row.rate_limit,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class SecretOut(WireModel):
    key: str  # whsec_…


# ---- messages and attempts -------------------------------------------------------------------------------


class DeliveryOut(WireModel):
    """Where one message stands for one endpoint."""

    object: Literal["webhookDelivery"] = "webhookDelivery"
    message_id: str
    endpoint_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: Timestamp | None  # pending only; null and pending: due now
    updated_at: Timestamp

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryOut:
        return cls(
            message_id=row.message_id,
            endpoint_id=row.endpoint_id,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            updated_at=row.updated_at,
        )


class MessageOut(WireModel):
    object: Literal["webhookMessage"] = "webhookMessage"
    id: str  # msg_…, the svix-id
    event_type: str
    event_id: str
    payload: dict[str, Any]  # the body sent: {eventType, eventId, timestamp, data}
    created_at: Timestamp
    deliveries: list[DeliveryOut]

    @classmethod
    def of(cls, row: WebhookMessage, deliveries: list[WebhookDelivery]) -> MessageOut:
        return cls(
            id=row.id,
            event_type=row.event_type,
            event_id=row.event_id,
            payload=row.payload,
            created_at=row.created_at,
            deliveries=[DeliveryOut.of(d) for d in deliveries],
        )


class AttemptOut(WireModel):
    object: Literal["webhookAttempt"] = "webhookAttempt"
    id: str
    message_id: str
    endpoint_id: str
    attempt: int  # 1, 2, … per message and endpoint, across resends
    trigger: Literal["scheduled", "manual"]
    succeeded: bool
    response_status_code: int | None  # null: no HTTP response (timeout, refused, address not allowed)
    response: str  # the first KiB of the body, or the error
    response_duration_ms: int
    created_at: Timestamp
    next_attempt_at: Timestamp | None  # when the schedule tries again; null: delivered or exhausted

    @classmethod
    def of(cls, row: WebhookAttempt) -> AttemptOut:
        return cls(
            id=row.id,
            message_id=row.message_id,
            endpoint_id=row.endpoint_id,
            attempt=row.attempt,
            trigger=row.trigger,
            succeeded=row.succeeded,
            response_status_code=row.status_code,
            response=row.response,
            response_duration_ms=row.duration_ms,
            created_at=row.created_at,
            next_attempt_at=row.next_attempt_at,
        )


class ResendIn(WireModel):
    endpoint_id: Id


class RecoverIn(WireModel):
    since: UtcDatetime
    until: UtcDatetime | None = Field(default=None, description="Exclusive; omitted: now.")


class RecoverOut(WireModel):
    object: Literal["webhookRecovery"] = "webhookRecovery"
    endpoint_id: str
    since: Timestamp
    until: Timestamp
    recovered: int  # failed or skipped deliveries now pending again


# ---- event types -----------------------------------------------------------------------------------------


class EventTypeOut(WireModel):
    object: Literal["webhookEventType"] = "webhookEventType"
    name: str
    resource: str
    description: str
    example: dict[str, Any]  # one realistic `data`

    @classmethod
    def of(cls, event_type: EventType) -> EventTypeOut:
        return cls(
            name=event_type.name,
            resource=event_type.resource,
            description=event_type.description,
            example=event_type.example,
        )
