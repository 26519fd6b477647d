"""Stripe secret keys a customer connects to a source: their mode (test or live) and what may be shown."""

from __future__ import annotations

import re
from typing import Literal

_KEY_RE = re.compile(r"(sk|rk)_(test|live)_[A-Za-z0-9]+")


def key_mode(key: str) -> Literal["test", "live"]:
    """`test` or `live`; ValueError (never echoing the key) for anything that is not a Stripe secret key."""
    match = _KEY_RE.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise ValueError(
            "is not a Stripe secret key: use a secret key (sk_test_… or sk_live_…) or a restricted key "
            "(rk_test_… or rk_live_…) from the Stripe Dashboard, Developers → API keys"
        )
    return "test" if match.group(2) == "test" else "live"


def last4(key: str) -> str:
    """The last four characters, the only part of a key Accrue ever shows."""
    return key[-4:]
