"""The webhook relay: outbox rows → messages and deliveries → a wake for each endpoint that got work.

`relay_pending` is one pass over at most `limit` unrelayed outbox rows, in one transaction: messages and
deliveries commit together with the rows' `relayed_at`, so each outbox row becomes exactly one message
however passes crash or race. Passes take a transaction-level advisory lock: two passes side by side would
each take a slice of the backlog and could commit a later slice first, numbering its deliveries (the
per-endpoint delivery order) ahead of earlier changes to the same resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.types import String
from temporalio import activity
from temporalio.client import Client

from api.wire import iso
from db.models import OutboxEvent, WebhookMessage
from db.session import session_factory
from domain.ids import new_id
from domain.webhook_events import resource_of
from workflows.client import wake_webhook_endpoints
from workflows.webhook_messages import EndpointRef
from workflows.webhook_relay import RelayRun, RelayRunResult, WebhookRelayActivityDefs

CHANNEL = "accrue_outbox"  # NOTIFYed by the outbox insert trigger at commit (migration 0004)

RELAY_LOCK = 0x61636372_75650008  # pg_advisory_xact_lock key: "accrue" + issue 8, any fixed bigint will do

# One row per (new message, live endpoint of its merchant and environment that takes its type), numbered in
# the messages' outbox order. Pending only while the merchant's webhooks are enabled and the endpoint is not
# disabled; otherwise skipped, for recover to send later. `filter_types` may hold JSON null as well as SQL
# NULL (an ORM write of None), both meaning every type. Answers the endpoints that got pending deliveries.
_DELIVER = text(
    """
    with added as (
        insert into webhook_deliveries
            (message_id, endpoint_id, resource_key, status, attempts, round_attempts, next_attempt_at,
             created_at, updated_at)
        select m.id, e.id, m.resource_key,
               case when coalesce(a.enabled, false) and not e.disabled then 'pending' else 'skipped' end,
               0, 0, null, now(), now()
        from unnest(:ids) with ordinality as batch(id, ord)
        join webhook_messages m on m.id = batch.id
        join webhook_endpoints e
          on e.merchant_id = m.merchant_id and e.environment = m.environment and e.deleted_at is null
         and (e.filter_types is null or jsonb_typeof(e.filter_types) = 'null'
              or e.filter_types @> to_jsonb(m.event_type::text))
        left join webhook_apps a on a.merchant_id = m.merchant_id and a.environment = m.environment
        order by batch.ord, e.id
        on conflict (message_id, endpoint_id) do nothing
        returning endpoint_id, status
    )
    select distinct e.id, e.merchant_id, e.environment
    from added join webhook_endpoints e on e.id = added.endpoint_id
    where added.status = 'pending'
    order by e.id
    """
).bindparams(bindparam("ids", type_=ARRAY(String)))


def envelope(event: OutboxEvent, event_id: str) -> dict[str, Any]:
    """The D18 envelope; `data` is the outbox payload, already the resource's API representation."""
    return {
        "eventType": event.event_type,
        "eventId": event_id,
        "timestamp": iso(event.created_at),
        "data": event.payload,
    }


def resource_key(event_type: str, data: dict[str, Any], message_id: str) -> str:
    """`<resource>:<data.id>`; data without an id (a failed signup) is ordered after nothing but itself."""
    return f"{resource_of(event_type)}:{data.get('id') or message_id}"


def _message(event: OutboxEvent) -> dict[str, Any]:
    event_id = new_id("event")
    return {
        "id": event.id,
        "merchant_id": event.merchant_id,
        "environment": event.environment,
        "event_type": event.event_type,
        "event_id": event_id,
        "resource_key": resource_key(event.event_type, event.payload, event.id),
        "payload": envelope(event, event_id),
        # The event's time, as in the envelope: recover's "since" window counts from when it happened.
        "created_at": event.created_at,
    }


async def relay_pending(sessions: async_sessionmaker[AsyncSession], limit: int = 500) -> list[EndpointRef]:
    """Relay up to `limit` outbox rows in `seq` order; returns the endpoints that got pending deliveries
    (each once), which the caller wakes."""
    return (await relay_batch(sessions, limit))[1]


async def relay_batch(
    sessions: async_sessionmaker[AsyncSession], limit: int = 500
) -> tuple[int, list[EndpointRef]]:
    """relay_pending, also answering how many rows it relayed."""
    async with sessions() as session:
        await session.execute(select(func.pg_advisory_xact_lock(RELAY_LOCK)))
        events = (
            await session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.relayed_at.is_(None))
                .order_by(OutboxEvent.seq)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not events:
            return 0, []
        ids = [e.id for e in events]
        await session.execute(
            insert(WebhookMessage).values([_message(e) for e in events]).on_conflict_do_nothing()
        )
        rows = (await session.execute(_DELIVER, {"ids": ids})).all()
        await session.execute(
            update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(relayed_at=func.now())
        )
        await session.commit()
    return len(events), _refs(rows)


# Endpoints whose workflow may have work it was never told about: a relay pass whose wake was lost to a
# crash after its commit. Disabled ones are left alone; their re-enable wakes them.
_PENDING_ENDPOINTS = text(
    """
    select e.id, e.merchant_id, e.environment
    from webhook_endpoints e
    where e.deleted_at is null and not e.disabled
      and exists (select from webhook_deliveries d where d.endpoint_id = e.id and d.status = 'pending')
    order by e.id
    """
)


def _refs(rows: Sequence[Row[Any]]) -> list[EndpointRef]:
    return [EndpointRef(endpoint_id=r.id, merchant_id=r.merchant_id, environment=r.environment) for r in rows]


class WebhookRelayActivities(WebhookRelayActivityDefs):
    """The long-running relay: LISTEN on the outbox channel and relay whatever commits, waking endpoints."""

    def __init__(
        self, engine: AsyncEngine, client: Client, task_queue: str, batch: int = 500, channel: str = CHANNEL
    ) -> None:
        self.sessions = session_factory(engine)
        # LISTEN needs a connection of its own for the activity's whole span, outside the pool.
        self.dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.client = client
        self.task_queue = task_queue
        self.batch = batch
        self.channel = channel

    async def drain(self) -> tuple[int, int]:
        """Relay until the outbox is empty, waking each batch's endpoints before the next batch so the first
        messages go out while the rest are relayed. Returns (rows relayed, wakes sent)."""
        relayed = woken = 0
        while True:
            count, endpoints = await relay_batch(self.sessions, self.batch)
            relayed += count
            if endpoints:
                await wake_webhook_endpoints(self.client, self.task_queue, endpoints, "relayed")
                woken += len(endpoints)
            # A short batch emptied the outbox as of its snapshot; later commits have notified.
            if count < self.batch:
                return relayed, woken

    async def wake_backlog(self) -> int:
        async with self.sessions() as session:
            endpoints = _refs((await session.execute(_PENDING_ENDPOINTS)).all())
        if endpoints:
            await wake_webhook_endpoints(self.client, self.task_queue, endpoints, "relay started")
        return len(endpoints)

    @activity.defn
    async def relay_outbox(self, request: RelayRun) -> RelayRunResult:
        """Listen for `request.listen_seconds`. At the start it relays what a crash or a gap left behind and
        wakes every endpoint with pending deliveries; then on every notification, and every `poll_seconds`
        in case one was missed, it drains the outbox."""
        heard = asyncio.Event()
        listener = await asyncpg.connect(self.dsn)
        try:
            await listener.add_listener(self.channel, lambda *_: heard.set())
            deadline = time.monotonic() + request.listen_seconds
            woken = await self.wake_backlog()
            relayed, wakes = await self.drain()
            woken += wakes
            while (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(heard.wait(), timeout=min(left, request.poll_seconds))
                # Cleared before draining: a commit landing mid-drain sets it again and is drained next.
                heard.clear()
                more, wakes = await self.drain()
                relayed, woken = relayed + more, woken + wakes
            return RelayRunResult(relayed=relayed, woken=woken)
        finally:
            await listener.close()
