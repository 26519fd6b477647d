"""What a meter event may carry: the bound that keeps every period's sums, prices and taxes exact.

Quantities and amounts are stored as NUMERIC(38, 9), which holds 29 integer and 9 fraction digits, and are
priced in an 80-digit context that raises rather than rounds. A value past either bound is accepted by the
database's jsonb but makes the period it falls in impossible to bill, so it is refused at ingestion. The
per-event bound leaves headroom for sums: 10^11 events at the largest value still fit in 29 digits.
See docs/decisions.md ("Meter values are bounded at ingestion").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from domain.aggregation import JsonPathError, parse_json_path
from domain.money import MoneyFormatError, parse_decimal

MAX_VALUE_INTEGER_DIGITS = 18  # |value| < 10^18
MAX_VALUE_FRACTION_DIGITS = 9  # nanounit precision, what a stored quantity holds
_LIMIT = Decimal(10) ** MAX_VALUE_INTEGER_DIGITS

LIMIT_TEXT = (
    f"a metered value must be below 10^{MAX_VALUE_INTEGER_DIGITS} in absolute value, "
    f"with at most {MAX_VALUE_FRACTION_DIGITS} decimal places"
)


def non_finite(data: Any, field: str = "data") -> Iterator[str]:
    """The fields of `data` holding NaN or ±Infinity (JSON's 1e400 parses as Infinity): no JSON store can
    hold them, so an event carrying one anywhere is refused, whether or not a metric reads the field."""
    if isinstance(data, float):
        if not math.isfinite(data):
            yield field
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from non_finite(value, f"{field}.{key}")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from non_finite(value, f"{field}[{index}]")


@lru_cache(maxsize=4096)
def _steps(path: str) -> tuple[str | int, ...] | None:
    """None for a path outside the supported subset: the meter refuses to evaluate such a metric (a 400
    on its queries), so there is no value to bound."""
    try:
        return parse_json_path(path)
    except JsonPathError:
        return None


def _at(data: Any, steps: Sequence[str | int]) -> Any:
    node = data
    for step in steps:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return None
        elif not isinstance(node, dict) or step not in node:
            return None
        node = node[step]
    return node


def _as_decimal(node: Any) -> Decimal | None:
    """The value a meter reads at a valueProperty (db/meter_queries: a JSON number or a decimal string)."""
    if isinstance(node, bool):
        return None
    if isinstance(node, int):
        return Decimal(node)
    if isinstance(node, float):
        # The shortest repr is what json encodes, so it is exactly what the database stores.
        return Decimal(repr(node)) if math.isfinite(node) else None
    if isinstance(node, str):
        try:
            return parse_decimal(node, max_fraction_digits=len(node))
        except MoneyFormatError:
            return None
    return None


def out_of_range(value: Decimal) -> bool:
    if abs(value) >= _LIMIT:
        return True
    exponent = value.normalize().as_tuple().exponent
    return isinstance(exponent, int) and -exponent > MAX_VALUE_FRACTION_DIGITS


def value_problems(data: Any, value_paths: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(field, message) for each metric valueProperty in `value_paths` whose value in `data` is a number
    the billing arithmetic cannot hold. A missing or non-numeric value is not a problem here: the meter
    counts such an event but reads no value from it."""
    for path in value_paths:
        steps = _steps(path)
        if steps is None:
            continue
        value = _as_decimal(_at(data, steps))
        if value is not None and out_of_range(value):
            shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:37]}..."
            yield (
                "data" + path[1:],
                f"is {shown}, which valueProperty {path!r} bills; {LIMIT_TEXT} (send large quantities "
                "in a larger unit, or split them over several events)",
            )
