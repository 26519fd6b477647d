"""Svix-style webhook signatures (D18), verifiable by the `svix` and `standardwebhooks` libraries.

Signed content is `{svix-id}.{svix-timestamp}.{raw body}`; the MAC is HMAC-SHA256 keyed with the
base64-decoded part of `whsec_<base64>`; the header lists `v1,<base64 mac>` once per live secret, space
separated, so receivers keep verifying while a rotated secret overlaps the new one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature(secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    content = f"{message_id}.{timestamp}.".encode() + body
    macs = (hmac.new(_key(s), content, hashlib.sha256).digest() for s in secrets_)
    return " ".join("v1," + base64.b64encode(mac).decode() for mac in macs)


def headers(secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "svix-id": message_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": signature(secrets_, message_id, timestamp, body),
    }
