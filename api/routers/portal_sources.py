"""The customer portal's Sources forms: connect a Stripe account to one of the plan's sources, or
disconnect it — through the same services as the API (api/source_connect.py, api/source_disconnect.py).
The portal link's token is the credential; each form answers with a redirect to the portal
(post/redirect/get) saying what happened."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.app_state import settings_of
from api.deps import Session
from api.pages import portal as pages
from api.portal_access import open_portal
from api.problems import ApiError, FieldErrors
from api.same_site import same_site
from api.source_connect import connect
from api.source_disconnect import disconnect
from api.source_temporal import lazy_client
from db.models import Source, SourceInstallation

page_router = APIRouter(prefix="/portal/{token}", include_in_schema=False)

_SAID = {
    "active": "Connected: Accrue now imports your paid Stripe invoices.",
    "pending": "Connecting: the key is being checked; reload this page in a moment.",
}


def _back(token: str, notice: str, failed: bool) -> RedirectResponse:
    query = urlencode({"notice": notice[:1500], "failed": int(failed)})
    return RedirectResponse(f"/portal/{token}?{query}", status_code=303)


def _reason(exc: ApiError) -> str:
    if isinstance(exc, FieldErrors):
        return "; ".join(
            f"The key {e['message']}" if e["field"] == "stripeSecretKey" else e["message"] for e in exc.errors
        )
    return exc.message


@page_router.post("/sources/{source_id}/connect", response_class=HTMLResponse)
async def connect_source(token: str, source_id: str, request: Request, session: Session) -> Response:
    opened = await open_portal(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    if not same_site(request):
        return pages.tampered_page()
    claim, sub = opened
    source = await session.get(Source, source_id)
    if source is None or source.plan_id != sub.plan_id or not source.enabled:
        return _back(token, "This source is not part of your plan.", True)
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    key = form.get("stripeSecretKey", "").strip()
    try:
        row = await connect(
            session,
            settings_of(request),
            lazy_client(request.app, "connect the Stripe account"),
            merchant_id=claim.merchant_id,
            environment=claim.environment,
            source=source,
            subscription_id=sub.id,
            stripe_secret_key=key,
        )
    except ApiError as exc:
        return _back(token, _reason(exc), True)
    if row.status == "error":
        return _back(token, f"Stripe did not accept the key: {row.error_message}", True)
    return _back(token, _SAID.get(row.status, row.status), False)


@page_router.post("/installations/{installation_id}/disconnect", response_class=HTMLResponse)
async def disconnect_source(token: str, installation_id: str, request: Request, session: Session) -> Response:
    opened = await open_portal(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    if not same_site(request):
        return pages.tampered_page()
    _, sub = opened
    row = await session.get(SourceInstallation, installation_id)
    if row is None or row.subscription_id != sub.id:
        return _back(token, "This connection is not one of your subscription's.", True)
    try:
        row = await disconnect(session, lazy_client(request.app, "disconnect the source"), row)
    except ApiError as exc:
        return _back(token, exc.message, True)
    return _back(token, "Disconnected: Accrue no longer reads your Stripe account.", False)
