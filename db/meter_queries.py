"""Meter aggregation in SQL: period quantities for invoices and the meter query API.

Every query reads one merchant's events of one type in a half-open window [start, end), optionally for a
set of subjects, through ix_meter_events_lookup. Values are read with the same rules as
domain.aggregation.extract_value / extract_text, so SQL and Python aggregation agree record for record:
a JSON number, or a string written as a plain decimal ("12.5"), is a value; anything else is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import MeterEvent
from domain.aggregation import AGGREGATIONS, MeterRecord, parse_json_path

WINDOW_UNITS = {"MINUTE": "minute", "HOUR": "hour", "DAY": "day", "MONTH": "month"}

# domain.money.parse_decimal's grammar: what a string must look like to count as a number.
_DECIMAL_TEXT = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"


def _number(column: str) -> str:
    return (
        f"CASE jsonb_typeof({column}) WHEN 'number' THEN ({column})::numeric "
        f"WHEN 'string' THEN CASE WHEN ({column} #>> '{{}}') ~ '{_DECIMAL_TEXT}' "
        f"THEN ({column} #>> '{{}}')::numeric END END"
    )


def _scalar_text(column: str) -> str:
    return f"CASE WHEN jsonb_typeof({column}) IN ('string', 'number', 'boolean') THEN {column} #>> '{{}}' END"


_AGGREGATES = {
    "SUM": "coalesce(sum(v), 0)",
    "COUNT": "count(*)",
    # Rounded to what a stored quantity holds, as domain.aggregation does.
    "AVG": "coalesce(round(avg(v), 9), 0)",
    "MIN": "coalesce(min(v), 0)",
    "MAX": "coalesce(max(v), 0)",
    "UNIQUE_COUNT": "count(DISTINCT d)",
    # Ties on timestamp go to the later row in (timestamp, id) order, as in period_records.
    "LATEST": "coalesce((array_agg(v ORDER BY ts DESC, id DESC) FILTER (WHERE v IS NOT NULL))[1], 0)",
}
assert set(_AGGREGATES) == set(AGGREGATIONS)


def pg_path(json_path: str) -> list[str]:
    """A JSONPath ('$.usage.tokens', "$['a'][0]") as a PostgreSQL `#>` path; JsonPathError if unsupported."""
    return [str(step) for step in parse_json_path(json_path)]


@dataclass(frozen=True)
class EventFilter:
    """Which events: one merchant's events of one type within [start, end)."""

    merchant_id: str
    environment: str
    event_type: str
    start: datetime
    end: datetime
    subjects: Sequence[str] | None = None
    # dimension JSONPath → required text value (filterGroupBy)
    equals: tuple[tuple[str, str], ...] = ()


def _source(
    where: EventFilter,
    value_property: str | None,
    distinct_property: str | None,
    dimensions: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """A subquery of the selected events with columns ts, id, v (number), d (distinct text), g0…gn."""
    params: dict[str, Any] = {
        "merchant_id": where.merchant_id,
        "environment": where.environment,
        "event_type": where.event_type,
        "start": where.start,
        "end": where.end,
    }
    columns = ["e.timestamp AS ts", "e.id AS id"]
    for name, path in (("vj", value_property), ("dj", distinct_property)):
        if path is None:
            columns.append(f"NULL::jsonb AS {name}")
        else:
            params[name] = pg_path(path)
            columns.append(f"e.data #> CAST(:{name} AS text[]) AS {name}")
    for i, path in enumerate(dimensions):
        params[f"g{i}"] = pg_path(path)
        columns.append(f"e.data #> CAST(:g{i} AS text[]) AS gj{i}")
    conditions = [
        "e.merchant_id = :merchant_id",
        "e.environment = :environment",
        "e.type = :event_type",
        "e.timestamp >= :start",
        "e.timestamp < :end",
    ]
    if where.subjects is not None:
        params["subjects"] = list(where.subjects)
        conditions.append("e.subject = ANY(CAST(:subjects AS text[]))")
    for i, (path, value) in enumerate(where.equals):
        params[f"fp{i}"], params[f"fv{i}"] = pg_path(path), value
        conditions.append(f"{_scalar_text(f'(e.data #> CAST(:fp{i} AS text[]))')} = :fv{i}")
    raw = f"SELECT {', '.join(columns)} FROM meter_events e WHERE {' AND '.join(conditions)}"
    outer = ["ts", "id", f"{_number('vj')} AS v", f"{_scalar_text('dj')} AS d"]
    outer += [f"{_scalar_text(f'gj{i}')} AS g{i}" for i in range(len(dimensions))]
    return f"SELECT {', '.join(outer)} FROM ({raw}) raw", params


def _effective_start(start: datetime, event_from: datetime | None) -> datetime:
    return max(start, event_from) if event_from is not None else start


async def period_records(
    session: AsyncSession,
    *,
    merchant_id: str,
    environment: str,
    event_type: str,
    subjects: list[str],
    start: datetime,
    end: datetime,
    event_from: datetime | None,
    value_property: str | None,
    distinct_property: str | None,
) -> list[MeterRecord]:
    """The subjects' events of `event_type` in [max(start, event_from), end), oldest first, as records."""
    where = EventFilter(
        merchant_id, environment, event_type, _effective_start(start, event_from), end, subjects
    )
    source, params = _source(where, value_property, distinct_property)
    rows = await session.execute(text(f"SELECT ts, v, d FROM ({source}) s ORDER BY ts, id"), params)
    return [MeterRecord(ts, v, d) for ts, v, d in rows]


async def aggregate_period(
    session: AsyncSession,
    *,
    merchant_id: str,
    environment: str,
    event_type: str,
    subjects: list[str],
    start: datetime,
    end: datetime,
    event_from: datetime | None,
    aggregation: str,
    value_property: str | None,
    distinct_property: str | None = None,
) -> Decimal:
    """`aggregation` of the subjects' events in [max(start, event_from), end), computed in the database.

    Equals domain.aggregation.aggregate(aggregation, period_records(...)). UNIQUE_COUNT counts distinct
    values at `distinct_property`, or at `value_property` when that is not given.
    """
    if aggregation == "UNIQUE_COUNT" and distinct_property is None:
        distinct_property = value_property
    where = EventFilter(
        merchant_id, environment, event_type, _effective_start(start, event_from), end, subjects
    )
    source, params = _source(where, value_property, distinct_property)
    value = await session.scalar(text(f"SELECT {_AGGREGATES[aggregation]} FROM ({source}) s"), params)
    return _plain(Decimal(value or 0))


@dataclass(frozen=True)
class Usage:
    total: Decimal
    windows: list[tuple[datetime, Decimal]]
    groups: list[tuple[dict[str, str], Decimal]]


async def meter_usage(
    session: AsyncSession,
    where: EventFilter,
    *,
    aggregation: str,
    value_property: str | None,
    window: str | None = None,
    group_by: Sequence[tuple[str, str]] = (),
) -> Usage:
    """Total, per-window (UTC buckets that have events) and per-group values in one pass.

    `window` is a key of WINDOW_UNITS; `group_by` pairs a dimension name with its JSONPath.
    """
    source, params = _source(where, value_property, value_property, [path for _, path in group_by])
    if window is None and not group_by:
        total = await session.scalar(text(f"SELECT {_AGGREGATES[aggregation]} FROM ({source}) s"), params)
        return Usage(_plain(Decimal(total or 0)), [], [])
    keys = [f"g{i}" for i in range(len(group_by))]
    sets = ["()"]
    select_cols = []
    if window is not None:
        params["unit"] = WINDOW_UNITS[window]
        sets.append("(bucket)")
        select_cols.append("bucket")
    else:
        select_cols.append("NULL::timestamptz AS bucket")
    if keys:
        sets.append(f"({', '.join(keys)})")
    grouped = ["bucket"] if window is not None else []
    grouped += keys
    flags = f"GROUPING({', '.join(grouped)})" if grouped else "0"
    bucket = "date_trunc(:unit, ts, 'UTC') AS bucket, " if window is not None else ""
    sql = (
        f"SELECT {flags} AS flags, {', '.join([*select_cols, *keys])}, {_AGGREGATES[aggregation]} AS value "
        f"FROM (SELECT {bucket}s.* FROM ({source}) s) b GROUP BY GROUPING SETS ({', '.join(sets)})"
    )
    total = Decimal(0)
    windows: list[tuple[datetime, Decimal]] = []
    groups: list[tuple[dict[str, str], Decimal]] = []
    all_bits = (1 << len(grouped)) - 1
    for row in await session.execute(text(sql), params):
        flags_value, bucket_value, *dims, value = row
        amount = _plain(Decimal(value or 0))
        if flags_value == all_bits:
            total = amount
        elif window is not None and flags_value == all_bits ^ (1 << (len(grouped) - 1)):
            windows.append((bucket_value, amount))
        else:
            labels = {name: dim for (name, _), dim in zip(group_by, dims, strict=True) if dim is not None}
            groups.append((labels, amount))
    windows.sort(key=lambda w: w[0])
    groups.sort(key=lambda g: [g[0].get(name, "") for name, _ in group_by])
    return Usage(total, windows, groups)


async def list_events(
    session: AsyncSession, where: EventFilter, *, limit: int, offset: int
) -> tuple[list[MeterEvent], int]:
    """The events newest first, one page of them, and how many there are in all."""
    conditions = [
        MeterEvent.merchant_id == where.merchant_id,
        MeterEvent.environment == where.environment,
        MeterEvent.type == where.event_type,
        MeterEvent.timestamp >= where.start,
        MeterEvent.timestamp < where.end,
    ]
    if where.subjects is not None:
        conditions.append(MeterEvent.subject.in_(list(where.subjects)))
    total = await session.scalar(select(func.count()).select_from(MeterEvent).where(*conditions))
    rows = await session.scalars(
        select(MeterEvent)
        .where(*conditions)
        .order_by(MeterEvent.timestamp.desc(), MeterEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


_WIDE = Context(prec=100)


def _plain(value: Decimal) -> Decimal:
    """Drop trailing fraction zeros (1.500000000 → 1.5) without switching to exponent notation."""
    if value == value.to_integral_value(context=_WIDE):
        return value.quantize(Decimal(1), context=_WIDE)
    return value.normalize(context=_WIDE)
