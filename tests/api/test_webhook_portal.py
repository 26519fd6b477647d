"""The hosted webhook portal: the signed link of `GET /v0/webhooks/portal` and the page it opens."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from api import portal_tokens


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---- tokens -----------------------------------------------------------------------------------------------


def test_webhook_portal_tokens_round_trip_and_reject_what_they_must() -> None:
    key = b"k" * 32
    expires = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    token = portal_tokens.issue_webhooks_portal("org_1", "live", expires, key)
    claim = portal_tokens.verify_webhooks_portal(token, key, expires - timedelta(seconds=1))
    assert claim == portal_tokens.WebhooksPortalClaim("org_1", "live", expires)
    with pytest.raises(portal_tokens.TokenExpired):
        portal_tokens.verify_webhooks_portal(token, key, expires)
    with pytest.raises(portal_tokens.TokenInvalid):
        portal_tokens.verify_webhooks_portal(token, b"x" * 32, expires - timedelta(seconds=1))
    payload, signature = token.split(".")
    for forged in (f"{payload}.", payload, f"{payload}.{signature}.x", "not-a-token", f"{payload}.é"):
        with pytest.raises(portal_tokens.TokenInvalid):
            portal_tokens.verify_webhooks_portal(forged, key, expires - timedelta(days=1))
    # A correctly signed payload of the wrong shape is still refused.
    for body in ({"mer": "m", "env": "live", "exp": "1893499200"}, {"mer": "m"}, [1, 2], "x"):
        payload = _b64(json.dumps(body).encode())
        signature = _b64(portal_tokens._signature(payload, key, portal_tokens._WEBHOOKS_PREFIX))
        with pytest.raises(portal_tokens.TokenInvalid):
            portal_tokens.verify_webhooks_portal(f"{payload}.{signature}", key, expires - timedelta(days=1))


def test_customer_and_webhook_portal_tokens_never_open_each_other() -> None:
    key = b"k" * 32
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    before = expires - timedelta(days=1)
    customer = portal_tokens.issue(portal_tokens.PortalClaim("sub_1", "org_1", "sandbox", expires), key)
    webhooks = portal_tokens.issue_webhooks_portal("org_1", "sandbox", expires, key)
    with pytest.raises(portal_tokens.TokenInvalid):
        portal_tokens.verify_webhooks_portal(customer, key, before)
    with pytest.raises(portal_tokens.TokenInvalid):
        portal_tokens.verify(webhooks, key, before)
    # Not even a webhook payload re-signed as a customer one, with a `sub` added.
    payload = _b64(json.dumps({"sub": "sub_1", "mer": "org_1", "env": "sandbox", "exp": 1893456000}).encode())
    as_customer = f"{payload}.{_b64(portal_tokens._signature(payload, key))}"
    assert portal_tokens.verify(as_customer, key, before).subscription_id == "sub_1"
    with pytest.raises(portal_tokens.TokenInvalid):
        portal_tokens.verify_webhooks_portal(as_customer, key, before)


def test_webhook_portal_tokens_expire_in_wall_clock_time_by_default() -> None:
    key = b"k" * 32
    past = datetime.now(UTC) - timedelta(seconds=1)
    stale = portal_tokens.issue_webhooks_portal("o", "sandbox", past, key)
    with pytest.raises(portal_tokens.TokenExpired):
        portal_tokens.verify_webhooks_portal(stale, key)
    later = datetime.now(UTC) + portal_tokens.WEBHOOKS_PORTAL_LIFETIME
    token = portal_tokens.issue_webhooks_portal("o", "sandbox", later, key)
    assert portal_tokens.verify_webhooks_portal(token, key).merchant_id == "o"
