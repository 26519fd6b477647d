"""The meter event store: inserts deduplicated per (merchant, environment, idempotencyKey), a group-commit
writer that turns many concurrent single-event requests into one INSERT, and the event types each merchant
has configured.

The statements go to asyncpg directly (through a pooled SQLAlchemy connection): ingestion is the hottest
path in Accrue and the ORM's per-row bookkeeping would cost more than the insert itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("accrue.events")


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    merchant_id: str
    environment: str
    type: str
    source: str
    subject: str
    data: dict[str, Any]
    timestamp: datetime
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The stored row an ingestion resolved to: the new one, or the original holding the same key."""

    id: str
    type: str
    source: str
    subject: str
    timestamp: datetime
    idempotency_key: str
    created: bool


class EventStoreError(Exception):
    """The store could not take the events; nothing of the failed statement was written."""


# One statement for any number of rows: asyncpg ships the columns as binary arrays, which costs about what
# COPY costs, and ON CONFLICT keeps the dedupe inside the same atomic statement.
_INSERT = """
INSERT INTO meter_events
    (id, merchant_id, environment, type, source, subject, data, timestamp, idempotency_key)
SELECT u.id, u.merchant_id, u.environment, u.type, u.source, u.subject, u.data::jsonb, u.ts, u.key
FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::varchar[])
     AS u(id, merchant_id, environment, type, source, subject, data, ts, key)
ON CONFLICT (merchant_id, environment, idempotency_key) DO NOTHING
RETURNING id
"""

_EXISTING = """
SELECT e.id, e.merchant_id, e.environment, e.type, e.source, e.subject, e.timestamp, e.idempotency_key
FROM meter_events e
JOIN unnest($1::varchar[], $2::varchar[], $3::varchar[]) AS u(merchant_id, environment, key)
  ON e.merchant_id = u.merchant_id AND e.environment = u.environment AND e.idempotency_key = u.key
"""

Key = tuple[str, str, str]


def _key(event: NewEvent) -> Key:
    return (event.merchant_id, event.environment, event.idempotency_key)


async def insert_events(conn: Any, events: Sequence[NewEvent]) -> list[StoredEvent]:
    """Store `events` in one atomic statement on the asyncpg connection `conn`, each key once.

    Returns one StoredEvent per input, in order. An event whose key is already stored, or repeated
    earlier in `events`, resolves to the first stored event with that key (`created=False`).
    Run outside an explicit transaction, the INSERT commits when it returns.
    """
    first: dict[Key, NewEvent] = {}
    for event in events:
        first.setdefault(_key(event), event)
    unique = list(first.values())
    inserted_ids = {
        row[0]
        for row in await conn.fetch(
            _INSERT,
            [e.id for e in unique],
            [e.merchant_id for e in unique],
            [e.environment for e in unique],
            [e.type for e in unique],
            [e.source for e in unique],
            [e.subject for e in unique],
            [json.dumps(e.data, separators=(",", ":")) for e in unique],
            [e.timestamp for e in unique],
            [e.idempotency_key for e in unique],
        )
    }
    resolved: dict[Key, StoredEvent] = {}
    for e in unique:
        if e.id in inserted_ids:
            resolved[_key(e)] = StoredEvent(
                e.id, e.type, e.source, e.subject, e.timestamp, e.idempotency_key, True
            )
    missing = [e for e in unique if e.id not in inserted_ids]
    if missing:
        rows = await conn.fetch(
            _EXISTING,
            [e.merchant_id for e in missing],
            [e.environment for e in missing],
            [e.idempotency_key for e in missing],
        )
        for r in rows:
            resolved[(r["merchant_id"], r["environment"], r["idempotency_key"])] = StoredEvent(
                r["id"], r["type"], r["source"], r["subject"], r["timestamp"], r["idempotency_key"], False
            )
    out: list[StoredEvent] = []
    for event in events:
        stored = resolved.get(_key(event))
        if stored is None:  # the conflicting row vanished: events are never deleted, so this is a bug
            raise EventStoreError(
                f"event with idempotencyKey {event.idempotency_key!r} was neither stored nor found"
            )
        if stored.id != event.id and stored.created:  # a repeat of a key first seen in this same call
            stored = replace(stored, created=False)
        out.append(stored)
    return out


async def store_events(engine: AsyncEngine, events: Sequence[NewEvent]) -> list[StoredEvent]:
    """insert_events on a pooled connection; a database failure becomes EventStoreError."""
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            # No SQLAlchemy statement runs on `conn`, so it never opens a transaction and the INSERT
            # autocommits: once it returns the rows are durable.
            return await insert_events(raw.driver_connection, events)
    except EventStoreError:
        raise
    except Exception as exc:
        log.exception("storing %d meter events failed", len(events))
        raise EventStoreError(str(exc) or type(exc).__name__) from exc


class _Lane:
    """A connection the writer keeps checked out: a flush then costs one round trip, not a pool checkout."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: Any = None

    async def insert(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        try:
            if self._conn is None:
                self._conn = await self._engine.connect()
                self._driver = (await self._conn.get_raw_connection()).driver_connection
            return await insert_events(self._driver, events)
        except Exception as exc:
            log.exception("storing %d meter events failed", len(events))
            await self.close(broken=True)
            raise EventStoreError(str(exc) or type(exc).__name__) from exc

    async def close(self, broken: bool = False) -> None:
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:
            if broken:
                await conn.invalidate()
            await conn.close()


class GroupCommitWriter:
    """Collects events from concurrent requests and stores them together.

    A background task hands everything pending to the next free lane (a held connection), lingering up
    to `linger` seconds first so that requests arriving meanwhile join; each flush is one INSERT of up
    to `max_batch` events. While every lane is busy, arrivals accumulate into the next batch, so the
    batch size follows the load. A request's future resolves only after its batch's INSERT has
    committed: a 202 still means "durably stored" while a commit is shared by the whole batch.
    """

    def __init__(
        self, engine: AsyncEngine, *, linger: float = 0.001, max_batch: int = 1000, lanes: int = 2
    ) -> None:
        self._linger = linger
        self._max_batch = max_batch
        self._all_lanes = [_Lane(engine) for _ in range(lanes)]
        self._lanes: asyncio.Queue[_Lane] = asyncio.Queue()
        for lane in self._all_lanes:
            self._lanes.put_nowait(lane)
        self._pending: list[tuple[NewEvent, asyncio.Future[StoredEvent]]] = []
        self._wakeup = asyncio.Event()
        self._flushes: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="meter-event-writer")

    async def stop(self) -> None:
        """Store what is pending, wait for the flushes in flight, then release the connections."""
        self._closing = True
        self._wakeup.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        for lane in self._all_lanes:
            await lane.close()

    async def write(self, event: NewEvent) -> StoredEvent:
        if self._closing or self._loop_task is None:
            raise EventStoreError("the event writer is not running")
        future: asyncio.Future[StoredEvent] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            if self._linger and len(self._pending) < self._max_batch and not self._closing:
                await asyncio.sleep(self._linger)
            while self._pending:
                lane = await self._lanes.get()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                task = asyncio.create_task(self._flush(lane, batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)

    async def _flush(self, lane: _Lane, batch: list[tuple[NewEvent, asyncio.Future[StoredEvent]]]) -> None:
        try:
            stored = await lane.insert([event for event, _ in batch])
        except EventStoreError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(EventStoreError(str(exc)))
        else:
            for (_, future), result in zip(batch, stored, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._lanes.put_nowait(lane)


_KNOWN_TYPES = """
SELECT DISTINCT event_type FROM billable_metrics
WHERE merchant_id = $1 AND environment = $2 AND event_type IS NOT NULL
"""


async def configured_event_types(engine: AsyncEngine, merchant_id: str, environment: str) -> frozenset[str]:
    """The eventTypes of the merchant's billable metrics in `environment`."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        rows = await driver.fetch(_KNOWN_TYPES, merchant_id, environment)
    return frozenset(r[0] for r in rows)


class EventTypeCache:
    """Which event types a merchant has configured, remembered for `ttl` seconds.

    Only answers of "known" are trusted from the cache: a type missing from a cached set is re-checked
    against the database, so a metric created a moment ago is usable at once. Concurrent lookups for the
    same merchant share one query.
    """

    def __init__(self, engine: AsyncEngine, ttl: float = 1.0) -> None:
        self._engine = engine
        self._ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[frozenset[str]]] = {}

    async def types(
        self, merchant_id: str, environment: str, wanted: frozenset[str] = frozenset()
    ) -> frozenset[str]:
        """The configured types; served from the cache while fresh and containing every `wanted` type."""
        key = (merchant_id, environment)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic() and wanted <= entry[1]:
            return entry[1]
        return await self._load(key)

    async def _load(self, key: tuple[str, str]) -> frozenset[str]:
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            started = time.monotonic()
            types = await configured_event_types(self._engine, *key)
            if len(self._entries) > 10_000:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > started}
            self._entries[key] = (started + self._ttl, types)
            future.set_result(types)
            return types
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Mark retrieved so an exception nobody else awaited is not logged as unhandled.
            future.exception()
            raise
        finally:
            del self._loading[key]
