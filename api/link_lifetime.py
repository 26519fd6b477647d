"""How long a hosted-page link lives when its caller asks with `expiresIn` (an ISO-8601 duration)."""

from __future__ import annotations

from datetime import datetime, timedelta

from api.problems import invalid
from domain.durations import DurationFormatError, add_duration, format_duration, parse_duration


def link_expiry(expires_in: str | None, now: datetime, *, default: str, maximum: str) -> datetime:
    """When the link expires: `expires_in` (or `default`) after now, calendar-aware, at most `maximum`."""
    text = default if expires_in is None else expires_in
    try:
        expires_at = add_duration(now, parse_duration(text))
    except (DurationFormatError, ValueError) as exc:
        raise invalid("expiresIn", str(exc)) from None
    if expires_at - now < timedelta(seconds=1):
        raise invalid("expiresIn", f"{text!r} is too short; give at least PT1S (the default is {default})")
    if expires_at > add_duration(now, parse_duration(maximum)):
        longest = format_duration(parse_duration(maximum))
        raise invalid("expiresIn", f"{text!r} is longer than the maximum of {longest}")
    return expires_at
