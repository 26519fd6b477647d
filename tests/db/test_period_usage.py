"""The one aggregation engine (db.meter_queries.period_usages) against real PostgreSQL: every aggregation and
both record rules give exact figures, with the value-reading rules and the window, subject and tenant
filters of a period."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.meter_queries import UsageQuery, period_usage, period_usages
from db.models import MeterEvent
from db.session import session_factory
from domain.aggregation import AGGREGATIONS, JsonPathError
from domain.pricing.base import PeriodUsage, RecordRule

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 2, 1, tzinfo=UTC)
TYPE = "api.call"
SUBJECT = "cus_A"
MISSING = object()  # an event without the value property
_ids = count()

# One event per item: (minute after T0, value at $.v); MISSING leaves $.v out.
Events = Sequence[tuple[int, Any]]
MIXED: Events = [(0, 3), (1, "1.5"), (2, MISSING), (3, -2), (4, 10)]
NUMERIC_29 = "9" * 20 + ".123456789"
NOT_VALUES: Events = [
    (0, "abc"),
    (1, "1e3"),
    (2, True),
    (3, None),
    (4, {"a": 1}),
    (5, [1]),
    (6, ""),
    (7, " 1"),
]


async def insert(
    engine: AsyncEngine,
    merchant: NewMerchant,
    rows: Sequence[tuple[str, datetime, dict[str, Any]]],
    *,
    event_type: str = TYPE,
) -> None:
    """Events in the order given; their ids ascend in that order (LATEST breaks timestamp ties by id)."""
    async with session_factory(engine)() as session:
        for subject, at, data in rows:
            n = next(_ids)
            session.add(
                MeterEvent(
                    id=f"mev_test{n:09d}",
                    merchant_id=merchant.merchant_id,
                    environment=merchant.environment,
                    type=event_type,
                    source="test",
                    subject=subject,
                    data=data,
                    timestamp=at,
                    idempotency_key=f"k{n}",
                )
            )
        await session.commit()


def valued(events: Events, path: str = "v") -> list[tuple[str, datetime, dict[str, Any]]]:
    return [
        (SUBJECT, T0 + timedelta(minutes=m), {} if v is MISSING else {path: v, "price": "0.5"})
        for m, v in events
    ]


def query(merchant: NewMerchant, aggregation: str = "SUM", **overrides: Any) -> UsageQuery:
    base = UsageQuery(
        merchant_id=merchant.merchant_id,
        environment=merchant.environment,
        event_type=TYPE,
        subjects=(SUBJECT,),
        start=T0,
        end=T1,
        aggregation=aggregation,
        value_property="$.v",
    )
    return replace(base, **overrides)


def plain(value: Decimal) -> str:
    """Fixed-point text, so the exact digits are compared (str() would switch to 1E-9)."""
    return format(value, "f")


async def usage(engine: AsyncEngine, q: UsageQuery) -> PeriodUsage:
    async with session_factory(engine)() as session:
        return await period_usage(session, q)


@pytest.mark.parametrize(
    ("aggregation", "events", "expected"),
    [
        ("SUM", [], "0"),
        ("SUM", [(0, MISSING)], "0"),
        ("SUM", MIXED, "12.5"),
        ("SUM", [(0, "0.000000001")] * 3, "0.000000003"),
        # 29 significant digits: a 28-digit decimal context would round this.
        ("SUM", [(0, NUMERIC_29), (1, "0.000000001")], "9" * 20 + ".12345679"),
        ("SUM", [(0, 1_000_000)] * 1000, "1000000000"),
        ("SUM", NOT_VALUES, "0"),
        ("SUM", [(0, 0.1), (1, 0.2)], "0.3"),  # JSON numbers are exact decimals, not binary floats
        ("COUNT", [], "0"),
        ("COUNT", MIXED, "5"),
        ("COUNT", [(0, MISSING), (1, MISSING)], "2"),
        ("COUNT", NOT_VALUES, "8"),  # COUNT counts events, whatever they carry
        ("AVG", [], "0"),
        ("AVG", [(0, MISSING)], "0"),
        ("AVG", MIXED, "3.125"),
        ("AVG", [(0, 1), (1, 2)], "1.5"),
        ("AVG", [(0, 4)], "4"),
        ("AVG", [(0, "0.1"), (1, "0.2")], "0.15"),
        # Non-terminating means are rounded half-up to the 9 places a stored quantity keeps.
        ("AVG", [(0, 1), (1, 1), (2, 2)], "1.333333333"),
        ("AVG", [(0, 2), (1, 2), (2, 1)], "1.666666667"),
        ("AVG", [(0, -2), (1, -2), (2, -1)], "-1.666666667"),
        ("MIN", [], "0"),
        ("MIN", [(0, MISSING)], "0"),
        ("MIN", MIXED, "-2"),
        ("MIN", [(0, 5), (1, "5.000000001")], "5"),
        ("MIN", NOT_VALUES, "0"),
        ("MAX", [], "0"),
        ("MAX", MIXED, "10"),
        ("MAX", [(0, -5), (1, "-4.999999999")], "-4.999999999"),
        # UNIQUE_COUNT: distinct scalar texts at the value property; missing, null and containers don't count
        ("UNIQUE_COUNT", [], "0"),
        ("UNIQUE_COUNT", [(0, "a"), (1, "b"), (2, "a"), (3, MISSING), (4, "c")], "3"),
        ("UNIQUE_COUNT", [(0, "x"), (1, "x"), (2, "X")], "2"),
        ("UNIQUE_COUNT", [(0, "")], "1"),
        ("UNIQUE_COUNT", [(0, None), (1, {"a": 1}), (2, [1])], "0"),
        ("UNIQUE_COUNT", [(0, 1), (1, "1"), (2, True)], "2"),  # the number 1 and the string "1" read alike
        # LATEST: the value of the newest event that has one; ties on the timestamp go to the later event
        ("LATEST", [], "0"),
        ("LATEST", [(0, MISSING)], "0"),
        ("LATEST", MIXED, "10"),
        ("LATEST", [(5, 7), (1, 8), (3, 9)], "7"),
        ("LATEST", [(5, 7), (9, MISSING), (10, "abc")], "7"),
        ("LATEST", [(5, 1), (5, 2), (4, 3)], "2"),
        ("LATEST", [(5, 2), (5, 1)], "1"),
        ("LATEST", [(1, 0)], "0"),
    ],
)
async def test_aggregation(
    engine: AsyncEngine, merchant: NewMerchant, aggregation: str, events: Events, expected: str
) -> None:
    await insert(engine, merchant, valued(events))
    result = await usage(engine, query(merchant, aggregation))
    assert isinstance(result.quantity, Decimal)
    assert plain(result.quantity) == expected
    assert (result.record_amount, result.record_price) == (0, None)  # no rule, no per-record pricing


@pytest.mark.parametrize(
    ("path", "data", "expected"),
    [
        ("$.usage.tokens", {"usage": {"tokens": 7}}, "7"),
        ("$.usage.nested.deep", {"usage": {"nested": {"deep": "0.000000000001"}}}, "0.000000000001"),
        ("$['dotted.key']", {"dotted.key": 5}, "5"),
        ("$['with space']", {"with space": "6"}, "6"),
        ("$.items[1].qty", {"items": [{"qty": 2}, {"qty": "3.5"}]}, "3.5"),
        ("$.items[2].qty", {"items": [{"qty": 2}]}, "0"),
        ("$.tokens.deeper", {"tokens": 3}, "0"),
        ("$.big", {"big": 10**30}, "1" + "0" * 30),
        ("$.neg", {"neg": "-3"}, "-3"),
        ("$.text", {"text": "12.50"}, "12.5"),
    ],
)
async def test_value_paths(
    engine: AsyncEngine, merchant: NewMerchant, path: str, data: dict[str, Any], expected: str
) -> None:
    await insert(engine, merchant, [(SUBJECT, T0, data)])
    assert plain((await usage(engine, query(merchant, value_property=path))).quantity) == expected


async def test_count_needs_no_value_property(engine: AsyncEngine, merchant: NewMerchant) -> None:
    await insert(engine, merchant, valued(MIXED))
    result = await usage(engine, query(merchant, "COUNT", value_property=None))
    assert (result.quantity, result.record_values) == (5, 0)


async def test_window_is_half_open(engine: AsyncEngine, merchant: NewMerchant) -> None:
    await insert(
        engine,
        merchant,
        [
            (SUBJECT, T0, {"v": 1}),  # at start: in
            (SUBJECT, T1 - timedelta(microseconds=1), {"v": 2}),  # last instant: in
            (SUBJECT, T1, {"v": 100}),  # at end: out
            (SUBJECT, T0 - timedelta(microseconds=1), {"v": 1000}),  # before start: out
        ],
    )
    assert (await usage(engine, query(merchant))).quantity == 3
    # The caller applies the metric's eventFrom by moving start; the engine takes start as given.
    later = query(merchant, start=T0 + timedelta(seconds=1))
    assert (await usage(engine, later)).quantity == 2


async def test_subjects_type_and_tenant_filter(
    engine: AsyncEngine, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    await insert(
        engine, merchant, [(SUBJECT, T0, {"v": 1}), ("ext-A", T0, {"v": 2}), ("cus_B", T0, {"v": 4})]
    )
    await insert(engine, merchant, [(SUBJECT, T0, {"v": 8})], event_type="other.type")
    await insert(engine, other_merchant, [(SUBJECT, T0, {"v": 16})])
    assert (await usage(engine, query(merchant))).quantity == 1
    assert (await usage(engine, query(merchant, subjects=(SUBJECT, "ext-A")))).quantity == 3
    assert (await usage(engine, query(merchant, subjects=()))).quantity == 0
    assert (await usage(engine, query(merchant, event_type="other.type"))).quantity == 8
    assert (await usage(engine, query(other_merchant))).quantity == 16


# --- record rules --------------------------------------------------------------------------------------

PERCENTAGE = RecordRule(factor=D("0.029"), amount_min=D("0.30"), amount_max=D("5"))
DYNAMIC = RecordRule(price_path="$.price", price_min=D("0.01"), price_max=D("1"))


def priced(*records: tuple[Any, Any]) -> list[tuple[str, datetime, dict[str, Any]]]:
    """Events with (value at $.v, price at $.price); MISSING leaves the field out."""
    rows = []
    for m, (value, price) in enumerate(records):
        data = {k: v for k, v in (("v", value), ("price", price)) if v is not MISSING}
        rows.append((SUBJECT, T0 + timedelta(minutes=m), data))
    return rows


@pytest.mark.parametrize(
    ("rule", "records", "expected"),
    [
        # percentage: each record's share held to [minCharge, maxCharge]: 0.29 → 0.30, 2.9, 29 → 5
        (PERCENTAGE, [(10, MISSING), (100, MISSING), (1000, MISSING)], ("1110", "8.2", "0.029")),
        # a record without a value is not charged, not even the minimum
        (PERCENTAGE, [(10, MISSING), (MISSING, MISSING), ("abc", MISSING)], ("10", "0.3", "0.029")),
        (PERCENTAGE, [], ("0", "0", None)),
        # no bounds: exact products, no rounding at all
        (
            RecordRule(factor=D("0.000000001")),
            [("0.000000001", MISSING)] * 3,
            ("0.000000003", "0.000000000000000003", "0.000000001"),
        ),
        # dynamic: the price on each event held to [minPrice, maxPrice]; missing or not a number → minPrice
        (
            DYNAMIC,
            [(10, "0.5"), (2, "2"), (3, MISSING), (4, "abc"), (1, 0.001), (MISSING, "0.7")],
            ("20", "7.08", None),
        ),
        (DYNAMIC, [(10, "0.5"), (2, 0.5), (1, "0.50")], ("13", "6.5", "0.5")),  # one shared price
        (DYNAMIC, [(10, "7")], ("10", "10", "1")),  # held to maxPrice, which is then the shared price
        (DYNAMIC, [(10, MISSING)], ("10", "0.1", "0.01")),
        (DYNAMIC, [(10, True), (10, None), (10, "1e3")], ("30", "0.3", "0.01")),
        (DYNAMIC, [], ("0", "0", None)),
        # dynamic with amount bounds too
        (
            replace(DYNAMIC, amount_min=D("1"), amount_max=D("2")),
            [(1, "0.5"), (10, "0.5")],
            ("11", "3", "0.5"),
        ),
    ],
)
async def test_record_rule(
    engine: AsyncEngine,
    merchant: NewMerchant,
    rule: RecordRule,
    records: list[tuple[Any, Any]],
    expected: tuple[str, str, str | None],
) -> None:
    await insert(engine, merchant, priced(*records))
    result = await usage(engine, query(merchant, rule=rule))
    price = None if result.record_price is None else plain(result.record_price)
    assert (plain(result.record_values), plain(result.record_amount), price) == expected
    assert result.quantity == result.record_values  # SUM of the same values


async def test_rule_values_follow_the_metric_aggregation(engine: AsyncEngine, merchant: NewMerchant) -> None:
    await insert(engine, merchant, priced((10, "0.5"), (20, "0.5")))
    result = await usage(engine, query(merchant, "MAX", rule=DYNAMIC))
    assert (result.quantity, result.record_values, result.record_amount) == (20, 30, 15)


# --- batching ------------------------------------------------------------------------------------------


async def test_many_queries_in_one_statement(
    engine: AsyncEngine, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    await insert(engine, merchant, valued(MIXED))
    await insert(engine, other_merchant, valued([(0, 42)]))
    queries = [query(merchant, aggregation) for aggregation in AGGREGATIONS]
    queries += [query(other_merchant), query(merchant, rule=PERCENTAGE), query(merchant, subjects=())]
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    async with session_factory(engine)() as session:
        connection = await session.connection()
        event.listen(connection.sync_connection, "before_cursor_execute", record)
        try:
            results = await period_usages(session, queries)
        finally:
            event.remove(connection.sync_connection, "before_cursor_execute", record)
    assert len(statements) == 1
    quantities = [plain(r.quantity) for r in results]
    assert quantities == ["12.5", "5", "3.125", "-2", "10", "4", "10", "42", "12.5", "0"]
    assert plain(results[-2].record_amount) == "1.2"  # every valued record is held to minCharge 0.30
    async with session_factory(engine)() as session:
        assert await period_usages(session, []) == []


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"aggregation": "MEDIAN"}, ValueError),
        ({"value_property": "$..v"}, JsonPathError),
        ({"rule": RecordRule(price_path="$.a[*]")}, JsonPathError),
    ],
)
async def test_bad_queries_raise(
    engine: AsyncEngine, merchant: NewMerchant, overrides: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await usage(engine, query(merchant, **overrides))
