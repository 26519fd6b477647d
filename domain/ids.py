"""Prefixed resource ids: `<prefix>_<base62>`, the format Paygentic uses (`cus_…`, `sub_…`)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DEFAULT_LENGTH = 24

PREFIXES = {
    "organization": "org",
    "user": "usr",
    "api_key": "key",
    "product": "prod",
    "billable_metric": "bm",
    "fee": "fee",
    "price": "price",
    "price_feature": "pf",
    "plan": "plan",
    "feature": "feat",
    "customer": "cus",
    "subscription": "sub",
    "invoice": "inv",
    "line_item": "li",
    "event": "evt",
    "usage_event": "usg",
    "test_clock": "tc",
    "payment_session": "ps",
    "outbox_event": "msg",  # also the webhook message (svix-id) relayed from it
    "webhook_app": "app",
    "webhook_endpoint": "ep",
    "webhook_attempt": "atmpt",
    "source": "src",
    "source_event": "sev",
    "source_installation": "sin",
    "source_rule": "rule",
    "authorization_link": "auth",
    "ledger_account": "acc",
    "ledger_transaction": "txn",
    "entitlement": "com",  # Paygentic's samples name v0 entitlement (commitment) ids com_…
    "dispute": "disp",
    "payment": "pay",  # one-off payments (POST /v0/payments, issue 11)
}
# Paygentic's spec pins test clock ids to exactly 16 characters after the prefix.
LENGTHS = {"tc": 16}

_ID_RE = re.compile(r"([a-z]+)_([A-Za-z0-9]+)")


def new_id(kind: str, choice: Callable[[str], str] = secrets.choice) -> str:
    """A fresh id for `kind` (a key of PREFIXES). Workflows pass their deterministic `choice`."""
    prefix = PREFIXES[kind]
    length = LENGTHS.get(prefix, DEFAULT_LENGTH)
    return f"{prefix}_" + "".join(choice(ALPHABET) for _ in range(length))


def has_prefix(value: str, kind: str) -> bool:
    """True when `value` is shaped like an id of `kind`."""
    # fullmatch: `$` would accept a trailing newline.
    match = _ID_RE.fullmatch(value)
    return match is not None and match.group(1) == PREFIXES[kind]
