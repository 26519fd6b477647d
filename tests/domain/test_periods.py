from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.durations import Duration, parse_duration
from domain.periods import add_months, period_bounds, period_index_at, period_start, truncate_to_hour

TICK = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, mins: int = 0, sec: int = 0, us: int = 0) -> datetime:
    return datetime(year, month, day, hour, mins, sec, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "n", "anchor_day", "expected"),
    [
        (utc(2024, 1, 31), 1, 31, utc(2024, 2, 29)),
        (utc(2023, 1, 31), 1, 31, utc(2023, 2, 28)),
        # Clamping is relative to the anchor day: from a clamped Feb date back to the 31st.
        (utc(2024, 2, 29), 1, 31, utc(2024, 3, 31)),
        (utc(2023, 2, 28), 1, 31, utc(2023, 3, 31)),
        (utc(2024, 4, 30), 1, 31, utc(2024, 5, 31)),
        (utc(2024, 2, 29), 1, 30, utc(2024, 3, 30)),
        (utc(2024, 1, 31), 3, 31, utc(2024, 4, 30)),
        (utc(2024, 1, 31, 10, 15, 7), 12, 31, utc(2025, 1, 31, 10, 15, 7)),
        (utc(2024, 12, 31), 1, 31, utc(2025, 1, 31)),
        (utc(2024, 11, 30), 3, 30, utc(2025, 2, 28)),
        (utc(2024, 1, 31), -1, 31, utc(2023, 12, 31)),
        (utc(2024, 3, 31), -1, 31, utc(2024, 2, 29)),
        (utc(2024, 1, 15), 1, 31, utc(2024, 2, 29)),
        (utc(2024, 1, 15), 1, 15, utc(2024, 2, 15)),
        (utc(2024, 1, 15), 0, 15, utc(2024, 1, 15)),
        (utc(2024, 2, 10), 0, 31, utc(2024, 2, 29)),
        (utc(2024, 5, 31), 1, 1, utc(2024, 6, 1)),
        (utc(2024, 6, 15), 120, 15, utc(2034, 6, 15)),
    ],
)
def test_add_months(start: datetime, n: int, anchor_day: int, expected: datetime) -> None:
    assert add_months(start, n, anchor_day) == expected


def test_add_months_chained_with_the_anchor_day_does_not_drift() -> None:
    dates = [utc(2023, 1, 31)]
    for _ in range(12):
        dates.append(add_months(dates[-1], 1, 31))
    assert [d.day for d in dates] == [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31]


@pytest.mark.parametrize("anchor_day", [0, 32, -1])
def test_add_months_rejects_impossible_anchor_days(anchor_day: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 31"):
        add_months(utc(2024, 1, 1), 1, anchor_day)


MONTHLY_FROM_JAN_31_2023 = [
    utc(2023, 1, 31), utc(2023, 2, 28), utc(2023, 3, 31), utc(2023, 4, 30), utc(2023, 5, 31),
    utc(2023, 6, 30), utc(2023, 7, 31), utc(2023, 8, 31), utc(2023, 9, 30), utc(2023, 10, 31),
    utc(2023, 11, 30), utc(2023, 12, 31), utc(2024, 1, 31), utc(2024, 2, 29),
]  # fmt: skip
MONTHLY_FROM_JAN_31_2024 = [
    utc(2024, 1, 31), utc(2024, 2, 29), utc(2024, 3, 31), utc(2024, 4, 30), utc(2024, 5, 31),
    utc(2024, 6, 30), utc(2024, 7, 31), utc(2024, 8, 31), utc(2024, 9, 30), utc(2024, 10, 31),
    utc(2024, 11, 30), utc(2024, 12, 31), utc(2025, 1, 31), utc(2025, 2, 28),
]  # fmt: skip
MONTHLY_FROM_FEB_29_2024 = [
    utc(2024, 2, 29), utc(2024, 3, 29), utc(2024, 4, 29), utc(2024, 5, 29), utc(2024, 6, 29),
    utc(2024, 7, 29), utc(2024, 8, 29), utc(2024, 9, 29), utc(2024, 10, 29), utc(2024, 11, 29),
    utc(2024, 12, 29), utc(2025, 1, 29), utc(2025, 2, 28), utc(2025, 3, 29),
]  # fmt: skip
MONTHLY_FROM_MAR_30_2023_AT_1315 = [
    utc(2023, 3, 30, 13, 15), utc(2023, 4, 30, 13, 15), utc(2023, 5, 30, 13, 15), utc(2023, 6, 30, 13, 15),
    utc(2023, 7, 30, 13, 15), utc(2023, 8, 30, 13, 15), utc(2023, 9, 30, 13, 15), utc(2023, 10, 30, 13, 15),
    utc(2023, 11, 30, 13, 15), utc(2023, 12, 30, 13, 15), utc(2024, 1, 30, 13, 15), utc(2024, 2, 29, 13, 15),
    utc(2024, 3, 30, 13, 15), utc(2024, 4, 30, 13, 15),
]  # fmt: skip
QUARTERLY_FROM_NOV_30_2023 = [
    utc(2023, 11, 30), utc(2024, 2, 29), utc(2024, 5, 30), utc(2024, 8, 30), utc(2024, 11, 30),
    utc(2025, 2, 28), utc(2025, 5, 30), utc(2025, 8, 30), utc(2025, 11, 30),
]  # fmt: skip
YEARLY_FROM_FEB_29_2024 = [
    utc(2024, 2, 29), utc(2025, 2, 28), utc(2026, 2, 28), utc(2027, 2, 28), utc(2028, 2, 29),
    utc(2029, 2, 28), utc(2030, 2, 28),
]  # fmt: skip
DAILY_ACROSS_LEAP_DAY = [
    utc(2024, 2, 27, 10), utc(2024, 2, 28, 10), utc(2024, 2, 29, 10), utc(2024, 3, 1, 10),
    utc(2024, 3, 2, 10),
]  # fmt: skip
WEEKLY_ACROSS_NEW_YEAR = [
    utc(2024, 12, 25), utc(2025, 1, 1), utc(2025, 1, 8), utc(2025, 1, 15), utc(2025, 1, 22),
]  # fmt: skip
HOURLY_ACROSS_MIDNIGHT = [utc(2024, 2, 28, 22), utc(2024, 2, 28, 23), utc(2024, 2, 29), utc(2024, 2, 29, 1)]
# Calendar part first, then exact: each start is anchor + n months (clamped) + n×12 hours.
MIXED_P1MT12H_FROM_JAN_31_2024 = [
    utc(2024, 1, 31), utc(2024, 2, 29, 12), utc(2024, 4, 1), utc(2024, 5, 1, 12), utc(2024, 6, 2),
]  # fmt: skip

SCHEDULES = [
    pytest.param("P1M", MONTHLY_FROM_JAN_31_2023, id="monthly-jan31-2023"),
    pytest.param("P1M", MONTHLY_FROM_JAN_31_2024, id="monthly-jan31-2024-leap"),
    pytest.param("P1M", MONTHLY_FROM_FEB_29_2024, id="monthly-feb29-2024"),
    pytest.param("P1M", MONTHLY_FROM_MAR_30_2023_AT_1315, id="monthly-mar30-time-of-day"),
    pytest.param("P3M", QUARTERLY_FROM_NOV_30_2023, id="quarterly-nov30"),
    pytest.param("P1Y", YEARLY_FROM_FEB_29_2024, id="yearly-feb29"),
    pytest.param("P1D", DAILY_ACROSS_LEAP_DAY, id="daily"),
    pytest.param("P1W", WEEKLY_ACROSS_NEW_YEAR, id="weekly"),
    pytest.param("PT1H", HOURLY_ACROSS_MIDNIGHT, id="hourly"),
    pytest.param("P1MT12H", MIXED_P1MT12H_FROM_JAN_31_2024, id="mixed-month-and-hours"),
]


@pytest.mark.parametrize(("cadence", "starts"), SCHEDULES)
def test_period_bounds_follow_the_anchor(cadence: str, starts: list[datetime]) -> None:
    anchor = starts[0]
    bounds = [period_bounds(anchor, parse_duration(cadence), n) for n in range(len(starts) - 1)]
    assert bounds == list(itertools.pairwise(starts))


@pytest.mark.parametrize(("cadence", "starts"), SCHEDULES)
def test_period_index_at_is_half_open(cadence: str, starts: list[datetime]) -> None:
    anchor, duration = starts[0], parse_duration(cadence)
    for n, (start, end) in enumerate(itertools.pairwise(starts)):
        assert period_index_at(anchor, duration, start) == n
        assert period_index_at(anchor, duration, start + TICK) == n
        assert period_index_at(anchor, duration, end - TICK) == n
        assert period_index_at(anchor, duration, end) == n + 1


def test_thirteen_monthly_periods_from_jan_31_in_a_leap_year_by_day() -> None:
    anchor = utc(2024, 1, 31)
    days = [period_bounds(anchor, Duration(months=1), n)[0].day for n in range(13)]
    assert days == [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31]


def test_yearly_from_feb_29_returns_to_feb_29_in_leap_years() -> None:
    anchor = utc(2024, 2, 29)
    starts = [period_start(anchor, Duration(years=1), n) for n in range(9)]
    assert [(s.year, s.day) for s in starts] == [
        (2024, 29), (2025, 28), (2026, 28), (2027, 28), (2028, 29),
        (2029, 28), (2030, 28), (2031, 28), (2032, 29),
    ]  # fmt: skip


CONTIGUITY_ANCHORS = [
    utc(2023, 1, 31), utc(2024, 1, 31), utc(2024, 2, 29), utc(2023, 8, 31, 23, 59, 59),
    utc(2024, 3, 30, 12), utc(2024, 1, 1), utc(1999, 12, 31, 5),
]  # fmt: skip
CONTIGUITY_CADENCES = ["P1M", "P3M", "P1Y", "P2M", "P6M", "P1D", "P1W", "P2W", "PT24H", "PT1H", "P1M15D"]


@pytest.mark.parametrize("cadence", CONTIGUITY_CADENCES)
@pytest.mark.parametrize("anchor", CONTIGUITY_ANCHORS, ids=lambda a: a.isoformat())
def test_periods_are_contiguous_and_non_empty(anchor: datetime, cadence: str) -> None:
    duration = parse_duration(cadence)
    previous_end = anchor
    for n in range(60):
        start, end = period_bounds(anchor, duration, n)
        assert start == previous_end
        assert start < end
        assert start.tzinfo is UTC and end.tzinfo is UTC
        previous_end = end


@pytest.mark.parametrize("cadence", CONTIGUITY_CADENCES)
@pytest.mark.parametrize("anchor", CONTIGUITY_ANCHORS, ids=lambda a: a.isoformat())
def test_period_index_at_agrees_with_a_linear_scan(anchor: datetime, cadence: str) -> None:
    duration = parse_duration(cadence)
    starts = [period_start(anchor, duration, n) for n in range(80)]
    # Probe every boundary and points between them, and a few odd offsets, over 80 periods.
    for n in range(79):
        for instant in (starts[n], starts[n + 1] - TICK, starts[n] + (starts[n + 1] - starts[n]) / 3):
            assert period_index_at(anchor, duration, instant) == n


@pytest.mark.parametrize(
    ("anchor", "cadence", "instant", "index"),
    [
        (utc(2024, 1, 31), "P1M", utc(2034, 1, 31), 120),
        (utc(2024, 1, 31), "P1M", utc(2034, 1, 31) - TICK, 119),
        (utc(2024, 2, 29), "P1Y", utc(2124, 2, 29), 100),
        (utc(2024, 2, 29), "P1Y", utc(2124, 2, 28, 23, 59, 59), 99),
        (utc(2024, 1, 1), "PT1H", utc(2025, 1, 1), 366 * 24),
        (utc(2024, 1, 1), "P1D", utc(2024, 12, 31, 23, 59), 365),
    ],
)
def test_period_index_at_far_from_the_anchor(
    anchor: datetime, cadence: str, instant: datetime, index: int
) -> None:
    assert period_index_at(anchor, parse_duration(cadence), instant) == index


def test_period_index_at_before_the_anchor_is_an_error() -> None:
    with pytest.raises(ValueError, match="before the first period"):
        period_index_at(utc(2024, 1, 31), Duration(months=1), utc(2024, 1, 31) - TICK)


def test_period_index_at_converts_other_offsets() -> None:
    # 2024-02-29T01:00+02:00 is 2024-02-28T23:00Z: still period 0 of a Jan 31 monthly schedule.
    instant = datetime(2024, 2, 29, 1, tzinfo=timezone(timedelta(hours=2)))
    assert period_index_at(utc(2024, 1, 31), Duration(months=1), instant) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: period_bounds(utc(2024, 1, 1), Duration(), 0), "zero cadence"),
        (lambda: period_index_at(utc(2024, 1, 1), Duration(), utc(2024, 2, 1)), "zero cadence"),
        (lambda: period_bounds(utc(2024, 1, 1), Duration(months=1), -1), "0 or more"),
        (lambda: period_bounds(datetime(2024, 1, 1), Duration(months=1), 0), "has no timezone"),
        (lambda: period_index_at(utc(2024, 1, 1), Duration(days=1), datetime(2024, 2, 1)), "has no timezone"),
        (lambda: add_months(datetime(2024, 1, 1), 1, 1), "has no timezone"),
        (lambda: truncate_to_hour(datetime(2024, 1, 1, 10, 30)), "has no timezone"),
    ],
)
def test_invalid_arguments(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (utc(2024, 1, 31, 10, 45, 12, 999999), utc(2024, 1, 31, 10)),
        (utc(2024, 1, 31, 10), utc(2024, 1, 31, 10)),
        (utc(2024, 1, 31, 23, 59, 59), utc(2024, 1, 31, 23)),
        (utc(2024, 2, 29, 0, 0, 0, 1), utc(2024, 2, 29)),
        # 10:45 at +05:30 is 05:15 UTC: truncation happens on the UTC hour.
        (datetime(2024, 1, 31, 10, 45, tzinfo=timezone(timedelta(hours=5, minutes=30))), utc(2024, 1, 31, 5)),
        (datetime(2024, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), utc(2024, 2, 29, 23)),
    ],
)
def test_truncate_to_hour(value: datetime, expected: datetime) -> None:
    result = truncate_to_hour(value)
    assert result == expected
    assert result.tzinfo is UTC
