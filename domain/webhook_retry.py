"""Webhook delivery timing (D18): the retry schedule, when a failing endpoint is disabled, how a rate limit
spaces requests, and the words the operator view uses for a batch. Pure: callers pass the time in."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

# Delay after each failed attempt of a round: attempt 1 is immediate, attempt 2 follows 5 s after the
# first failure, … attempt 8 10 h after the seventh. After the 8th failure the delivery is `failed`.
DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
ATTEMPTS = len(DELAYS) + 1
DISABLE_AFTER = timedelta(days=5)  # an endpoint whose attempts failed continuously this long is disabled
RATE_LIMIT_WINDOW = 10  # seconds of an endpoint's rate limit one batch may use


def retry_delay(round_attempt: int) -> timedelta | None:
    """How long after the failed `round_attempt`-th attempt (1-based) of a round the next one is due;
    None when that was the last attempt the schedule allows."""
    if round_attempt < 1:
        raise ValueError(f"attempts are numbered from 1, not {round_attempt}")
    return DELAYS[round_attempt - 1] if round_attempt <= len(DELAYS) else None


def is_success(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300


def failing_since(current: datetime | None, attempts: Sequence[tuple[datetime, bool]]) -> datetime | None:
    """The endpoint's `failing_since` after `attempts` ((made at, succeeded), any order): the first failure
    after the last success, or `current` when nothing here succeeded."""
    since = current
    for at, succeeded in sorted(attempts, key=lambda a: a[0]):
        if succeeded:
            since = None
        elif since is None:
            since = at
    return since


def should_disable(since: datetime | None, now: datetime) -> bool:
    return since is not None and now - since >= DISABLE_AFTER


def batch_limit(limit: int, rate_limit: int | None) -> int:
    """Messages one batch may send: `limit`, or what the rate limit allows in RATE_LIMIT_WINDOW seconds."""
    if rate_limit is None:
        return limit
    return max(1, min(limit, rate_limit * RATE_LIMIT_WINDOW))


def spacing(rate_limit: int | None) -> float:
    """Seconds from the start of one request to the start of the next (0: no limit). Requests that far
    apart never exceed rate_limit in any one-second window; the sender measures from when each request
    really started, across batches too."""
    return 0.0 if rate_limit is None else 1 / rate_limit


def duration_words(delay: timedelta) -> str:
    """5 s, 5 min, 2 h, 1 h 30 min: how the operator view says a delay."""
    seconds = max(0, round(delay.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {seconds} s" if seconds else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


def batch_summary(
    messages: int, delivered: int, retries: Sequence[timedelta], failed: int, waiting: int = 0
) -> str:
    """ "100 messages → 97 delivered, 3 retry in 5 min": one batch, for the operator view. `retries` are
    the delays of the attempts that will be retried; `waiting` the claimed messages left for a later batch
    (behind a failed message about the same resource, or past the batch's time budget)."""
    if messages == 0:
        return "nothing due"
    parts = [f"{delivered} delivered"]
    if retries:
        soonest, latest = min(retries), max(retries)
        when = duration_words(soonest)
        parts.append(
            f"{len(retries)} retry in {when}" if soonest == latest else f"{len(retries)} retry from {when}"
        )
    if failed:
        parts.append(f"{failed} failed after {ATTEMPTS} attempts")
    if waiting:
        parts.append(f"{waiting} wait for the next batch")
    noun = "message" if messages == 1 else "messages"
    return f"{messages} {noun} → " + ", ".join(parts)
