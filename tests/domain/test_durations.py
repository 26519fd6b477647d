from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.durations import Duration, DurationFormatError, add_duration, format_duration, parse_duration


def utc(year: int, month: int, day: int, hour: int = 0, mins: int = 0, sec: int = 0, us: int = 0) -> datetime:
    return datetime(year, month, day, hour, mins, sec, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P1M", Duration(months=1)),
        ("P3M", Duration(months=3)),
        ("P1Y", Duration(years=1)),
        ("P0D", Duration()),
        ("P2W", Duration(weeks=2)),
        ("P7D", Duration(days=7)),
        ("PT24H", Duration(hours=24)),
        ("P1DT12H", Duration(days=1, hours=12)),
        ("PT30M", Duration(minutes=30)),
        ("PT10M", Duration(minutes=10)),
        ("PT45S", Duration(seconds=45)),
        ("P1Y2M3DT4H5M6S", Duration(years=1, months=2, days=3, hours=4, minutes=5, seconds=6)),
        ("P1Y2M3W4DT5H6M7S", Duration(1, 2, 3, 4, 5, 6, 7)),
        ("P1W2D", Duration(weeks=1, days=2)),
        ("P1MT1M", Duration(months=1, minutes=1)),
        ("P0Y", Duration()),
        ("PT0S", Duration()),
        ("P01M", Duration(months=1)),
        ("P100Y", Duration(years=100)),
        ("PT90M", Duration(minutes=90)),
    ],
)
def test_parse_accepts(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("P", "has no components"),
        ("PT", "'T' with no hours, minutes or seconds"),
        ("P1DT", "'T' with no hours, minutes or seconds"),
        ("P1MT", "'T' with no hours, minutes or seconds"),
        ("", "is not an ISO-8601 duration"),
        ("-P1M", "is negative"),
        ("P-1M", "is negative"),
        ("PT-5H", "is negative"),
        ("P1.5M", "fractional component"),
        ("PT0.5H", "fractional component"),
        ("PT0,5H", "fractional component"),
        ("P1Y0.5M", "fractional component"),
        ("p1m", "is not an ISO-8601 duration"),
        ("1M", "is not an ISO-8601 duration"),
        ("P1H", "is not an ISO-8601 duration"),
        ("PT1D", "is not an ISO-8601 duration"),
        ("P1M1Y", "is not an ISO-8601 duration"),
        ("P1D1W", "is not an ISO-8601 duration"),
        ("P1M2M", "is not an ISO-8601 duration"),
        ("PM", "is not an ISO-8601 duration"),
        (" P1M", "is not an ISO-8601 duration"),
        ("P1M ", "is not an ISO-8601 duration"),
        ("P1M\n", "is not an ISO-8601 duration"),
        ("P１M", "is not an ISO-8601 duration"),  # fullwidth digit
        ("P1E2D", "is not an ISO-8601 duration"),
        ("monthly", "is not an ISO-8601 duration"),
        ("2024-01-01", "is not an ISO-8601 duration"),
        ("R5/P1M", "is not an ISO-8601 duration"),
    ],
)
def test_parse_rejects_with_clear_message(text: str, message: str) -> None:
    with pytest.raises(DurationFormatError, match=message) as caught:
        parse_duration(text)
    assert isinstance(caught.value, ValueError)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("value", [None, 1, 1.5, b"P1M"])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(DurationFormatError, match="must be a string"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (Duration(), "P0D"),
        (Duration(months=1), "P1M"),
        (Duration(years=1), "P1Y"),
        (Duration(weeks=2), "P2W"),
        (Duration(hours=24), "PT24H"),
        (Duration(days=1, hours=12), "P1DT12H"),
        (Duration(minutes=30), "PT30M"),
        (Duration(seconds=1), "PT1S"),
        (Duration(months=1, minutes=1), "P1MT1M"),
        (Duration(1, 2, 3, 4, 5, 6, 7), "P1Y2M3W4DT5H6M7S"),
        (Duration(years=2, seconds=3), "P2YT3S"),
    ],
)
def test_format_is_canonical_and_round_trips(duration: Duration, text: str) -> None:
    assert format_duration(duration) == text
    assert str(duration) == text
    assert parse_duration(text) == duration


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("PT0S", "P0D"), ("P0Y0M", "P0D"), ("P01M", "P1M"), ("P0Y3M", "P3M"), ("P1DT0H", "P1D")],
)
def test_format_normalises_equivalent_spellings(text: str, canonical: str) -> None:
    assert format_duration(parse_duration(text)) == canonical


@pytest.mark.parametrize(
    ("duration", "is_zero"),
    [
        (Duration(), True),
        (parse_duration("P0D"), True),
        (parse_duration("PT0S"), True),
        (Duration(seconds=1), False),
        (Duration(months=1), False),
        (Duration(weeks=1), False),
        (Duration(years=1), False),
    ],
)
def test_is_zero(duration: Duration, is_zero: bool) -> None:
    assert duration.is_zero is is_zero


@pytest.mark.parametrize(
    ("duration", "months", "exact"),
    [
        (Duration(years=1, months=2), 14, timedelta(0)),
        (Duration(weeks=1, days=1, hours=1, minutes=1, seconds=1), 0, timedelta(days=8, seconds=3661)),
        (Duration(years=2, hours=36), 24, timedelta(hours=36)),
    ],
)
def test_calendar_and_exact_parts(duration: Duration, months: int, exact: timedelta) -> None:
    assert duration.total_months == months
    assert duration.exact == exact


@pytest.mark.parametrize(
    "kwargs",
    [{"months": -1}, {"days": -3}, {"hours": 1.5}, {"years": True}, {"seconds": "1"}],
)
def test_duration_rejects_invalid_components(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be a non-negative integer"):
        Duration(**kwargs)  # type: ignore[arg-type]


def test_duration_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Duration(months=1).months = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("duration", "n", "expected"),
    [
        (Duration(months=1), 0, Duration()),
        (Duration(months=1), 13, Duration(months=13)),
        (Duration(years=1, days=2, hours=3), 4, Duration(years=4, days=8, hours=12)),
    ],
)
def test_times(duration: Duration, n: int, expected: Duration) -> None:
    assert duration.times(n) == expected


def test_times_rejects_negative() -> None:
    with pytest.raises(ValueError, match="cannot repeat"):
        Duration(months=1).times(-1)


@pytest.mark.parametrize(
    ("start", "text", "expected"),
    [
        (utc(2024, 1, 31), "P1M", utc(2024, 2, 29)),  # leap year clamp
        (utc(2023, 1, 31), "P1M", utc(2023, 2, 28)),
        (utc(2024, 1, 31), "P2M", utc(2024, 3, 31)),  # from the start's day, not via Feb 29
        (utc(2024, 3, 31), "P1M", utc(2024, 4, 30)),
        (utc(2024, 1, 15, 10, 30), "P1M", utc(2024, 2, 15, 10, 30)),
        (utc(2024, 11, 30), "P3M", utc(2025, 2, 28)),
        (utc(2024, 12, 31), "P1M", utc(2025, 1, 31)),  # year rollover
        (utc(2024, 2, 29), "P1Y", utc(2025, 2, 28)),
        (utc(2024, 2, 29), "P4Y", utc(2028, 2, 29)),
        (utc(2024, 1, 1), "P0D", utc(2024, 1, 1)),
        (utc(2024, 1, 1), "P2W", utc(2024, 1, 15)),
        (utc(2024, 1, 1), "PT24H", utc(2024, 1, 2)),
        (utc(2024, 1, 1), "P1DT12H", utc(2024, 1, 2, 12)),
        (utc(2024, 1, 1, 23, 45), "PT30M", utc(2024, 1, 2, 0, 15)),
        (utc(2024, 2, 28), "P1D", utc(2024, 2, 29)),
        (utc(2023, 2, 28), "P1D", utc(2023, 3, 1)),
        # Calendar part first, then exact: Jan 31 + 1 month = Feb 29, + 1 day = Mar 1.
        (utc(2024, 1, 31), "P1M1D", utc(2024, 3, 1)),
        (utc(2024, 1, 31, 12), "P1MT12H", utc(2024, 3, 1)),
    ],
)
def test_add_duration(start: datetime, text: str, expected: datetime) -> None:
    result = add_duration(start, parse_duration(text))
    assert result == expected
    assert result.tzinfo is UTC


def test_add_duration_converts_other_offsets_to_utc() -> None:
    # 23:00 at UTC-2 on Jan 31 is 01:00 UTC on Feb 1; months are counted in UTC.
    start = datetime(2024, 1, 31, 23, tzinfo=timezone(timedelta(hours=-2)))
    result = add_duration(start, Duration(months=1))
    assert result == utc(2024, 3, 1, 1)
    assert result.utcoffset() == timedelta(0)


def test_add_duration_rejects_naive() -> None:
    with pytest.raises(ValueError, match="has no timezone"):
        add_duration(datetime(2024, 1, 1), Duration(days=1))


@pytest.mark.parametrize("duration", [Duration(years=9000), Duration(days=10**7), Duration(weeks=10**18)])
def test_add_duration_out_of_range_is_a_value_error(duration: Duration) -> None:
    with pytest.raises(ValueError, match=r"out of range|outside the supported|longer than"):
        add_duration(utc(2024, 1, 1), duration)
