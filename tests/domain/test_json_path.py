"""The JSONPath subset a billable metric names values with. What the engine reads at a path, and every
aggregation, is tested against PostgreSQL in tests/db/test_period_usage.py."""

from __future__ import annotations

import pytest

from domain.aggregation import JsonPathError, parse_json_path


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.a", ("a",)),
        ("$.a.b", ("a", "b")),
        ("$['a']", ("a",)),
        ('$["a b"]', ("a b",)),
        ("$.a[0].b", ("a", 0, "b")),
        ("$.a[10][2]", ("a", 10, 2)),
        ("$.inputTokens", ("inputTokens",)),
        ("$.model-name", ("model-name",)),
        ("$['']", ("",)),
    ],
)
def test_parse_json_path(path: str, steps: tuple[str | int, ...]) -> None:
    assert parse_json_path(path) == steps


@pytest.mark.parametrize(
    "path",
    ["", "tokens", ".tokens", "$.", "$..tokens", "$.a[*]", "$.*", "$.a[-1]", "$.a[01]", "$[?(@.a)]",
     "$.a b", "$['a]", "$.a[0", "$ .a", "$.a[1:2]"],
)  # fmt: skip
def test_unsupported_json_path_raises(path: str) -> None:
    with pytest.raises(JsonPathError):
        parse_json_path(path)
