"""Meter queries of a billable metric: aggregated usage (/meter) and the raw events behind it (/events)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import or_

from api.deps import MAX_OFFSET, Context, Ctx
from api.problems import ApiError, invalid
from api.schemas.meters import (
    GroupedValue,
    MeterEventList,
    MeterEventOut,
    UsageResponse,
    WindowSize,
    number,
    window,
)
from api.wire import Pagination, UtcDatetime, as_utc
from db.meter_queries import EventFilter, list_events, meter_usage
from db.models import BillableMetric, Customer, MeterEvent
from domain.aggregation import JsonPathError
from domain.durations import shift_months

router = APIRouter(prefix="/v0/billableMetrics", tags=["billable metrics"])

From = Annotated[UtcDatetime, Query(alias="from", description="Start of the window (inclusive), ISO-8601.")]
To = Annotated[UtcDatetime, Query(description="End of the window (exclusive), ISO-8601.")]
Subject = Annotated[
    str | None,
    Query(description="A customer's id or externalId: events sent under either one are included."),
]

_STEPS = {"MINUTE": timedelta(minutes=1), "HOUR": timedelta(hours=1), "DAY": timedelta(days=1)}


def _window_end(start: datetime, size: str) -> datetime:
    step = _STEPS.get(size)
    return start + step if step is not None else shift_months(start, 1, 1)


def _bounds(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        raise invalid("to", "must be later than from (the window is [from, to))")
    return start, end


async def _subjects(ctx: Ctx, subject: str | None) -> list[str] | None:
    """The subject and, when it names a customer, that customer's id and externalId."""
    if subject is None:
        return None
    customer = await ctx.session.scalar(
        ctx.scoped(Customer).where(or_(Customer.id == subject, Customer.external_id == subject))
    )
    names = {subject}
    if customer is not None:
        names |= {customer.id, *([customer.external_id] if customer.external_id else [])}
    return sorted(names)


def _dimensions(metric: BillableMetric, group_by: str | None) -> list[tuple[str, str]]:
    if group_by is None:
        return []
    keys = [k.strip() for k in group_by.split(",")]
    if any(not k for k in keys):
        raise invalid(
            "groupBy", "must be comma-separated dimension names without empty entries, e.g. model,region"
        )
    return [(key, _dimension_path(metric, "groupBy", key)) for key in dict.fromkeys(keys)]


def _dimension_path(metric: BillableMetric, field: str, key: str) -> str:
    configured = metric.group_by or {}
    if key not in configured:
        known = ", ".join(sorted(configured)) or "none; set groupBy on the billable metric first"
        raise invalid(field, f"{key!r} is not a groupBy dimension of this metric (configured: {known})")
    path: str = configured[key]
    return path


def _filters(metric: BillableMetric, filter_group_by: str | None) -> tuple[tuple[str, str], ...]:
    if filter_group_by is None:
        return ()
    example = 'a JSON object of dimension to value, e.g. {"model":"gpt-4"}'
    try:
        parsed = json.loads(filter_group_by)
    except ValueError:
        raise invalid("filterGroupBy", f"is not valid JSON; expected {example}") from None
    if not isinstance(parsed, dict):
        raise invalid("filterGroupBy", f"must be {example}")
    out = []
    for key, value in parsed.items():
        path = _dimension_path(metric, "filterGroupBy", key)
        if not isinstance(value, str):
            raise invalid("filterGroupBy", f"the value of {key!r} must be a string, got {json.dumps(value)}")
        out.append((path, value))
    return tuple(out)


def _unsupported_path(exc: JsonPathError) -> ApiError:
    return invalid(
        "id", f"this billable metric cannot be evaluated: {exc}; fix it with PATCH /v0/billableMetrics/{{id}}"
    )


@router.get(
    "/{id}/meter",
    response_model=UsageResponse,
    response_model_exclude_none=True,
    summary="Query meter usage",
    description="The metric's aggregation over its events in [from, to). windowedValues holds the UTC "
    "buckets that have events, oldest first; groupedValues one entry per combination of the groupBy "
    "dimensions (a dimension an event lacks is left out of its groupBy).",
)
async def meter(
    id: str,
    ctx: Context,
    from_: From,
    to: To,
    subject: Subject = None,
    window_size: Annotated[WindowSize | None, Query(alias="windowSize")] = None,
    group_by: Annotated[str | None, Query(alias="groupBy", description="Comma-separated dimensions.")] = None,
    filter_group_by: Annotated[
        str | None, Query(alias="filterGroupBy", description='JSON object, e.g. {"model":"gpt-4"}.')
    ] = None,
) -> UsageResponse:
    start, end = _bounds(from_, to)
    metric = await ctx.owned(BillableMetric, id, "Billable metric")
    dimensions = _dimensions(metric, group_by)
    filters = _filters(metric, filter_group_by)
    response = UsageResponse(
        billable_metric_id=metric.id,
        total_value=0,
        windowed_values=[] if window_size else None,
        grouped_values=[] if dimensions else None,
    )
    if metric.event_type is None:
        return response  # no event feeds a metric without an eventType
    if metric.event_from is not None:
        start = max(start, metric.event_from)
        if start >= end:
            return response
    where = EventFilter(
        ctx.caller.merchant_id,
        ctx.caller.environment,
        metric.event_type,
        start,
        end,
        await _subjects(ctx, subject),
        filters,
    )
    try:
        usage = await meter_usage(
            ctx.session,
            where,
            aggregation=metric.aggregation,
            value_property=metric.value_property,
            window=window_size,
            group_by=dimensions,
        )
    except JsonPathError as exc:
        raise _unsupported_path(exc) from None
    response.total_value = number(usage.total)
    if window_size:
        response.windowed_values = [window(s, _window_end(s, window_size), v) for s, v in usage.windows]
    if dimensions:
        response.grouped_values = [GroupedValue(group_by=g, value=number(v)) for g, v in usage.groups]
    return response


@router.get(
    "/{id}/events",
    response_model=MeterEventList,
    summary="List meter events",
    description="The events of the metric's eventType in [from, to), newest first.",
)
async def events(
    id: str,
    ctx: Context,
    from_: From,
    to: To,
    subject: Subject = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Events to return (1–200).")] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Events to skip.")] = 0,
) -> MeterEventList:
    start, end = _bounds(from_, to)
    metric = await ctx.owned(BillableMetric, id, "Billable metric")
    rows: list[MeterEvent] = []
    total = 0
    if metric.event_type is not None:
        where = EventFilter(
            ctx.caller.merchant_id,
            ctx.caller.environment,
            metric.event_type,
            start,
            end,
            await _subjects(ctx, subject),
        )
        rows, total = await list_events(ctx.session, where, limit=limit, offset=offset)
    pagination = Pagination(limit=limit, offset=offset, total=total, has_more=offset + len(rows) < total)
    return MeterEventList(
        billable_metric_id=metric.id, events=[MeterEventOut.of(r) for r in rows], pagination=pagination
    )
