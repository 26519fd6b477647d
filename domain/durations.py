"""ISO-8601 durations (`P1M`, `P1Y`, `PT24H`, `P0D`): billing cadences, clock advances, expiries.

Only non-negative whole-number components are accepted; years and months are calendar units (added with
month-end clamping), the rest is exact time.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

# The contract's pattern, with every component optional but at least one required (checked separately).
# [0-9] rather than \d: \d also matches non-ASCII digits.
_DURATION_RE = re.compile(
    r"P(?:(?P<years>[0-9]+)Y)?(?:(?P<months>[0-9]+)M)?(?:(?P<weeks>[0-9]+)W)?(?:(?P<days>[0-9]+)D)?"
    r"(?:T(?:(?P<hours>[0-9]+)H)?(?:(?P<minutes>[0-9]+)M)?(?:(?P<seconds>[0-9]+)S)?)?"
)
_FRACTION_RE = re.compile(r"(?<=[0-9])[.,][0-9]+")
_DATE_UNITS = (("years", "Y"), ("months", "M"), ("weeks", "W"), ("days", "D"))
_TIME_UNITS = (("hours", "H"), ("minutes", "M"), ("seconds", "S"))
_EXAMPLES = "like P1M, P3M, P1Y, P7D, PT24H or P1DT12H"


class DurationFormatError(ValueError):
    """Text that is not an ISO-8601 duration Accrue accepts."""


@dataclass(frozen=True)
class Duration:
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            # bool is an int subclass; True months is a bug, not a cadence.
            if type(value) is not int or value < 0:
                raise ValueError(f"duration {field.name} must be a non-negative integer, got {value!r}")

    @property
    def is_zero(self) -> bool:
        """True for `P0D`, the cadence of one-time charges."""
        return not any(getattr(self, field.name) for field in fields(self))

    @property
    def total_months(self) -> int:
        """The calendar part, in months."""
        return self.years * 12 + self.months

    @property
    def exact(self) -> timedelta:
        """The fixed-length part (weeks, days and time)."""
        try:
            return timedelta(
                weeks=self.weeks, days=self.days, hours=self.hours, minutes=self.minutes, seconds=self.seconds
            )
        except OverflowError:
            raise ValueError(f"{format_duration(self)} is longer than any supported time span") from None

    def times(self, n: int) -> Duration:
        """This duration repeated n times (n ≥ 0), so period n can be computed from the anchor in one step."""
        if n < 0:
            raise ValueError(f"cannot repeat a duration {n} times")
        return Duration(**{field.name: getattr(self, field.name) * n for field in fields(self)})

    def __str__(self) -> str:
        return format_duration(self)


def parse_duration(text: str) -> Duration:
    """Parse `P1M`, `P1Y2M3DT4H5M6S`, `P2W`, `P0D`…; DurationFormatError says what is wrong and why."""
    if not isinstance(text, str):
        raise DurationFormatError(f"a duration must be a string {_EXAMPLES}, got {type(text).__name__}")
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise DurationFormatError(_diagnose(text))
    if text.endswith("T"):
        raise DurationFormatError(f"{text!r} has a 'T' with no hours, minutes or seconds after it")
    parts = {name: int(value) for name, value in match.groupdict().items() if value is not None}
    if not parts:
        raise DurationFormatError(f"{text!r} has no components; write it {_EXAMPLES} (P0D for none)")
    return Duration(**parts)


def _diagnose(text: str) -> str:
    """Why `text` failed, naming a sign or a fraction when removing it would make the text valid."""
    if "-" in text and _DURATION_RE.fullmatch(text.replace("-", "")):
        return f"{text!r} is negative; durations must be zero or positive, {_EXAMPLES}"
    if _DURATION_RE.fullmatch(_FRACTION_RE.sub("", text)):
        return f"{text!r} has a fractional component; use whole numbers of a smaller unit (PT90M, not PT1.5H)"
    return f"{text!r} is not an ISO-8601 duration; write it {_EXAMPLES}"


def format_duration(duration: Duration) -> str:
    """Canonical text: zero components omitted, `P0D` for the zero duration; parse_duration round-trips it."""
    date_part = _components(duration, _DATE_UNITS)
    time_part = _components(duration, _TIME_UNITS)
    if not date_part and not time_part:
        return "P0D"
    return "P" + date_part + (f"T{time_part}" if time_part else "")


def _components(duration: Duration, units: tuple[tuple[str, str], ...]) -> str:
    return "".join(f"{getattr(duration, name)}{unit}" for name, unit in units if getattr(duration, name))


def require_utc(dt: datetime, what: str = "datetime") -> datetime:
    """The same instant in UTC; naive datetimes are refused because their instant is a guess."""
    if not isinstance(dt, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} {dt.isoformat()} has no timezone; Accrue's times are timezone-aware UTC")
    return dt.astimezone(UTC)


def shift_months(dt: datetime, n: int, day: int) -> datetime:
    """`dt` moved n calendar months, on `day` of the target month or its last day if shorter."""
    if not 1 <= day <= 31:
        raise ValueError(f"day of month must be between 1 and 31, got {day}")
    month_index = dt.year * 12 + (dt.month - 1) + n
    year, month = divmod(month_index, 12)
    if not 1 <= year <= 9999:
        raise ValueError(f"{dt.isoformat()} moved {n} months is outside the supported years 1-9999")
    last_day = calendar.monthrange(year, month + 1)[1]
    return dt.replace(year=year, month=month + 1, day=min(day, last_day))


def add_duration(dt: datetime, duration: Duration) -> datetime:
    """Calendar months first (clamped to month end relative to dt's day), then exact time. Returns UTC."""
    start = require_utc(dt)
    moved = shift_months(start, duration.total_months, start.day)
    try:
        return moved + duration.exact
    except OverflowError:
        raise ValueError(f"{dt.isoformat()} plus {format_duration(duration)} is out of range") from None
