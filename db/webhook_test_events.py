"""Test events from the webhook portal: a message that no outbox row stands behind, addressed to one
endpoint. It goes in the merchant's message log like any other, so its attempts show and it can be resent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import WebhookDelivery, WebhookEndpoint, WebhookMessage
from db.webhooks import Owner, get_endpoint


async def add_test_message(
    session: AsyncSession,
    owner: Owner,
    endpoint_id: str,
    *,
    message_id: str,
    event_id: str,
    event_type: str,
    payload: dict[str, Any],
    created_at: datetime,
) -> WebhookEndpoint:
    """The message and its one delivery, pending and due now; commits, then the caller wakes the endpoint
    it returns. Raises db.webhooks.NotFound for an endpoint that is not the owner's (or was deleted).

    Its ordering key is the message itself, not the example's resource: a test event never waits behind
    another, and no real message about a resource waits behind it."""
    endpoint = await get_endpoint(session, owner, endpoint_id, lock=True)
    session.add(
        WebhookMessage(
            id=message_id,
            merchant_id=owner.merchant_id,
            environment=owner.environment,
            event_type=event_type,
            event_id=event_id,
            resource_key=f"test:{message_id}",
            payload=payload,
            created_at=created_at,
        )
    )
    await session.flush()
    session.add(
        WebhookDelivery(
            message_id=message_id,
            endpoint_id=endpoint.id,
            resource_key=f"test:{message_id}",
            status="pending",
            attempts=0,
            round_attempts=0,
            next_attempt_at=None,
        )
    )
    await session.commit()
    await session.refresh(endpoint)
    return endpoint
