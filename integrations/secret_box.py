"""Secrets at rest (webhook signing secrets; later customers' Stripe keys): Fernet, keyed from settings.

The key is derived from ACCRUE_SECRET_KEY with HKDF, so one setting protects portal links and stored
secrets alike. Without that setting every process derives the same public development key (and logs a
warning at startup), so the API and the worker of a development stack can read each other's rows; a
production deployment sets it (docs/settings.md)."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DEVELOPMENT_KEY = "accrue-development-key: set ACCRUE_SECRET_KEY in production"


def startup_warning(secret_key: str) -> str | None:
    """What the API and the worker log at start when stored secrets would be sealed with the public key."""
    if secret_key:
        return None
    return (
        "ACCRUE_SECRET_KEY is not set: stored secrets are sealed with the public development key "
        "(set it in production)"
    )


class SecretUnreadable(ValueError):
    """A stored secret was sealed under another key (ACCRUE_SECRET_KEY changed)."""


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        material = (secret_key or DEVELOPMENT_KEY).encode()
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"accrue secrets at rest v1")
        self._fernet = Fernet(base64.urlsafe_b64encode(derived.derive(material)))
        self.development = not secret_key

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a stored secret cannot be decrypted: ACCRUE_SECRET_KEY is not the one it was sealed with"
            ) from None
