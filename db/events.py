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

import asyncpg
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


# From this many events on, COPY (with INSERT … ON CONFLICT as the fallback) beats INSERT … ON CONFLICT
# alone, whose per-row speculative insertion costs PostgreSQL about half again what COPY's bulk path does.
COPY_FROM = 200
_COLUMNS = [
    "id",
    "merchant_id",
    "environment",
    "type",
    "source",
    "subject",
    "data",
    "timestamp",
    "idempotency_key",
]


async def insert_events(conn: Any, events: Sequence[NewEvent]) -> list[StoredEvent]:
    """Store `events` atomically on the asyncpg connection `conn`, each key once.

    Returns one StoredEvent per input, in order. An event whose key is already stored, or repeated
    earlier in `events`, resolves to the first stored event with that key (`created=False`).
    Run outside an explicit transaction, the write commits when this returns.
    """
    first: dict[Key, NewEvent] = {}
    for event in events:
        first.setdefault(_key(event), event)
    unique = list(first.values())
    if len(unique) >= COPY_FROM and await _copied(conn, unique):
        if len(unique) == len(events):
            return [_created(e) for e in events]
        inserted_ids, existing = {e.id for e in unique}, []
    else:
        inserted_ids = {row[0] for row in await conn.fetch(_INSERT, *_columns(unique))}
        missing = [e for e in unique if e.id not in inserted_ids]
        existing = await _existing(conn, missing) if missing else []
    resolved = {_key(e): _created(e) for e in unique if e.id in inserted_ids}
    for r in existing:
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


def _created(e: NewEvent) -> StoredEvent:
    return StoredEvent(e.id, e.type, e.source, e.subject, e.timestamp, e.idempotency_key, True)


_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _columns(events: Sequence[NewEvent]) -> list[list[Any]]:
    return [
        [e.id for e in events],
        [e.merchant_id for e in events],
        [e.environment for e in events],
        [e.type for e in events],
        [e.source for e in events],
        [e.subject for e in events],
        [_encode_json(e.data) for e in events],
        [e.timestamp for e in events],
        [e.idempotency_key for e in events],
    ]


async def _existing(conn: Any, events: Sequence[NewEvent]) -> list[Any]:
    return list(
        await conn.fetch(
            _EXISTING,
            [e.merchant_id for e in events],
            [e.environment for e in events],
            [e.idempotency_key for e in events],
        )
    )


async def _copied(conn: Any, unique: Sequence[NewEvent]) -> bool:
    """COPY all the events, expecting their keys to be new; False when one is already stored (the COPY
    then wrote nothing, and INSERT … ON CONFLICT takes over). A retried batch pays twice; a new one, the
    usual case, is one COPY with no lookup at all."""
    try:
        records = zip(*_columns(unique), strict=True)
        await conn.copy_records_to_table("meter_events", records=records, columns=_COLUMNS)
    except asyncpg.UniqueViolationError:
        return False
    return True


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

    A background task hands everything pending to the next free lane (a held connection); each flush is
    one INSERT of up to `max_batch` events. While every lane is busy, arrivals accumulate into the next
    batch, so the batch size follows the load: one event when idle, hundreds under pressure. A request's
    future resolves only after its batch's INSERT has committed, so a 202 still means "durably stored"
    while one commit is shared by the whole batch.

    `linger` (seconds) would hold a batch open for late arrivals; it defaults to 0 because on the
    benchmark machine any linger cost more request rate than the larger batches saved.
    """

    def __init__(
        self, engine: AsyncEngine, *, linger: float = 0.0, max_batch: int = 1000, lanes: int = 2
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

    async def store(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        """Store a batch that is already large enough on its own, on the next free lane."""
        if self._closing:
            raise EventStoreError("the event writer is not running")
        lane = await self._lanes.get()
        try:
            return await lane.insert(events)
        finally:
            self._lanes.put_nowait(lane)

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
            try:
                _resolve(batch, await lane.insert([event for event, _ in batch]))
            except EventStoreError:
                if len(batch) == 1:
                    raise
                # One bad row fails the whole statement; store the others on their own rather than
                # failing every request that happened to share the batch.
                for one in batch:
                    try:
                        _resolve([one], await lane.insert([one[0]]))
                    except EventStoreError as exc:
                        _fail([one], exc)
        except EventStoreError as exc:
            _fail(batch, exc)
        finally:
            self._lanes.put_nowait(lane)


def _resolve(batch: list[tuple[NewEvent, asyncio.Future[StoredEvent]]], stored: list[StoredEvent]) -> None:
    for (_, future), result in zip(batch, stored, strict=True):
        if not future.done():
            future.set_result(result)


def _fail(batch: list[tuple[NewEvent, asyncio.Future[StoredEvent]]], exc: EventStoreError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(EventStoreError(str(exc)))


# The metrics' event types with the valueProperty each bills, and whether any live subscription of the
# tenant is bound to a test clock (then events without a timestamp take that clock's time).
_CONFIG = """
SELECT m.event_type, m.value_property FROM billable_metrics m
WHERE m.merchant_id = $1 AND m.environment = $2 AND m.event_type IS NOT NULL
"""
_CLOCK_BOUND = """
SELECT EXISTS (
    SELECT 1 FROM subscriptions s
    WHERE s.merchant_id = $1 AND s.environment = $2
      AND s.test_clock_id IS NOT NULL AND s.status <> 'terminated'
)
"""
# Subjects are stored as given: a customer id or its externalId.
_CLOCK_TIMES = """
SELECT DISTINCT ON (u.subject) u.subject, t.current_time
FROM unnest($3::text[]) AS u(subject)
JOIN customers c
  ON c.merchant_id = $1 AND c.environment = $2 AND (c.id = u.subject OR c.external_id = u.subject)
JOIN subscriptions s
  ON s.customer_id = c.id AND s.test_clock_id IS NOT NULL AND s.status <> 'terminated'
JOIN test_clocks t ON t.id = s.test_clock_id
ORDER BY u.subject, s.created_at DESC
"""


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """What ingestion needs to know about a tenant's metrics: each configured event type with the
    valueProperty paths its metrics bill, and whether some subscription is bound to a test clock."""

    value_paths: dict[str, tuple[str, ...]]
    clock_bound: bool = False

    def known(self) -> frozenset[str]:
        return frozenset(self.value_paths)


async def _driver(conn: AsyncConnection) -> Any:
    return (await conn.get_raw_connection()).driver_connection


async def ingest_config(engine: AsyncEngine, merchant_id: str, environment: str) -> IngestConfig:
    async with engine.connect() as conn:
        driver = await _driver(conn)
        rows = await driver.fetch(_CONFIG, merchant_id, environment)
        clock_bound = bool(await driver.fetchval(_CLOCK_BOUND, merchant_id, environment))
    paths: dict[str, set[str]] = {}
    for event_type, value_property in rows:
        paths.setdefault(event_type, set())
        if value_property is not None:
            paths[event_type].add(value_property)
    return IngestConfig({t: tuple(sorted(p)) for t, p in paths.items()}, clock_bound)


async def clock_times(
    engine: AsyncEngine, merchant_id: str, environment: str, subjects: Sequence[str]
) -> dict[str, datetime]:
    """The current time of the test clock each subject's live subscription is bound to (one query)."""
    async with engine.connect() as conn:
        rows = await (await _driver(conn)).fetch(_CLOCK_TIMES, merchant_id, environment, list(subjects))
    return {r[0]: r[1] for r in rows}


class IngestConfigCache:
    """Each tenant's IngestConfig, remembered for `ttl` seconds.

    Only answers of "known" are trusted from the cache: a type missing from a cached config is re-checked
    against the database, so a metric created a moment ago is usable at once. Concurrent lookups for the
    same tenant share one query.
    """

    def __init__(self, engine: AsyncEngine, ttl: float = 1.0) -> None:
        self._engine = engine
        self._ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, IngestConfig]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[IngestConfig]] = {}

    async def config(
        self, merchant_id: str, environment: str, wanted: frozenset[str] = frozenset()
    ) -> IngestConfig:
        """The tenant's config; served from the cache while fresh and knowing every `wanted` type."""
        key = (merchant_id, environment)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic() and wanted <= entry[1].value_paths.keys():
            return entry[1]
        return await self._load(key)

    async def _load(self, key: tuple[str, str]) -> IngestConfig:
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[IngestConfig] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            started = time.monotonic()
            config = await ingest_config(self._engine, *key)
            if len(self._entries) > 10_000:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > started}
            self._entries[key] = (started + self._ttl, config)
            future.set_result(config)
            return config
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
