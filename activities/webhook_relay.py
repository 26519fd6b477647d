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
from sqlalchemy import func, select, text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from db.session import session_factory
from domain.webhook_events import EVENT_TYPES
from workflows.client import wake_webhook_endpoints
from workflows.webhook_messages import EndpointRef
from workflows.webhook_relay import RelayRun, RelayRunResult, WebhookRelayActivityDefs

CHANNEL = "accrue_outbox"  # NOTIFYed by the outbox insert trigger at commit (migration 0004)

RELAY_LOCK = 0x61636372_75650008  # pg_advisory_xact_lock key: "accrue" + issue 8, any fixed bigint will do

# One statement relays a batch (after the lock): claim the oldest unrelayed rows, mark them relayed, insert
# one message each (the D18 envelope, built here so no row travels to Python and back) and one delivery per
# (message, live endpoint of its merchant and environment that takes its type), numbered in outbox order.
# A delivery is pending only while the merchant's webhooks are enabled and the endpoint is not disabled;
# otherwise skipped, for recover to send later. `filter_types` may hold JSON null as well as SQL NULL (an
# ORM write of None), both meaning every type. The eventId is the message id's under the `evt_` prefix:
# unique per event, and the same however often a row is relayed. Answers the number of rows relayed and
# the endpoints that got pending deliveries (one row each; one row with no endpoint when none did).
_RELAY = text(
    """
    with claimed as (
        select o.id, o.seq, o.merchant_id, o.environment, o.event_type, o.payload, o.created_at,
               coalesce(catalog.resource, split_part(o.event_type, '.', 1)) || ':'
                   || coalesce(o.payload ->> 'id', o.id) as resource_key
        from outbox_events o
        left join unnest(cast(:types as text[]), cast(:resources as text[])) as catalog(type, resource)
          on catalog.type = o.event_type
        where o.relayed_at is null
        order by o.seq
        limit :limit
        for update of o skip locked
    ),
    marked as (
        update outbox_events o set relayed_at = now() from claimed c where o.id = c.id
    ),
    messages as (
        insert into webhook_messages
            (id, merchant_id, environment, event_type, event_id, resource_key, payload, created_at)
        select c.id, c.merchant_id, c.environment, c.event_type, 'evt_' || substr(c.id, 5), c.resource_key,
               jsonb_build_object(
                   'eventType', c.event_type,
                   'eventId', 'evt_' || substr(c.id, 5),
                   'timestamp', to_char(c.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                   'data', c.payload
               ),
               c.created_at
        from claimed c
        order by c.seq
        on conflict (id) do nothing
    ),
    added as (
        insert into webhook_deliveries
            (message_id, endpoint_id, resource_key, status, attempts, round_attempts, next_attempt_at,
             created_at, updated_at)
        select c.id, e.id, c.resource_key,
               case when coalesce(a.enabled, false) and not e.disabled then 'pending' else 'skipped' end,
               0, 0, null, now(), now()
        from claimed c
        join webhook_endpoints e
          on e.merchant_id = c.merchant_id and e.environment = c.environment and e.deleted_at is null
         and (e.filter_types is null or jsonb_typeof(e.filter_types) = 'null'
              or e.filter_types @> to_jsonb(c.event_type::text))
        left join webhook_apps a on a.merchant_id = c.merchant_id and a.environment = c.environment
        order by c.seq, e.id
        on conflict (message_id, endpoint_id) do nothing
        returning endpoint_id, status
    )
    select relayed.n, woken.id, woken.merchant_id, woken.environment
    from (select count(*) as n from claimed) as relayed
    left join (
        select distinct e.id, e.merchant_id, e.environment
        from added join webhook_endpoints e on e.id = added.endpoint_id
        where added.status = 'pending'
    ) as woken on true
    order by woken.id
    """
)
_CATALOG = {"types": list(EVENT_TYPES), "resources": [t.resource for t in EVENT_TYPES.values()]}


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
        rows = (await session.execute(_RELAY, {**_CATALOG, "limit": limit})).all()
        await session.commit()
    return int(rows[0].n), _refs([r for r in rows if r.id is not None])


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
            listener.add_termination_listener(lambda *_: heard.set())
            deadline = time.monotonic() + request.listen_seconds
            woken = await self.wake_backlog()
            relayed, wakes = await self.drain()
            woken += wakes
            while (left := deadline - time.monotonic()) > 0:
                if listener.is_closed():
                    # PostgreSQL dropped the connection: a retry listens again (the poll alone is slower).
                    raise RuntimeError("the relay's LISTEN connection closed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(heard.wait(), timeout=min(left, request.poll_seconds))
                # Cleared before draining: a commit landing mid-drain sets it again and is drained next.
                heard.clear()
                more, wakes = await self.drain()
                relayed, woken = relayed + more, woken + wakes
            return RelayRunResult(relayed=relayed, woken=woken)
        finally:
            await listener.close()
