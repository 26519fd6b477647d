"""Meter aggregation vocabulary: the aggregations a billable metric may use and the JSONPath subset that
names a value inside an event's data. The aggregation itself runs in PostgreSQL (db/meter_queries.py).
"""

from __future__ import annotations

import re
from functools import lru_cache

AGGREGATIONS = ("SUM", "COUNT", "AVG", "MIN", "MAX", "UNIQUE_COUNT", "LATEST")


class JsonPathError(ValueError):
    """A JSONPath outside the supported subset ($.a, $.a.b, $['a'], $.a[0].b)."""


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
