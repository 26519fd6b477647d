"""Opening a customer portal link: the claim and its subscription, or the page that says why it opens
nothing. Shared by the portal page and its Sources forms."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api import portal_tokens
from api.app_state import settings_of
from api.pages import portal as pages
from db.models import Subscription


async def open_portal(
    token: str, request: Request, session: AsyncSession
) -> tuple[portal_tokens.PortalClaim, Subscription] | HTMLResponse:
    key = portal_tokens.signing_key(settings_of(request))
    try:
        claim = portal_tokens.verify(token, key, datetime.now(UTC))
    except portal_tokens.TokenInvalid:
        return pages.tampered_page()
    except portal_tokens.TokenExpired:
        return pages.expired_page()
    subscription = await session.get(Subscription, claim.subscription_id)
    if (
        subscription is None
        or subscription.merchant_id != claim.merchant_id
        or subscription.environment != claim.environment
    ):
        return pages.missing_page()
    return claim, subscription
