"""Meter events: POST /v0/events (202 once durably stored) and the batch extension POST /v0/events/batch.

Single events go through the process's group-commit writer, so concurrent requests share one INSERT and
one commit; a batch is one INSERT of its own.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import Caller, authenticate
from api.errors import ApiError, forbidden, invalid, validation_errors
from api.schemas.events import (
    MAX_BATCH,
    BatchIngest,
    BatchIngestResponse,
    BatchItemResult,
    EventResponse,
    IngestEvent,
)
from api.wire import dump
from db.events import EventStoreError, EventTypeCache, GroupCommitWriter, NewEvent, store_events
from domain.ids import ALPHABET, PREFIXES

router = APIRouter(prefix="/v0/events", tags=["meter events"])


def start(app: FastAPI, engine: AsyncEngine) -> None:
    """Start the process's event writer; called from the app lifespan."""
    app.state.event_writer = GroupCommitWriter(engine)
    app.state.event_writer.start()
    app.state.event_types = EventTypeCache(engine)
    app.state.event_callers = CallerCache()


async def stop(app: FastAPI) -> None:
    """Store what is still pending; called from the app lifespan before the engine is disposed."""
    await app.state.event_writer.stop()


class CallerCache:
    """API keys that authenticated in the last `ttl` seconds, so that ingestion, the hottest path, does not
    look its key up per event. Only successes are kept, so a revoked key stops working within `ttl`;
    concurrent requests with the same key share one lookup."""

    def __init__(self, ttl: float = 1.0) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[float, Caller]] = {}
        self._lookups: dict[str, asyncio.Future[Caller]] = {}

    async def caller(self, request: Request) -> Caller:
        header = request.headers.get("authorization") or ""
        hit = self._entries.get(header)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        lookup = self._lookups.get(header)
        if lookup is not None:
            return await asyncio.shield(lookup)
        lookup = asyncio.get_running_loop().create_future()
        self._lookups[header] = lookup
        try:
            started = time.monotonic()
            async with request.app.state.sessions() as session:
                caller = await authenticate(request, session)
            if len(self._entries) > 10_000:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > started}
            self._entries[header] = (started + self._ttl, caller)
            lookup.set_result(caller)
            return caller
        except asyncio.CancelledError:
            lookup.cancel()
            raise
        except Exception as exc:
            lookup.set_exception(exc)
            lookup.exception()  # retrieved: a 401 nobody else awaited is not an unhandled error
            raise
        finally:
            del self._lookups[header]


async def event_caller(request: Request) -> Caller:
    cache: CallerCache = request.app.state.event_callers
    return await cache.caller(request)


EventCaller = Annotated[Caller, Depends(event_caller)]


def _unavailable() -> ApiError:
    return ApiError(
        503,
        "The event could not be stored; nothing was written. Retry with the same idempotencyKey.",
        code="EVENT_STORE_UNAVAILABLE",
    )


def _unknown_type(event_type: str, known: frozenset[str]) -> ApiError:
    configured = (
        "configured event types: " + ", ".join(repr(t) for t in sorted(known)[:20])
        if known
        else "no billable metric of this organization has an eventType yet"
    )
    return ApiError(
        422,
        f"type {event_type!r} matches no billable metric's eventType; create a billable metric with "
        f"eventType {event_type!r} or send one of the {configured}",
        code="UNKNOWN_EVENT_TYPE",
        details={"type": event_type},
    )


def _subject(body: IngestEvent) -> str:
    subject = body.subject or body.external_subject
    if subject is None:
        raise invalid("subject", "is required: the customer's id or externalId", code="missing")
    return subject


def _check_namespace(caller: Caller, namespace: str | None) -> None:
    if namespace is not None and namespace != caller.merchant_id:
        raise forbidden(
            f"namespace {namespace!r} is not the organization of this API key; omit it or send "
            f"{caller.merchant_id!r}"
        )


async def _known_types(request: Request, caller: Caller, wanted: Iterable[str]) -> frozenset[str]:
    cache: EventTypeCache = request.app.state.event_types
    return await cache.types(caller.merchant_id, caller.environment, frozenset(wanted))


def _now() -> datetime:
    # Milliseconds, the precision timestamps are reported in, so a default timestamp reads back as stored.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _event_id() -> str:
    # new_id("event")'s format from one urandom call instead of one per character: ids are minted per
    # request on the hottest path. 144 random bits cover the 24 base62 characters (~142.9 bits).
    number = int.from_bytes(secrets.token_bytes(18))
    chars = []
    for _ in range(24):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return f"{PREFIXES['event']}_{''.join(chars)}"


def _new_event(caller: Caller, body: IngestEvent, now: datetime) -> NewEvent:
    event_id = _event_id()
    return NewEvent(
        id=event_id,
        merchant_id=caller.merchant_id,
        environment=caller.environment,
        type=body.type,
        source=body.source,
        subject=_subject(body),
        data=body.data,
        timestamp=body.timestamp or now,
        idempotency_key=body.idempotency_key or event_id,
    )


@router.post(
    "",
    status_code=202,
    response_model=EventResponse,
    summary="Ingest a meter event",
    description="Answers 202 once the event is durably stored. A repeated idempotencyKey stores nothing "
    "new and answers with the original event.",
)
async def ingest_event(body: IngestEvent, request: Request, caller: EventCaller) -> JSONResponse:
    _subject(body)
    _check_namespace(caller, body.namespace)
    known = await _known_types(request, caller, (body.type,))
    if body.type not in known:
        raise _unknown_type(body.type, known)
    writer: GroupCommitWriter = request.app.state.event_writer
    try:
        stored = await writer.write(_new_event(caller, body, _now()))
    except EventStoreError:
        raise _unavailable() from None
    return JSONResponse(dump(EventResponse.of(stored, caller.merchant_id)), status_code=202)


_EVENT = TypeAdapter(IngestEvent)


def _rejected(index: int, error: ApiError) -> BatchItemResult:
    return BatchItemResult(index=index, status=error.status, error=error.body())


@router.post(
    "/batch",
    response_model=BatchIngestResponse,
    response_model_exclude_none=True,
    summary="Ingest up to 1,000 meter events (Accrue extension)",
    description="Each event is checked like POST /v0/events and gets its own result; the accepted ones are "
    "stored together in one transaction before the response. See docs/api-extensions.md.",
)
async def ingest_batch(body: BatchIngest, request: Request, caller: EventCaller) -> BatchIngestResponse:
    count = len(body.events)
    if not 1 <= count <= MAX_BATCH:
        raise invalid(
            "events", f"must hold 1 to {MAX_BATCH} events, got {count}; split larger batches", code="size"
        )
    results: dict[int, BatchItemResult] = {}
    valid: list[tuple[int, IngestEvent]] = []
    for index, item in enumerate(body.events):
        if not isinstance(item, dict):
            results[index] = _rejected(index, invalid(f"events[{index}]", "must be an object"))
            continue
        try:
            event = _EVENT.validate_python(item)
            _subject(event)
            _check_namespace(caller, event.namespace)
        except ValidationError as exc:
            results[index] = _rejected(index, validation_errors(exc.errors()))
        except ApiError as exc:
            results[index] = _rejected(index, exc)
        else:
            valid.append((index, event))
    known = await _known_types(request, caller, {event.type for _, event in valid})
    now = _now()
    accepted: list[tuple[int, NewEvent]] = []
    for index, event in valid:
        if event.type in known:
            accepted.append((index, _new_event(caller, event, now)))
        else:
            results[index] = _rejected(index, _unknown_type(event.type, known))
    if accepted:
        try:
            stored = await store_events(request.app.state.engine, [new for _, new in accepted])
        except EventStoreError:
            raise _unavailable() from None
        for (index, _), row in zip(accepted, stored, strict=True):
            results[index] = BatchItemResult(
                index=index, status=202, id=row.id, idempotency_key=row.idempotency_key
            )
    data = [results[i] for i in range(count)]
    return BatchIngestResponse(data=data, accepted=len(accepted), rejected=count - len(accepted))
