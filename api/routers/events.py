"""Meter events: POST /v0/events (202 once durably stored) and the batch extension POST /v0/events/batch.

Single events go through the process's group-commit writer, so concurrent requests share one INSERT and
one commit; a batch is stored on its own, by one COPY (or INSERT when some key is already stored).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import Caller
from api.body_limit import NUL, nul_error, nul_fields
from api.hot_path import CallerCache, DirectRoute
from api.problems import ApiError, FieldErrors, forbidden, invalid, validation_errors
from api.schemas.events import (
    MAX_BATCH,
    BatchEnvelope,
    BatchIngest,
    BatchIngestResponse,
    EventResponse,
    IngestEvent,
)
from db.events import (
    EventStoreError,
    GroupCommitWriter,
    IngestConfig,
    IngestConfigCache,
    NewEvent,
    clock_times,
)
from domain.ids import ALPHABET, PREFIXES
from domain.meter_values import non_finite, value_problems

router = APIRouter(prefix="/v0/events", tags=["meter events"])


def start(app: FastAPI, engine: AsyncEngine, *, lanes: int, linger: float) -> None:
    """Start the process's event writer; called from the app lifespan."""
    app.state.event_writer = GroupCommitWriter(engine, lanes=lanes, linger=linger)
    app.state.event_writer.start()
    app.state.ingest_configs = IngestConfigCache(engine)
    app.state.event_callers = CallerCache()


async def stop(app: FastAPI) -> None:
    """Store what is still pending; called from the app lifespan before the engine is disposed."""
    await app.state.event_writer.stop()


async def event_caller(request: Request) -> Caller:
    cache: CallerCache = request.app.state.event_callers
    return await cache.caller(request)


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


def _check_nul(body: IngestEvent) -> None:
    """An event of a batch with a NUL is refused on its own (api/body_limit.py refuses a single event)."""
    fields = list(nul_fields(body.model_dump(by_alias=True, exclude_none=True, mode="json"), ""))
    if fields:
        raise nul_error(fields)


def _check_namespace(caller: Caller, namespace: str | None) -> None:
    if namespace is not None and namespace != caller.merchant_id:
        raise forbidden(
            f"namespace {namespace!r} is not the organization of this API key; omit it or send "
            f"{caller.merchant_id!r}"
        )


async def _config(request: Request, caller: Caller, wanted: Iterable[str]) -> IngestConfig:
    cache: IngestConfigCache = request.app.state.ingest_configs
    return await cache.config(caller.merchant_id, caller.environment, frozenset(wanted))


def _check_data(body: IngestEvent) -> None:
    """Refuse data that could be stored but never billed, or not stored at all."""
    errors = [
        {
            "field": field,
            "message": "must be a finite number: JSON cannot hold NaN or Infinity (1e400 "
            "overflows to Infinity)",
            "code": "non_finite",
        }
        for field in non_finite(body.data)
    ]
    if errors:
        raise FieldErrors(errors)


def _check_values(body: IngestEvent, config: IngestConfig) -> None:
    errors = [
        {"field": field, "message": message, "code": "out_of_range"}
        for field, message in value_problems(body.data, config.value_paths.get(body.type, ()))
    ]
    if errors:
        raise FieldErrors(errors)


async def _default_times(
    request: Request, caller: Caller, config: IngestConfig, bodies: Iterable[IngestEvent]
) -> dict[str, datetime]:
    """Each subject's test-clock time, for events without a timestamp whose subject's live subscription is
    bound to a test clock: the wall time would fall in a period the clock has already billed. Looked up
    only when the tenant has such a subscription at all, in one query per request."""
    if not config.clock_bound:
        return {}
    subjects = {b.subject or b.external_subject or "" for b in bodies if b.timestamp is None}
    if not subjects:
        return {}
    return await clock_times(
        request.app.state.engine, caller.merchant_id, caller.environment, sorted(subjects)
    )


def _now() -> datetime:
    # Milliseconds, the precision timestamps are reported in, so a default timestamp reads back as stored.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# new_id("event")'s format, drawn from one urandom call instead of one per character: an id is minted
# per request on the hottest path. Each byte maps to byte % 62, a bias of at most 1/256 per character.
_BASE62 = bytes((ALPHABET * 5)[:256], "ascii")


def _event_ids(count: int) -> list[str]:
    chars = os.urandom(24 * count).translate(_BASE62).decode()
    prefix = PREFIXES["event"] + "_"
    return [prefix + chars[i : i + 24] for i in range(0, 24 * count, 24)]


def _new_events(
    caller: Caller, bodies: list[IngestEvent], now: datetime, clocks: dict[str, datetime]
) -> list[NewEvent]:
    return [
        NewEvent(
            event_id,
            caller.merchant_id,
            caller.environment,
            body.type,
            body.source,
            body.subject or body.external_subject or "",  # _subject() has checked one is there
            body.data,
            body.timestamp or clocks.get(body.subject or body.external_subject or "", now),
            body.idempotency_key or event_id,
        )
        for event_id, body in zip(_event_ids(len(bodies)), bodies, strict=True)
    ]


async def ingest_event(request: Request) -> JSONResponse:
    # The key is checked through the cache, and the body is validated straight from its bytes
    # (pydantic-core parses and validates in one pass); errors keep the envelope of every endpoint.
    caller = await event_caller(request)
    raw = await request.body()
    try:
        body = IngestEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_errors(exc.errors()) from None
    _subject(body)
    _check_data(body)
    _check_namespace(caller, body.namespace)
    config = await _config(request, caller, (body.type,))
    if body.type not in config.value_paths:
        raise _unknown_type(body.type, config.known())
    _check_values(body, config)
    clocks = await _default_times(request, caller, config, (body,))
    writer: GroupCommitWriter = request.app.state.event_writer
    try:
        stored = await writer.write(_new_events(caller, [body], _now(), clocks)[0])
    except EventStoreError:
        raise _unavailable() from None
    return JSONResponse(EventResponse.wire(stored, caller.merchant_id), status_code=202)


router.add_api_route(
    "",
    ingest_event,
    methods=["POST"],
    status_code=202,
    response_model=EventResponse,
    summary="Ingest a meter event",
    description="Answers 202 once the event is durably stored. A repeated idempotencyKey stores nothing "
    "new and answers with the original event.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": IngestEvent.model_json_schema(by_alias=True)}},
        }
    },
    route_class_override=DirectRoute,
)

_EVENT = TypeAdapter(IngestEvent)


def _rejected(index: int, error: ApiError) -> dict[str, Any]:
    return {"index": index, "status": error.status, "error": error.body()}


def _parse_batch(raw: bytes) -> tuple[int, list[tuple[int, IngestEvent]], dict[int, dict[str, Any]]]:
    """The number of events, the well-formed ones by index, and the results of the malformed ones."""
    try:
        # One pydantic-core pass over the bytes when every event is well-formed, the usual case.
        events = BatchIngest.model_validate_json(raw).events
        return len(events), list(enumerate(events)), {}
    except ValidationError:
        pass
    try:
        items = BatchEnvelope.model_validate_json(raw).events
    except ValidationError as exc:
        raise validation_errors(exc.errors()) from None
    valid: list[tuple[int, IngestEvent]] = []
    results: dict[int, dict[str, Any]] = {}
    if len(items) > MAX_BATCH:
        return len(items), valid, results
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            results[index] = _rejected(index, invalid(f"events[{index}]", "must be an object"))
            continue
        try:
            valid.append((index, _EVENT.validate_python(item)))
        except ValidationError as exc:
            results[index] = _rejected(index, validation_errors(exc.errors()))
    return len(items), valid, results


async def ingest_batch(request: Request) -> JSONResponse:
    # A DirectRoute like POST /v0/events: at 1,000 events, FastAPI's decoding and response validation
    # would cost more than storing the batch.
    caller = await event_caller(request)
    raw = await request.body()
    count, parsed, results = _parse_batch(raw)
    if not 1 <= count <= MAX_BATCH:
        raise invalid(
            "events", f"must hold 1 to {MAX_BATCH} events, got {count}; split larger batches", code="size"
        )
    valid: list[tuple[int, IngestEvent]] = []
    has_nul = NUL in raw
    for index, event in parsed:
        try:
            if has_nul:
                _check_nul(event)
            _subject(event)
            _check_data(event)
            _check_namespace(caller, event.namespace)
        except ApiError as exc:
            results[index] = _rejected(index, exc)
        else:
            valid.append((index, event))
    config = await _config(request, caller, {event.type for _, event in valid})
    accepted: list[tuple[int, IngestEvent]] = []
    for index, event in valid:
        try:
            if event.type not in config.value_paths:
                raise _unknown_type(event.type, config.known())
            _check_values(event, config)
        except ApiError as exc:
            results[index] = _rejected(index, exc)
        else:
            accepted.append((index, event))
    if accepted:
        bodies = [event for _, event in accepted]
        clocks = await _default_times(request, caller, config, bodies)
        writer: GroupCommitWriter = request.app.state.event_writer
        try:
            stored = await writer.store(_new_events(caller, bodies, _now(), clocks))
        except EventStoreError:
            raise _unavailable() from None
        for (index, _), row in zip(accepted, stored, strict=True):
            results[index] = {
                "index": index,
                "status": 202,
                "id": row.id,
                "idempotencyKey": row.idempotency_key,
            }
    data = [results[i] for i in range(count)]
    body = {"object": "list", "data": data, "accepted": len(accepted), "rejected": count - len(accepted)}
    return JSONResponse(body)


def _batch_schema() -> dict[str, Any]:
    """BatchIngest's JSON schema with its events inlined: pydantic would point them at a local `$defs`,
    which is not a place an OpenAPI reference may lead (ReDoc refuses the whole document)."""
    schema = BatchIngest.model_json_schema(by_alias=True)
    schema.pop("$defs", None)
    schema["properties"]["events"] |= {
        "items": IngestEvent.model_json_schema(by_alias=True),
        "minItems": 1,
        "maxItems": MAX_BATCH,
    }
    return schema


router.add_api_route(
    "/batch",
    ingest_batch,
    methods=["POST"],
    response_model=BatchIngestResponse,
    summary="Ingest up to 1,000 meter events (Accrue extension)",
    description="Each event is checked like POST /v0/events and gets its own result; the accepted ones are "
    "stored together in one transaction before the response. See docs/api-extensions.md.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _batch_schema()}},
        }
    },
    route_class_override=DirectRoute,
)
