"""Customer portal links: a signed, expiring claim on one subscription (D20).

A token is `<payload>.<signature>`, both base64url without padding: the payload is compact JSON
`{"sub", "mer", "env", "exp"}` (subscription, merchant, environment, expiry in Unix seconds) and the
signature is HMAC-SHA256 over a version prefix and the encoded payload. Nothing is stored: the key is the
only secret, so rotating `ACCRUE_SECRET_KEY` revokes every link.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from settings import Settings

log = logging.getLogger("accrue.api")

# Domain separation: a signature for anything else Accrue may sign with the same key never verifies here.
_PREFIX = b"accrue-portal-v1."
# Without a configured key, links stay valid for this process's lifetime only (dev and tests).
_PROCESS_KEY = secrets.token_bytes(32)
_warned = False


class TokenInvalid(Exception):
    """Malformed, or not signed with this deployment's key (tampered)."""


class TokenExpired(Exception):
    """Correctly signed, but past its expiry."""


@dataclass(frozen=True)
class PortalClaim:
    subscription_id: str
    merchant_id: str
    environment: str
    expires_at: datetime  # whole seconds, UTC


def signing_key(settings: Settings) -> bytes:
    global _warned
    configured = settings.secret_key.get_secret_value()
    if configured:
        return configured.encode()
    if not _warned:
        _warned = True
        log.warning(
            "ACCRUE_SECRET_KEY is not set: portal links are signed with a per-process key and stop working "
            "when the API restarts (set it in production)"
        )
    return _PROCESS_KEY


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _signature(payload: str, key: bytes) -> bytes:
    return hmac.new(key, _PREFIX + payload.encode("ascii"), hashlib.sha256).digest()


def issue(claim: PortalClaim, key: bytes) -> str:
    body = {
        "sub": claim.subscription_id,
        "mer": claim.merchant_id,
        "env": claim.environment,
        "exp": int(claim.expires_at.timestamp()),
    }
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_b64(_signature(payload, key))}"


def verify(token: str, key: bytes, now: datetime) -> PortalClaim:
    """The claim of a token this deployment signed; TokenInvalid or TokenExpired otherwise."""
    payload, dot, signature = token.partition(".")
    if not dot or not payload.isascii() or not signature.isascii():
        raise TokenInvalid
    try:
        given = _unb64(signature)
    except (ValueError, binascii.Error):
        raise TokenInvalid from None
    if not hmac.compare_digest(given, _signature(payload, key)):
        raise TokenInvalid
    # Only signed payloads get parsed.
    try:
        body = json.loads(_unb64(payload))
        claim = PortalClaim(
            subscription_id=_text(body["sub"]),
            merchant_id=_text(body["mer"]),
            environment=_text(body["env"]),
            expires_at=datetime.fromtimestamp(_seconds(body["exp"]), UTC),
        )
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error):
        raise TokenInvalid from None
    if now >= claim.expires_at:
        raise TokenExpired
    return claim


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _seconds(value: object) -> int:
    if type(value) is not int:
        raise TypeError
    return value
