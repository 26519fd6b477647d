"""Meter aggregation: a billable metric's aggregation over one period's records, and value extraction.

Records come from meter events already filtered to the customer, event type and period (D4); this module
only reduces them. Values are exact Decimals; a record whose value could not be read (None) counts for
COUNT only, as if the event had not reported the metric's property.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation
from functools import lru_cache
from typing import Any

from domain.money import MAX_FRACTION_DIGITS, MoneyFormatError, parse_decimal

AGGREGATIONS = ("SUM", "COUNT", "AVG", "MIN", "MAX", "UNIQUE_COUNT", "LATEST")

# Sums of NUMERIC(38, 9) values fit easily in 80 digits; trapping Inexact makes an impossible overflow of
# that bound loud instead of silently rounding money.
_EXACT = Context(prec=80, traps=[InvalidOperation, Inexact])
_DIVIDE = Context(prec=80)
# An average is stored as a period quantity (NUMERIC(38, 9)), so it is rounded to what storage can hold,
# keeping quantity × unit price reproducible from the stored line.
_AVG_QUANTUM = Decimal(1).scaleb(-MAX_FRACTION_DIGITS)


@dataclass(frozen=True, slots=True)
class MeterRecord:
    timestamp: datetime
    value: Decimal | None
    distinct: str | None = None


class JsonPathError(ValueError):
    """A JSONPath outside the supported subset ($.a, $.a.b, $['a'], $.a[0].b)."""


def aggregate(aggregation: str, records: Sequence[MeterRecord]) -> Decimal:
    """The metric's `aggregation` (SUM, COUNT, AVG, MIN, MAX, UNIQUE_COUNT, LATEST) of `records`."""
    reducer = _REDUCERS.get(aggregation)
    if reducer is None:
        raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {', '.join(AGGREGATIONS)}")
    return reducer(records)


def _values(records: Sequence[MeterRecord]) -> list[Decimal]:
    return [r.value for r in records if r.value is not None]


def _sum(records: Sequence[MeterRecord]) -> Decimal:
    return _exact_sum(_values(records))


def _exact_sum(values: Sequence[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = _EXACT.add(total, value)
    return total


def _count(records: Sequence[MeterRecord]) -> Decimal:
    return Decimal(len(records))


def _avg(records: Sequence[MeterRecord]) -> Decimal:
    values = _values(records)
    if not values:
        return Decimal(0)
    mean = _DIVIDE.divide(_exact_sum(values), Decimal(len(values)))
    stored = mean.quantize(_AVG_QUANTUM, rounding=ROUND_HALF_UP, context=_DIVIDE)
    # Keep the natural scale (1.5, not 1.500000000) when nothing is lost.
    return mean if stored == mean else stored


def _min(records: Sequence[MeterRecord]) -> Decimal:
    return min(_values(records), default=Decimal(0))


def _max(records: Sequence[MeterRecord]) -> Decimal:
    return max(_values(records), default=Decimal(0))


def _unique_count(records: Sequence[MeterRecord]) -> Decimal:
    return Decimal(len({r.distinct for r in records if r.distinct is not None}))


def _latest(records: Sequence[MeterRecord]) -> Decimal:
    latest: MeterRecord | None = None
    for record in records:
        # `>=` so that of records sharing a timestamp the later one in the sequence wins.
        if record.value is not None and (latest is None or record.timestamp >= latest.timestamp):
            latest = record
    return latest.value if latest is not None and latest.value is not None else Decimal(0)


_REDUCERS: dict[str, Callable[[Sequence[MeterRecord]], Decimal]] = {
    "SUM": _sum,
    "COUNT": _count,
    "AVG": _avg,
    "MIN": _min,
    "MAX": _max,
    "UNIQUE_COUNT": _unique_count,
    "LATEST": _latest,
}


# --- JSONPath -------------------------------------------------------------------------------------------

_STEP = re.compile(
    # A dot name is any run of characters that carry no JSONPath meaning (no wildcards or filters).
    r"""\.(?P<name>[^.\[\]'"\s*?@():,]+)"""
    r"""|\['(?P<single>[^']*)'\]"""
    r"""|\["(?P<double>[^"]*)"\]"""
    r"""|\[(?P<index>0|[1-9][0-9]*)\]"""
)


@lru_cache(maxsize=1024)
def parse_json_path(json_path: str) -> tuple[str | int, ...]:
    """The steps of a simple JSONPath: object keys (str) and array indexes (int).

    Supports `$`, `.key`, `['key']`, `["key"]` and `[n]`; wildcards, slices, filters and recursive descent
    raise JsonPathError so a metric that cannot be evaluated fails loudly instead of billing zero.
    """
    if not isinstance(json_path, str) or not json_path.startswith("$"):
        raise JsonPathError(f"JSONPath must start with '$' (e.g. '$.tokens'), got {json_path!r}")
    steps: list[str | int] = []
    position = 1
    while position < len(json_path):
        match = _STEP.match(json_path, position)
        if match is None:
            raise JsonPathError(
                f"unsupported JSONPath {json_path!r} at {json_path[position:]!r}: use '$.key', '$.a.b', "
                "\"$['key']\" or '$.list[0].key'"
            )
        if match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(next(g for g in (match["name"], match["single"], match["double"]) if g is not None))
        position = match.end()
    return tuple(steps)


_MISSING = object()


def _resolve(data: Any, json_path: str) -> Any:
    node = data
    for step in parse_json_path(json_path):
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return _MISSING
            node = node[step]
        else:
            if not isinstance(node, dict) or step not in node:
                return _MISSING
            node = node[step]
    return node


def extract_value(data: Any, json_path: str) -> Decimal | None:
    """The number at `json_path` as an exact Decimal; None when missing or not a number.

    Accepts JSON numbers (floats through their shortest repr, never binary expansion) and decimal strings
    such as "12.5"; booleans, null, objects, arrays, non-finite floats and other strings are not numbers.
    """
    node = _resolve(data, json_path)
    if isinstance(node, bool):
        return None
    if isinstance(node, int):
        return Decimal(node)
    if isinstance(node, float):
        return Decimal(str(node)) if math.isfinite(node) else None
    if isinstance(node, Decimal):
        return node if node.is_finite() else None
    if isinstance(node, str):
        try:
            # No fraction limit here: exactness is kept until the invoice rounds.
            return parse_decimal(node, max_fraction_digits=len(node))
        except MoneyFormatError:
            return None
    return None


def extract_text(data: Any, json_path: str) -> str | None:
    """The scalar at `json_path` as text (a groupBy dimension or a distinct key); None when missing, null,
    an object or an array. Numbers and booleans read as their JSON text, as PostgreSQL's `#>>` gives them."""
    node = _resolve(data, json_path)
    if node is _MISSING or node is None or isinstance(node, dict | list):
        return None
    if isinstance(node, str):
        return node
    if isinstance(node, bool | int | float):
        return json.dumps(node)
    if isinstance(node, Decimal):
        return format(node, "f")
    return None
