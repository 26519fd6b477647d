"""The one meter aggregation engine, in SQL: period quantities and per-record sums for invoices
(period_usages) and the meter query API (meter_usage, list_events).

Every query reads one merchant's events of one type in a half-open window [start, end), optionally for a
set of subjects, through ix_meter_events_lookup; arithmetic is PostgreSQL NUMERIC (exact), and no event is
loaded into Python. One value-reading rule serves both: a JSON number, or a string written as a plain
decimal ("12.5"), is a value; anything else is not (it still counts for COUNT).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import MeterEvent
from domain.aggregation import AGGREGATIONS, parse_json_path
from domain.pricing.base import PeriodUsage, RecordRule

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
    # Rounded to what a stored quantity holds (NUMERIC(38, 9)).
    "AVG": "coalesce(round(avg(v), 9), 0)",
    "MIN": "coalesce(min(v), 0)",
    "MAX": "coalesce(max(v), 0)",
    "UNIQUE_COUNT": "count(DISTINCT d)",
    # Ties on timestamp go to the later row in (timestamp, id) order.
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


@dataclass(frozen=True)
class UsageQuery:
    """One metered price over one period: the metric's aggregation of the subjects' events in [start, end),
    and, when the price model has a RecordRule, the per-record sums it needs."""

    merchant_id: str
    environment: str
    event_type: str
    subjects: tuple[str, ...]
    start: datetime  # inclusive; the caller has already applied the metric's eventFrom
    end: datetime  # exclusive
    aggregation: str  # SUM | COUNT | AVG | MIN | MAX | UNIQUE_COUNT | LATEST
    value_property: str | None
    rule: RecordRule | None = None


# Each query is one row of a jsonb parameter and the LATERAL runs an index scan of ix_meter_events_lookup
# per row, so a page of invoices is one statement. Queries are grouped by shape (aggregation, kind of
# record rule), one UNION ALL branch per shape present, so each event pays only for the aggregates its
# query needs; there are few shapes, so few distinct statements to plan. Each subquery level is computed once
# per event (OFFSET 0 keeps the planner from inlining it, which would repeat the JSON extraction and the
# number parsing in every aggregate that reads them).
_COLUMNS = """
    i int, merchant_id text, environment text, event_type text, subjects text[], start_at timestamptz,
    end_at timestamptz, value_path text[], factor numeric, price_path text[], price_min numeric,
    price_max numeric, amount_min numeric, amount_max numeric
"""
_PRICE = {
    "none": "NULL::numeric",
    "factor": "q.factor",
    # The reported price held to the bounds; missing or not a number is price_min.
    "path": f"least(greatest(coalesce({_number('raw.pj')}, q.price_min), q.price_min), q.price_max)",
}


def _branch(aggregation: str, rule: str, param: str) -> str:
    # greatest/least skip NULL bounds (a None bound is no bound) but also a NULL product, hence FILTER.
    amount = (
        "coalesce(sum(least(greatest(v * price, q.amount_min), q.amount_max)) "
        "FILTER (WHERE v * price IS NOT NULL), 0)"
    )
    # The one price every valued record shares (min = max), else NULL.
    shared = "CASE WHEN min(price) FILTER (WHERE v IS NOT NULL) = max(price) FILTER (WHERE v IS NOT NULL) "
    shared += "THEN min(price) FILTER (WHERE v IS NOT NULL) END"
    distinct = _scalar_text("raw.vj") if aggregation == "UNIQUE_COUNT" else "NULL::text"
    price_json = "e.data #> q.price_path" if rule == "path" else "NULL::jsonb"
    return f"""
SELECT q.i, trim_scale(u.quantity), trim_scale(u.record_values), trim_scale(u.record_amount),
    trim_scale(u.record_price)
FROM jsonb_to_recordset(CAST(:{param} AS jsonb)) AS q({_COLUMNS})
CROSS JOIN LATERAL (
    SELECT {_AGGREGATES[aggregation]} AS quantity, coalesce(sum(v), 0) AS record_values,
        {amount if rule != "none" else "0"} AS record_amount,
        {shared if rule != "none" else "NULL::numeric"} AS record_price
    FROM (
        SELECT raw.ts AS ts, raw.id AS id, {_number("raw.vj")} AS v, {distinct} AS d, {_PRICE[rule]} AS price
        FROM (
            SELECT e.timestamp AS ts, e.id, e.data #> q.value_path AS vj, {price_json} AS pj
            FROM meter_events e
            WHERE e.merchant_id = q.merchant_id AND e.environment = q.environment
                AND e.type = q.event_type AND e.subject = ANY(q.subjects)
                AND e.timestamp >= q.start_at AND e.timestamp < q.end_at
            OFFSET 0
        ) raw
        OFFSET 0
    ) r
) u"""


def _rule_kind(rule: RecordRule | None) -> str:
    if rule is None:
        return "none"
    return "factor" if rule.price_path is None else "path"


def _decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _query_row(i: int, query: UsageQuery, instants: dict[datetime, str]) -> dict[str, Any]:
    """`instants` memoizes isoformat: the invoices of a page share their periods' bounds."""
    if (start := instants.get(query.start)) is None:
        start = instants[query.start] = query.start.isoformat()
    if (end := instants.get(query.end)) is None:
        end = instants[query.end] = query.end.isoformat()
    return {
        "i": i,
        "merchant_id": query.merchant_id,
        "environment": query.environment,
        "event_type": query.event_type,
        "subjects": list(query.subjects),
        "start_at": start,
        "end_at": end,
    } | _price_columns(query.aggregation, query.value_property, query.rule)


@functools.lru_cache(maxsize=1024)
def _price_columns(aggregation: str, value_property: str | None, rule: RecordRule | None) -> dict[str, Any]:
    """The columns a query row takes from its metric and price, which every invoice on a page shares: parsed
    and formatted once per price, not once per invoice. Callers merge the dict, never change it."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {', '.join(AGGREGATIONS)}")
    row: dict[str, Any] = {"value_path": pg_path(value_property) if value_property is not None else None}
    if rule is not None:
        row |= {
            "factor": _decimal_text(rule.factor),
            "price_path": pg_path(rule.price_path) if rule.price_path is not None else None,
            "price_min": _decimal_text(rule.price_min),
            "price_max": _decimal_text(rule.price_max),
            "amount_min": _decimal_text(rule.amount_min),
            "amount_max": _decimal_text(rule.amount_max),
        }
    return row


def _statement(queries: Sequence[UsageQuery]) -> tuple[str, dict[str, str]]:
    """The UNION ALL of one branch per shape among `queries`, and each branch's jsonb parameter."""
    shapes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    instants: dict[datetime, str] = {}
    for i, query in enumerate(queries):
        row = _query_row(i, query, instants)
        shapes.setdefault((query.aggregation, _rule_kind(query.rule)), []).append(row)
    branches, params = [], {}
    for n, ((aggregation, rule), rows) in enumerate(sorted(shapes.items())):
        branches.append(_branch(aggregation, rule, f"q{n}"))
        params[f"q{n}"] = json.dumps(rows)
    return "\nUNION ALL".join(branches), params


async def period_usages(session: AsyncSession, queries: Sequence[UsageQuery]) -> list[PeriodUsage]:
    """One round trip for many (e.g. every metered price of every invoice on a /v2/invoices page), in the
    order of `queries`. JsonPathError when a metric's or rule's path is outside the supported subset."""
    if not queries:
        return []
    sql, params = _statement(queries)
    rows = await session.execute(text(sql), params)
    usages: list[PeriodUsage | None] = [None] * len(queries)
    # trim_scale in the statement does what _plain does (1.500000000 → 1.5), with no Python pass per value.
    for i, quantity, values, amount, price in rows:
        usages[i] = PeriodUsage(quantity, values, amount, price)
    assert all(u is not None for u in usages)
    return [u for u in usages if u is not None]


async def period_usages_plan(session: AsyncSession, queries: Sequence[UsageQuery]) -> str:
    """EXPLAIN ANALYZE of period_usages for `queries`, for benchmarks and operators: each query row should
    be an index scan of ix_meter_events_lookup."""
    sql, params = _statement(queries)
    return "\n".join(
        row[0] for row in await session.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"), params)
    )


async def period_usage(session: AsyncSession, query: UsageQuery) -> PeriodUsage:
    (usage,) = await period_usages(session, [query])
    return usage


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
