from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain.aggregation import (
    AGGREGATIONS,
    JsonPathError,
    MeterRecord,
    aggregate,
    extract_text,
    extract_value,
    parse_json_path,
)

D = Decimal
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def rec(value: str | None, minutes: int = 0, distinct: str | None = None) -> MeterRecord:
    return MeterRecord(T0 + timedelta(minutes=minutes), None if value is None else D(value), distinct)


# Five records in time order, one without a value; reused across aggregations.
MIXED = [rec("3", 0, "a"), rec("1.5", 1, "b"), rec(None, 2, "a"), rec("-2", 3, None), rec("10", 4, "c")]
NUMERIC_29 = "9" * 20 + ".123456789"


@pytest.mark.parametrize(
    ("aggregation", "records", "expected"),
    [
        # SUM
        ("SUM", [], D(0)),
        ("SUM", [rec(None)], D(0)),
        ("SUM", MIXED, D("12.5")),
        ("SUM", [rec("0.000000001")] * 3, D("0.000000003")),
        # 28+ significant digits: the default decimal context would round this.
        ("SUM", [rec(NUMERIC_29), rec("0.000000001")], D("9" * 20 + ".123456790")),
        ("SUM", [rec("1000000")] * 1000, D("1000000000")),
        # COUNT counts records, whatever their value
        ("COUNT", [], D(0)),
        ("COUNT", MIXED, D(5)),
        ("COUNT", [rec(None), rec(None)], D(2)),
        ("COUNT", [rec("0")], D(1)),
        # AVG over records that have a value
        ("AVG", [], D(0)),
        ("AVG", [rec(None)], D(0)),
        ("AVG", MIXED, D("3.125")),
        ("AVG", [rec("1"), rec("2")], D("1.5")),
        ("AVG", [rec("4")], D("4")),
        # Non-terminating means are rounded half-up to the 9 places storage keeps.
        ("AVG", [rec("1"), rec("1"), rec("2")], D("1.333333333")),
        ("AVG", [rec("2"), rec("2"), rec("1")], D("1.666666667")),
        ("AVG", [rec("-2"), rec("-2"), rec("-1")], D("-1.666666667")),
        # MIN / MAX
        ("MIN", [], D(0)),
        ("MIN", [rec(None)], D(0)),
        ("MIN", MIXED, D("-2")),
        ("MIN", [rec("5"), rec("5.000000001")], D("5")),
        ("MAX", [], D(0)),
        ("MAX", [rec(None)], D(0)),
        ("MAX", MIXED, D("10")),
        ("MAX", [rec("-5"), rec("-4.999999999")], D("-4.999999999")),
        # UNIQUE_COUNT: distinct non-null keys, values irrelevant
        ("UNIQUE_COUNT", [], D(0)),
        ("UNIQUE_COUNT", MIXED, D(3)),
        ("UNIQUE_COUNT", [rec(None, 0, None)], D(0)),
        ("UNIQUE_COUNT", [rec(None, 0, "x"), rec("1", 1, "x"), rec("2", 2, "X")], D(2)),
        ("UNIQUE_COUNT", [rec("1", 0, "")], D(1)),
        # LATEST: greatest timestamp, not last in the sequence
        ("LATEST", [], D(0)),
        ("LATEST", [rec(None)], D(0)),
        ("LATEST", MIXED, D("10")),
        ("LATEST", [rec("7", 5), rec("8", 1), rec("9", 3)], D("7")),
        ("LATEST", [rec("7", 5), rec(None, 9)], D("7")),
        # ties on the timestamp: the later record in the sequence wins
        ("LATEST", [rec("1", 5), rec("2", 5), rec("3", 4)], D("2")),
        ("LATEST", [rec("2", 5), rec("1", 5)], D("1")),
        ("LATEST", [rec("0", 1)], D("0")),
    ],
)
def test_aggregate(aggregation: str, records: list[MeterRecord], expected: Decimal) -> None:
    result = aggregate(aggregation, records)
    assert isinstance(result, Decimal)
    assert result == expected


def test_aggregate_result_keeps_exact_digits() -> None:
    assert str(aggregate("SUM", [rec("0.1"), rec("0.2")])) == "0.3"
    assert str(aggregate("AVG", [rec("0.1"), rec("0.2")])) == "0.15"


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_every_aggregation_is_zero_without_records(aggregation: str) -> None:
    assert aggregate(aggregation, []) == 0


@pytest.mark.parametrize("aggregation", ["sum", "MEDIAN", "", "COUNT "])
def test_unknown_aggregation_is_rejected(aggregation: str) -> None:
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(aggregation, [rec("1")])


EVENT = {
    "tokens": 1200,
    "cost": 0.1,
    "big": 10**30,
    "text": "12.50",
    "neg": "-3",
    "exp": "1e3",
    "word": "twelve",
    "blank": "",
    "flag": True,
    "off": False,
    "nothing": None,
    "inf": float("inf"),
    "nan": float("nan"),
    "usage": {"inputTokens": 7, "nested": {"deep": "0.000000000001"}},
    "items": [{"qty": 2}, {"qty": "3.5"}],
    "list": [1, 2],
    "obj": {"a": 1},
    "dotted.key": 5,
    "with space": 6,
    "dec": Decimal("4.25"),
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.tokens", D(1200)),
        ("$.cost", D("0.1")),  # via str(): 0.1, not 0.1000000000000000055511151231257827
        ("$.big", D(10**30)),
        ("$.text", D("12.50")),
        ("$.neg", D("-3")),
        ("$.usage.inputTokens", D(7)),
        ("$.usage.nested.deep", D("0.000000000001")),
        ("$['tokens']", D(1200)),
        ('$["tokens"]', D(1200)),
        ("$['usage']['inputTokens']", D(7)),
        ("$['dotted.key']", D(5)),
        ("$['with space']", D(6)),
        ("$.items[0].qty", D(2)),
        ("$.items[1].qty", D("3.5")),
        ("$.list[1]", D(2)),
        ("$.dec", D("4.25")),
        # missing
        ("$.absent", None),
        ("$.usage.absent", None),
        ("$.tokens.deeper", None),
        ("$.items[2].qty", None),
        ("$.items.qty", None),
        ("$.usage[0]", None),
        # present but not a number
        ("$.flag", None),
        ("$.off", None),
        ("$.nothing", None),
        ("$.word", None),
        ("$.blank", None),
        ("$.exp", None),
        ("$.inf", None),
        ("$.nan", None),
        ("$.obj", None),
        ("$.list", None),
        ("$", None),
    ],
)
def test_extract_value(path: str, expected: Decimal | None) -> None:
    result = extract_value(EVENT, path)
    assert result == expected
    if expected is not None:
        assert isinstance(result, Decimal)
        assert str(result) == str(expected)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.text", "12.50"),
        ("$.word", "twelve"),
        ("$.blank", ""),
        ("$.tokens", "1200"),
        ("$.cost", "0.1"),
        ("$.flag", "true"),
        ("$.off", "false"),
        ("$.dec", "4.25"),
        ("$.usage.inputTokens", "7"),
        ("$.items[1].qty", "3.5"),
        ("$['dotted.key']", "5"),
        ("$.nothing", None),
        ("$.absent", None),
        ("$.obj", None),
        ("$.list", None),
        ("$", None),
    ],
)
def test_extract_text(path: str, expected: str | None) -> None:
    assert extract_text(EVENT, path) == expected


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
    with pytest.raises(JsonPathError):
        extract_value(EVENT, path)
    with pytest.raises(JsonPathError):
        extract_text(EVENT, path)


def test_extract_from_non_object_data() -> None:
    assert extract_value([1, 2], "$.a") is None
    assert extract_value({"a": [5]}, "$.a[0]") == 5
    assert extract_text("plain", "$.a") is None
