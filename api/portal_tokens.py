"""Portal links: signed, expiring claims (D20). A customer portal link claims one subscription; a webhook
portal link claims one merchant's webhook endpoints in one environment.

A token is `<payload>.<signature>`, both base64url without padding: the payload is compact JSON
(customer portal `{"sub", "mer", "env", "exp"}`, webhook portal `{"mer", "env", "exp"}`: subscription,
merchant, environment, expiry in Unix seconds) and the signature is HMAC-SHA256 over a prefix naming the
kind of link and its version, then the encoded payload. Nothing is stored: the key is the only secret, so
rotating `ACCRUE_SECRET_KEY` revokes every link.
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
from datetime import UTC, datetime, timedelta

from settings import Settings

log = logging.getLogger("accrue.api")

# Domain separation: a signature for anything else Accrue signs with the same key never verifies as another
# kind of link (a customer portal token never opens the webhook portal, nor the other way round).
_PREFIX = b"accrue-portal-v1."
_WEBHOOKS_PREFIX = b"accrue-webhooks-portal-v1."
_SOURCE_REVIEW_PREFIX = b"accrue-source-review-v1."
_SIGNUP_PREFIX = b"accrue-signup-v1."
# A webhook portal link can reveal signing secrets and change endpoints: it lives an hour, long enough to
# set up an endpoint and watch a test event arrive, short enough that a leaked link soon stops working.
WEBHOOKS_PORTAL_LIFETIME = timedelta(hours=1)
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


@dataclass(frozen=True)
class WebhooksPortalClaim:
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


def _signature(payload: str, key: bytes, prefix: bytes = _PREFIX) -> bytes:
    return hmac.new(key, prefix + payload.encode("ascii"), hashlib.sha256).digest()


def _seal(body: dict[str, object], key: bytes, prefix: bytes) -> str:
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_b64(_signature(payload, key, prefix))}"


def _open(token: str, key: bytes, prefix: bytes) -> dict[str, object]:
    """The payload of a token signed with this key under this prefix; TokenInvalid otherwise."""
    payload, dot, signature = token.partition(".")
    if not dot or not payload.isascii() or not signature.isascii():
        raise TokenInvalid
    try:
        given = _unb64(signature)
    except (ValueError, binascii.Error):
        raise TokenInvalid from None
    if not hmac.compare_digest(given, _signature(payload, key, prefix)):
        raise TokenInvalid
    # Only signed payloads get parsed.
    try:
        body = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        raise TokenInvalid from None
    if not isinstance(body, dict):
        raise TokenInvalid
    return body


def _expiry(value: object) -> datetime:
    return datetime.fromtimestamp(_seconds(value), UTC)


def issue(claim: PortalClaim, key: bytes) -> str:
    body: dict[str, object] = {
        "sub": claim.subscription_id,
        "mer": claim.merchant_id,
        "env": claim.environment,
        "exp": int(claim.expires_at.timestamp()),
    }
    return _seal(body, key, _PREFIX)


def verify(token: str, key: bytes, now: datetime) -> PortalClaim:
    """The claim of a token this deployment signed; TokenInvalid or TokenExpired otherwise."""
    body = _open(token, key, _PREFIX)
    try:
        claim = PortalClaim(
            subscription_id=_text(body["sub"]),
            merchant_id=_text(body["mer"]),
            environment=_text(body["env"]),
            expires_at=_expiry(body["exp"]),
        )
    except (ValueError, KeyError, TypeError, OverflowError):
        raise TokenInvalid from None
    if now >= claim.expires_at:
        raise TokenExpired
    return claim


def issue_webhooks_portal(merchant_id: str, environment: str, expires_at: datetime, key: bytes) -> str:
    """A webhook portal link's token: the merchant's endpoints in that environment, until expires_at
    (whole seconds; a fraction is dropped, so give a rounded-up instant)."""
    body: dict[str, object] = {"mer": merchant_id, "env": environment, "exp": int(expires_at.timestamp())}
    return _seal(body, key, _WEBHOOKS_PREFIX)


def verify_webhooks_portal(token: str, key: bytes, now: datetime | None = None) -> WebhooksPortalClaim:
    """The claim of a webhook portal token this deployment signed, checked against now (wall-clock time
    unless given); TokenInvalid or TokenExpired otherwise."""
    body = _open(token, key, _WEBHOOKS_PREFIX)
    try:
        claim = WebhooksPortalClaim(
            merchant_id=_text(body["mer"]),
            environment=_text(body["env"]),
            expires_at=_expiry(body["exp"]),
        )
    except (ValueError, KeyError, TypeError, OverflowError):
        raise TokenInvalid from None
    if (now or datetime.now(UTC)) >= claim.expires_at:
        raise TokenExpired
    return claim


@dataclass(frozen=True)
class SourceReviewClaim:
    source_id: str
    merchant_id: str
    environment: str
    user_id: str  # who asked for the link: the processedBy of what the page approves or rejects
    expires_at: datetime  # whole seconds, UTC


def issue_source_review(
    source_id: str, merchant_id: str, environment: str, user_id: str, expires_at: datetime, key: bytes
) -> str:
    """A review page link's token: one source's pending events, reviewed on behalf of `user_id`."""
    body: dict[str, object] = {
        "src": source_id,
        "mer": merchant_id,
        "env": environment,
        "usr": user_id,
        "exp": int(expires_at.timestamp()),
    }
    return _seal(body, key, _SOURCE_REVIEW_PREFIX)


def verify_source_review(token: str, key: bytes, now: datetime | None = None) -> SourceReviewClaim:
    """The claim of a review token this deployment signed; TokenInvalid or TokenExpired otherwise."""
    body = _open(token, key, _SOURCE_REVIEW_PREFIX)
    try:
        claim = SourceReviewClaim(
            source_id=_text(body["src"]),
            merchant_id=_text(body["mer"]),
            environment=_text(body["env"]),
            user_id=_text(body["usr"]),
            expires_at=_expiry(body["exp"]),
        )
    except (ValueError, KeyError, TypeError, OverflowError):
        raise TokenInvalid from None
    if (now or datetime.now(UTC)) >= claim.expires_at:
        raise TokenExpired
    return claim


def issue_signup(link_id: str, expires_at: datetime, key: bytes) -> str:
    """A signup (authorization) link's token: it names the link row, which makes it single use."""
    return _seal({"lnk": link_id, "exp": int(expires_at.timestamp())}, key, _SIGNUP_PREFIX)


def verify_signup(token: str, key: bytes, now: datetime | None = None) -> str:
    """The link id of a signup token this deployment signed; TokenInvalid or TokenExpired otherwise."""
    body = _open(token, key, _SIGNUP_PREFIX)
    try:
        link_id, expires_at = _text(body["lnk"]), _expiry(body["exp"])
    except (ValueError, KeyError, TypeError, OverflowError):
        raise TokenInvalid from None
    if (now or datetime.now(UTC)) >= expires_at:
        raise TokenExpired
    return link_id


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _seconds(value: object) -> int:
    if type(value) is not int:
        raise TypeError
    return value
