"""API key format: `sk_test_…` (sandbox) or `sk_live_…` (live); stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets

PREFIXES = {"sandbox": "sk_test_", "live": "sk_live_"}
ENVIRONMENTS = tuple(PREFIXES)
BODY_LENGTH = 40
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def generate_key(environment: str) -> str:
    return PREFIXES[environment] + "".join(secrets.choice(_ALPHABET) for _ in range(BODY_LENGTH))


def hash_key(secret: str) -> str:
    # Keys carry ~238 bits of randomness, so a fast hash suffices: there is no dictionary to guess from.
    return hashlib.sha256(secret.encode()).hexdigest()


def environment_of(secret: str) -> str | None:
    for environment, prefix in PREFIXES.items():
        if secret.startswith(prefix):
            return environment
    return None
