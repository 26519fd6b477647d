"""The outbox: webhook events recorded in the same transaction as the state change they report.

The payload is the changed resource's API representation as the transaction leaves it
(activities/rendering.py); the relay (activities/webhook_relay.py) wraps it in the D18 envelope as a webhook
message.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import OutboxEvent
from domain import webhook_events
from domain.ids import new_id

EVENT_TYPES = frozenset(webhook_events.EVENT_TYPES)


def record(
    session: AsyncSession, merchant_id: str, environment: str, event_type: str, payload: dict[str, Any]
) -> OutboxEvent:
    """Add an outbox row to `session`; it commits (or rolls back) with the state change."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    event = OutboxEvent(
        id=new_id("outbox_event"),
        merchant_id=merchant_id,
        environment=environment,
        event_type=event_type,
        payload=payload,
    )
    session.add(event)
    return event
