"""Billing periods: half-open `[start, end)` intervals laid out from an anchor (D9).

Period n starts at anchor + n×cadence, computed from the anchor in one step and never by chaining period
ends, so a Jan 31 anchor gives Jan 31 → Feb 29 → Mar 31 → Apr 30 instead of drifting to the 29th.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.durations import Duration, add_duration, require_utc, shift_months

# A mean Gregorian month, only to guess an index that is then corrected exactly.
_MEAN_MONTH = timedelta(days=365.2425 / 12)


def add_months(dt: datetime, n: int, anchor_day: int) -> datetime:
    """`dt` moved n months, landing on `anchor_day` or the month's last day when the month is shorter.

    Clamping is relative to the anchor day, not to dt's day, so Feb 28 with anchor day 31 moves to Mar 31.
    """
    return shift_months(require_utc(dt), n, anchor_day)


def truncate_to_hour(dt: datetime) -> datetime:
    """The start of dt's UTC hour: subscriptions anchor on startedAt truncated to the hour (D9)."""
    return require_utc(dt).replace(minute=0, second=0, microsecond=0)


def period_start(anchor: datetime, cadence: Duration, index: int) -> datetime:
    """Start of period `index` (0-based): anchor + index×cadence."""
    _require_cadence(cadence)
    if index < 0:
        raise ValueError(f"period index must be 0 or more, got {index}; periods begin at the anchor")
    return add_duration(require_utc(anchor, "anchor"), cadence.times(index))


def period_bounds(anchor: datetime, cadence: Duration, index: int) -> tuple[datetime, datetime]:
    """`(start, end)` of period `index`; end is exclusive and equals the next period's start."""
    return period_start(anchor, cadence, index), period_start(anchor, cadence, index + 1)


def period_index_at(anchor: datetime, cadence: Duration, instant: datetime) -> int:
    """The index of the period containing `instant`; an instant on a boundary belongs to the later period."""
    anchor = require_utc(anchor, "anchor")
    instant = require_utc(instant, "instant")
    _require_cadence(cadence)
    if instant < anchor:
        raise ValueError(f"{instant.isoformat()} is before the first period, starting {anchor.isoformat()}")
    approx = _MEAN_MONTH * cadence.total_months + cadence.exact
    index = max(0, (instant - anchor) // approx)
    # The guess is off by at most a period or two (month lengths vary); walk to the exact one.
    while index > 0 and period_start(anchor, cadence, index) > instant:
        index -= 1
    while period_start(anchor, cadence, index + 1) <= instant:
        index += 1
    return index


def _require_cadence(cadence: Duration) -> None:
    if cadence.is_zero:
        raise ValueError("a zero cadence (P0D) is one-time and has no recurring periods")
