from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.webhook_retry import (
    ATTEMPTS,
    batch_limit,
    batch_summary,
    duration_words,
    failing_since,
    retry_delay,
    should_disable,
    spacing,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_schedule_is_d18() -> None:
    """Attempt offsets from the first: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h after the
    previous one; the 8th failure ends the round."""
    assert ATTEMPTS == 8
    delays = [retry_delay(k) for k in range(1, 8)]
    assert delays == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    ]
    assert retry_delay(8) is None
    assert sum(delays, timedelta()) == timedelta(hours=27, minutes=35, seconds=5)  # "≈27.6 h"
    with pytest.raises(ValueError):
        retry_delay(0)


@pytest.mark.parametrize(
    ("current", "attempts", "expected"),
    [
        (None, [], None),
        (None, [(T0, False)], T0),
        (T0, [(T0 + timedelta(hours=1), False)], T0),  # still failing since the first failure
        (T0, [(T0 + timedelta(hours=1), True)], None),  # any success clears it
        # the first failure after the last success, whatever order the attempts come in
        (
            T0,
            [
                (T0 + timedelta(hours=3), False),
                (T0 + timedelta(hours=1), True),
                (T0 + timedelta(hours=2), False),
            ],
            T0 + timedelta(hours=2),
        ),
        (None, [(T0 + timedelta(hours=2), True), (T0 + timedelta(hours=1), False)], None),
    ],
)
def test_failing_since(
    current: datetime | None, attempts: list[tuple[datetime, bool]], expected: datetime | None
) -> None:
    assert failing_since(current, attempts) == expected


def test_disabled_after_five_days_of_failures() -> None:
    assert not should_disable(None, T0)
    assert not should_disable(T0, T0 + timedelta(days=5) - timedelta(seconds=1))
    assert should_disable(T0, T0 + timedelta(days=5))


def test_rate_limit_caps_the_batch_and_spaces_requests() -> None:
    assert batch_limit(100, None) == 100
    assert batch_limit(100, 50) == 100
    assert batch_limit(100, 3) == 30
    assert spacing(None) == 0.0
    assert spacing(4) == 0.25


@pytest.mark.parametrize(
    ("delay", "words"),
    [
        (timedelta(seconds=5), "5 s"),
        (timedelta(minutes=5), "5 min"),
        (timedelta(minutes=5, seconds=5), "5 min 5 s"),
        (timedelta(hours=2), "2 h"),
        (timedelta(hours=1, minutes=30), "1 h 30 min"),
        (timedelta(days=5), "5 d"),
    ],
)
def test_duration_words(delay: timedelta, words: str) -> None:
    assert duration_words(delay) == words


def test_batch_summary() -> None:
    assert batch_summary(0, 0, [], 0) == "nothing due"
    assert batch_summary(1, 1, [], 0) == "1 message → 1 delivered"
    five = timedelta(minutes=5)
    assert batch_summary(100, 97, [five] * 3, 0) == "100 messages → 97 delivered, 3 retry in 5 min"
    assert (
        batch_summary(10, 5, [timedelta(seconds=5), five], 1, waiting=2)
        == "10 messages → 5 delivered, 2 retry from 5 s, 1 failed after 8 attempts, 2 wait for the next batch"
    )
