"""The outbox: webhook events recorded in the same transaction as the state change they report.

The payload is a snapshot of the changed resource's identifying fields and new state; the webhook delivery
(a later issue) renders the full API representation into the D18 envelope when it sends.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import OutboxEvent
from domain.ids import new_id

EVENT_TYPES = frozenset(
    {
        "subscription.created.v0",
        "subscription.updated.v0",
        "subscription.cancelled.v0",
        "invoice.issued.v0",
        "invoice.paid.v0",
        "invoice.cancelled.v0",
    }
)


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
