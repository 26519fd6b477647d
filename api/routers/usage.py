"""Usage events (`/v0/usage`, Legacy billing, behavior §6.1): create, batch, list, get, refund.

Creation is priced and charged synchronously (api/usage_ingest.py): the 201 means the event is stored and
its instant part debited. POST /v0/usage is a lean route (the request is parsed from its bytes and the
response built as a dict), because it is as hot as meter event ingestion.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from api.auth import Caller
from api.deps import Context, Paging
from api.hot_path import CallerCache, DirectRoute
from api.problems import ApiError, invalid, not_found, validation_errors
from api.request_schemas import inline_schema
from api.schemas.usage import (
    MAX_BATCH,
    BatchCreateUsageEvents,
    BatchUsageEventsOut,
    CreateUsageEvent,
    RefundUsageEvent,
    UsageEventOut,
    wire,
)
from api.usage_ingest import (
    Item,
    Outcome,
    UsageStoreError,
    UsageWriter,
    check_item,
    create_with_entitlement,
    unavailable,
)
from api.usage_refunds import refund_usage_event
from api.wire import ListResponse, UtcDatetime, as_utc
from db import usage as usage_rows
from db.models import Subscription, TestClock

router = APIRouter(prefix="/v0/usage", tags=["usage events"])


def writer(app: FastAPI) -> UsageWriter:
    """The process's usage writer, made on first use (its connections are taken as batches need them)."""
    found: UsageWriter | None = getattr(app.state, "usage_writer", None)
    if found is None:
        found = UsageWriter(app.state.engine, app.state.settings.platform_fee_rate)
        app.state.usage_writer = found
    return found


async def stop(app: FastAPI) -> None:
    """Finish the batches in flight and release the writer's connections (app lifespan)."""
    found: UsageWriter | None = getattr(app.state, "usage_writer", None)
    if found is not None:
        await found.stop()


async def usage_caller(request: Request) -> Caller:
    callers: CallerCache | None = getattr(request.app.state, "usage_callers", None)
    if callers is None:
        callers = request.app.state.usage_callers = CallerCache()
    return await callers.caller(request)


def _fee_rate(request: Request) -> Any:
    return request.app.state.settings.platform_fee_rate


async def _one(request: Request, item: Item) -> Outcome:
    """The outcome of one checked event: through the writer, or (with an entitlementId) on its own."""
    try:
        if item.body.entitlement_id is not None:
            async with request.app.state.sessions() as session:
                try:
                    return await create_with_entitlement(session, item, _fee_rate(request))
                except ApiError as exc:
                    return exc
        return await writer(request.app).write(item)
    except UsageStoreError:
        return unavailable()


async def create_usage_event(request: Request) -> JSONResponse:
    caller = await usage_caller(request)
    try:
        body = CreateUsageEvent.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_errors(exc.errors()) from None
    item = Item(caller.merchant_id, caller.environment, body)
    check_item(item)
    outcome = await _one(request, item)
    if isinstance(outcome, ApiError):
        raise outcome
    return JSONResponse(wire(outcome), status_code=201)


router.add_api_route(
    "",
    create_usage_event,
    methods=["POST"],
    status_code=201,
    response_model=UsageEventOut,
    summary="Create a usage event",
    description="Prices the event by the plan of the customer's active (billingVersion 0) subscription: "
    "`instant` prices are debited from the customer's wallet in the same commit, `in_arrears` prices are "
    "billed on the period invoice. A repeated idempotencyKey answers the stored event and charges nothing.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(CreateUsageEvent)}},
        }
    },
    route_class_override=DirectRoute,
)

_EVENT = TypeAdapter(CreateUsageEvent)


def _key_of(raw: Any) -> str:
    key = raw.get("idempotencyKey") if isinstance(raw, dict) else None
    return key if isinstance(key, str) else ""


@router.post(
    "/batch",
    status_code=201,
    response_model=BatchUsageEventsOut,
    responses={207: {"model": BatchUsageEventsOut, "description": "Some events failed (see `failed`)"}},
    summary="Create up to 1,000 usage events",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(BatchCreateUsageEvents)}},
        }
    },
)
async def create_usage_events(request: Request) -> JSONResponse:
    caller = await usage_caller(request)
    try:
        envelope = TypeAdapter(dict[str, Any]).validate_json(await request.body())
    except ValidationError as exc:
        raise validation_errors(exc.errors()) from None
    events = envelope.get("events")
    if not isinstance(events, list):
        raise invalid("events", "is required: an array of 1 to 1000 usage events", "missing")
    if not 1 <= len(events) <= MAX_BATCH:
        raise invalid("events", f"must hold 1 to {MAX_BATCH} events, got {len(events)}", "size")
    outcomes: dict[int, Outcome] = {}
    queued: list[tuple[int, Item]] = []
    for index, raw in enumerate(events):
        try:
            body = _EVENT.validate_python(raw)
            item = Item(caller.merchant_id, caller.environment, body)
            check_item(item)
        except ValidationError as exc:
            outcomes[index] = validation_errors(exc.errors())
        except ApiError as exc:
            outcomes[index] = exc
        else:
            queued.append((index, item))
    plain = [(i, item) for i, item in queued if item.body.entitlement_id is None]
    if plain:
        try:
            results = await writer(request.app).write_many([item for _, item in plain])
        except UsageStoreError:
            raise unavailable() from None
        outcomes |= {i: r for (i, _), r in zip(plain, results, strict=True)}
    for i, item in queued:
        if item.body.entitlement_id is not None:
            outcomes[i] = await _one(request, item)
    successful, failed = [], []
    for index in range(len(events)):
        outcome = outcomes[index]
        if isinstance(outcome, ApiError):
            failed.append(
                {"index": index, "idempotencyKey": _key_of(events[index]), "error": outcome.message}
            )
        else:
            successful.append(wire(outcome))
    result = {
        "object": "batchUsageEvents",
        "successful": successful,
        "failed": failed,
        "summary": {"total": len(events), "successful": len(successful), "failed": len(failed)},
    }
    return JSONResponse(result, status_code=207 if failed else 201)


@router.get("", response_model=ListResponse[UsageEventOut])
async def list_usage_events(
    ctx: Context,
    page: Paging,
    start_time: Annotated[UtcDatetime, Query(alias="startTime", description="Events at or after this")],
    end_time: Annotated[UtcDatetime, Query(alias="endTime", description="Events at or before this")],
    customer_id: Annotated[str | None, Query(alias="customerId", max_length=64)] = None,
    consumer_id: Annotated[str | None, Query(alias="consumerId", max_length=64)] = None,
    merchant_id: Annotated[str | None, Query(alias="merchantId", max_length=64)] = None,
    subscription_id: Annotated[str | None, Query(alias="subscriptionId", max_length=64)] = None,
) -> JSONResponse:
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    if end_time < start_time:
        raise invalid("endTime", "must not be before startTime")
    where = usage_rows.UsageFilter(
        ctx.caller.merchant_id,
        ctx.caller.environment,
        as_utc(start_time),
        as_utc(end_time),
        customer_id=customer_id,
        consumer_id=consumer_id,
        subscription_id=subscription_id,
    )
    rows, total = await usage_rows.list_events(ctx.session, where, limit=page.limit, offset=page.offset)
    pagination = {
        "limit": page.limit,
        "offset": page.offset,
        "total": total,
        "hasMore": page.offset + len(rows) < total,
    }
    return JSONResponse({"object": "list", "data": [wire(r) for r in rows], "pagination": pagination})


@router.get("/{id}", response_model=UsageEventOut)
async def get_usage_event(id: str, ctx: Context) -> JSONResponse:
    row = await usage_rows.get(ctx.session, ctx.caller.merchant_id, ctx.caller.environment, id)
    if row is None:
        raise not_found("Usage event", id)
    return JSONResponse(wire(row))


async def _now(ctx: Any, subscription_id: str) -> datetime:
    """A subscription bound to a test clock lives at the clock's time."""
    sub = await ctx.session.get(Subscription, subscription_id)
    if sub is not None and sub.test_clock_id is not None:
        clock = await ctx.session.get(TestClock, sub.test_clock_id)
        if clock is not None:
            return clock.current_time
    return datetime.now(UTC)


@router.patch("/{id}", response_model=UsageEventOut)
async def refund_usage(id: str, body: RefundUsageEvent, ctx: Context) -> JSONResponse:
    row = await usage_rows.get(ctx.session, ctx.caller.merchant_id, ctx.caller.environment, id)
    if row is None:
        raise not_found("Usage event", id)
    now = await _now(ctx, row.subscription_id)
    refunded = await refund_usage_event(
        ctx.session, ctx.caller.merchant_id, ctx.caller.environment, id, body.reason, now
    )
    await ctx.session.commit()
    await ctx.session.refresh(refunded)
    return JSONResponse(wire(refunded))
