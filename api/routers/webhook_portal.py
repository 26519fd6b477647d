"""The hosted webhook portal (`GET /v0/webhooks/portal`'s magic link): a merchant manages its endpoints and
reads its message log in a browser, without an API key.

The signed token in the path (api/portal_tokens.py) is the only credential: it names one merchant and one
environment, and every read and write goes through db/webhooks.py scoped by that owner, so a link never
shows or changes another merchant's endpoints. Forms post back under the same path (another site cannot
know the token); a post that a browser says came from another site is refused as well. Every change
answers with a redirect to a page (post/redirect/get), and a form the rules refuse comes back with its
fields as typed and the reason beside each, under the same rules as the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api import portal_tokens
from api.app_state import settings_of, wake_webhook_endpoints
from api.deps import Session
from api.pages import webhook_portal as pages
from api.same_site import same_site
from api.wire import iso
from db import webhooks as store
from db.models import Organization
from db.webhook_test_events import add_test_message
from domain.ids import has_prefix, new_id
from domain.webhook_events import EVENT_TYPES
from domain.webhook_urls import url_problem
from integrations.secret_box import SecretBox, SecretUnreadable
from integrations.webhook_signing import new_secret

page_router = APIRouter(prefix="/webhooks/portal/{token}", include_in_schema=False)

# The API's bounds (api/schemas/webhooks.py), so the page refuses exactly what the API refuses.
MAX_DESCRIPTION = 1024
MAX_RATE_LIMIT = 10_000
LOG_SIZE = 25  # messages on the overview
ATTEMPTS_SHOWN = 50


@dataclass(frozen=True)
class Opened:
    owner: store.Owner
    portal: pages.Portal


async def _open(token: str, request: Request, session: AsyncSession) -> Opened | HTMLResponse:
    """The link's owner and page frame, or the page that says why the link opens nothing."""
    key = portal_tokens.signing_key(settings_of(request))
    try:
        claim = portal_tokens.verify_webhooks_portal(token, key)
    except portal_tokens.TokenInvalid:
        return pages.tampered_page()
    except portal_tokens.TokenExpired:
        return pages.expired_page()
    owner = store.Owner(claim.merchant_id, claim.environment)
    app = await store.get_app(session, owner)
    merchant = await session.get(Organization, claim.merchant_id)
    if app is None or merchant is None:
        return pages.not_enabled_page()
    portal = pages.Portal(
        base=f"/webhooks/portal/{token}",
        merchant_name=merchant.name,
        environment=claim.environment,
        webhooks_enabled=app.enabled,
        link_expires_at=claim.expires_at,
    )
    return Opened(owner, portal)


async def _open_form(token: str, request: Request, session: AsyncSession) -> Opened | HTMLResponse:
    """_open for a form's post, which must also come from the portal's own pages."""
    opened = await _open(token, request, session)
    if isinstance(opened, Opened) and not same_site(request):
        return pages.cross_site_page()
    return opened


async def _form(request: Request) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for name, value in parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, []).append(value)
    return fields


def _one(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name)
    return values[0] if values else ""


def _box(request: Request) -> SecretBox:
    return SecretBox(settings_of(request).secret_key.get_secret_value())


def _to(opened: Opened, path: str, done: str, **extra: str) -> RedirectResponse:
    query = "&".join(f"{k}={v}" for k, v in {"done": done, **extra}.items())
    return RedirectResponse(f"{opened.portal.base}{path}?{query}", status_code=303)


# ---- validation: the API's rules, as messages beside the fields ------------------------------------------


def _read_endpoint_form(fields: dict[str, list[str]], environment: str) -> pages.EndpointForm:
    form = pages.EndpointForm(
        url=_one(fields, "url").strip(),
        description=_one(fields, "description"),
        filter_types=list(dict.fromkeys(fields.get("filter", []))),
        rate_limit=_one(fields, "rate_limit").strip(),
    )
    if not form.url:
        form.errors["url"] = "Enter the URL your receiver listens on, e.g. https://example.com/webhooks."
    else:
        problem = url_problem(form.url, environment)
        if problem is not None:
            form.errors["url"] = f"The URL {problem}."
    if len(form.description) > MAX_DESCRIPTION:
        form.errors["description"] = (
            f"The description must be at most {MAX_DESCRIPTION} characters (it has {len(form.description)})."
        )
    elif "\x00" in form.description:
        form.errors["description"] = "The description must not contain NUL characters."
    unknown = [t for t in form.filter_types if t not in EVENT_TYPES]
    if unknown:
        form.errors["filter"] = f"Unknown event type(s): {', '.join(unknown)}."
    if form.rate_limit and not (
        form.rate_limit.isascii()
        and form.rate_limit.isdigit()
        and 1 <= int(form.rate_limit) <= MAX_RATE_LIMIT
    ):
        form.errors["rate_limit"] = (
            f"The rate limit must be a whole number from 1 to {MAX_RATE_LIMIT} messages per second, "
            "or empty for no limit."
        )
    return form


def _changes(form: pages.EndpointForm) -> dict[str, Any]:
    return {
        "url": form.url,
        "description": form.description,
        "filter_types": form.filter_types or None,
        "rate_limit": int(form.rate_limit) if form.rate_limit else None,
    }


# ---- the overview ----------------------------------------------------------------------------------------


@page_router.get("", response_class=HTMLResponse)
async def overview(token: str, request: Request, session: Session, done: str | None = None) -> Response:
    opened = await _open(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    return await _overview(session, opened, pages.EndpointForm(), done=done)


async def _overview(
    session: AsyncSession,
    opened: Opened,
    form: pages.EndpointForm,
    *,
    done: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    endpoints = await store.live_endpoints(session, opened.owner)
    endpoints.sort(key=lambda ep: (ep.created_at, ep.id))
    messages, total = await store.list_messages(session, opened.owner, store.MessageFilter(), LOG_SIZE, 0)
    deliveries = await store.message_deliveries(session, [m.id for m in messages])
    return pages.overview_page(
        opened.portal,
        endpoints,
        messages,
        deliveries,
        EVENT_TYPES,
        form,
        done=done,
        more_messages=total > len(messages),
        status=status,
    )


@page_router.post("/endpoints")
async def add_endpoint(token: str, request: Request, session: Session) -> Response:
    opened = await _open_form(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    form = _read_endpoint_form(await _form(request), opened.owner.environment)
    if form.errors:
        return await _overview(session, opened, form, status=400)
    changes = _changes(form)
    spec = store.EndpointSpec(
        url=changes["url"],
        description=changes["description"],
        filter_types=changes["filter_types"],
        rate_limit=changes["rate_limit"],
    )
    endpoint = await store.create_endpoint(session, opened.owner, _box(request), spec, new_secret())
    return _to(opened, f"/endpoints/{endpoint.id}", "created")


# ---- one endpoint ----------------------------------------------------------------------------------------


@page_router.get("/endpoints/{endpoint_id}", response_class=HTMLResponse)
async def endpoint_page(
    token: str,
    endpoint_id: str,
    request: Request,
    session: Session,
    done: str | None = None,
    message: str | None = None,
) -> Response:
    opened = await _open(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    sent = message if message is not None and has_prefix(message, "outbox_event") else None
    return await _endpoint(request, session, opened, endpoint_id, done=done, sent_message=sent)


async def _endpoint(
    request: Request,
    session: AsyncSession,
    opened: Opened,
    endpoint_id: str,
    *,
    form: pages.EndpointForm | None = None,
    reveal: bool = False,
    done: str | None = None,
    error: str | None = None,
    sent_message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    try:
        endpoint = await store.get_endpoint(session, opened.owner, endpoint_id)
        attempts, _ = await store.list_endpoint_attempts(
            session, opened.owner, endpoint_id, ATTEMPTS_SHOWN, 0
        )
    except store.NotFound:
        return pages.not_found_page("Endpoint")
    current = None
    if reveal:
        try:
            current = _box(request).open(endpoint.secret)
        except SecretUnreadable as exc:
            error, status = f"The secret cannot be shown: {exc}. Rotate it to get a new one.", 409
    secret = pages.SecretView(
        current=current,
        previous_expires_at=endpoint.previous_secret_expires_at if endpoint.previous_secret else None,
    )
    return pages.endpoint_page(
        opened.portal,
        endpoint,
        EVENT_TYPES,
        form or pages.EndpointForm.of(endpoint),
        secret,
        attempts,
        done=done,
        error=error,
        sent_message=sent_message,
        status=status,
    )


@page_router.post("/endpoints/{endpoint_id}")
async def edit_endpoint(token: str, endpoint_id: str, request: Request, session: Session) -> Response:
    opened = await _open_form(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    form = _read_endpoint_form(await _form(request), opened.owner.environment)
    if form.errors:
        return await _endpoint(request, session, opened, endpoint_id, form=form, status=400)
    try:
        endpoint = await store.update_endpoint(session, opened.owner, endpoint_id, _changes(form))
    except store.NotFound:
        return pages.not_found_page("Endpoint")
    await wake_webhook_endpoints(request.app, [endpoint], "endpoint updated")
    return _to(opened, f"/endpoints/{endpoint.id}", "updated")


async def _set_disabled(
    token: str, endpoint_id: str, request: Request, session: AsyncSession, disabled: bool
) -> Response:
    opened = await _open_form(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    try:
        endpoint = await store.update_endpoint(session, opened.owner, endpoint_id, {"disabled": disabled})
    except store.NotFound:
        return pages.not_found_page("Endpoint")
    await wake_webhook_endpoints(
        request.app, [endpoint], "endpoint disabled" if disabled else "endpoint enabled"
    )
    return _to(opened, f"/endpoints/{endpoint.id}", "disabled" if disabled else "enabled")


@page_router.post("/endpoints/{endpoint_id}/disable")
async def disable_endpoint(token: str, endpoint_id: str, request: Request, session: Session) -> Response:
    return await _set_disabled(token, endpoint_id, request, session, True)


@page_router.post("/endpoints/{endpoint_id}/enable")
async def enable_endpoint(token: str, endpoint_id: str, request: Request, session: Session) -> Response:
    return await _set_disabled(token, endpoint_id, request, session, False)


@page_router.post("/endpoints/{endpoint_id}/delete")
async def delete_endpoint(token: str, endpoint_id: str, request: Request, session: Session) -> Response:
    opened = await _open_form(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    try:
        endpoint = await store.delete_endpoint(session, opened.owner, endpoint_id)
    except store.NotFound:
        return pages.not_found_page("Endpoint")
    await wake_webhook_endpoints(request.app, [endpoint], "endpoint deleted")
    return _to(opened, "", "deleted")


@page_router.post("/endpoints/{endpoint_id}/secret", response_class=HTMLResponse)
async def reveal_secret(token: str, endpoint_id: str, request: Request, session: Session) -> Response:
    """The endpoint page with its current secret shown. A post, so the secret never sits behind a URL that
    a browser history or a link preview could open again."""
    opened = await _open_form(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    return await _endpoint(request, session, opened, endpoint_id, reveal=True)


@page_router.post("/endpoints/{endpoint_id}/rotate")
async def rotate_secret(token: str, endpoint_id: str, request: Request, session: Session) -> Response:
    opened = await _open_form(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    now = datetime.now(UTC)
    try:
        endpoint = await store.rotate_secret(
            session, opened.owner, _box(request), endpoint_id, new_secret(), now
        )
    except store.NotFound:
        return pages.not_found_page("Endpoint")
    return _to(opened, f"/endpoints/{endpoint.id}", "rotated")


@page_router.post("/endpoints/{endpoint_id}/test")
async def send_test_event(token: str, endpoint_id: str, request: Request, session: Session) -> Response:
    """A message of the chosen type with the catalog's example data, to this endpoint only."""
    opened = await _open_form(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    event_type = _one(await _form(request), "event_type")
    try:
        endpoint = await store.get_endpoint(session, opened.owner, endpoint_id)
    except store.NotFound:
        return pages.not_found_page("Endpoint")
    refusal = None
    if event_type not in EVENT_TYPES:
        refusal = "Choose one of the listed event types for the test event."
    elif endpoint.disabled:
        refusal = "This endpoint is disabled and receives nothing: enable it, then send the test event."
    elif not opened.portal.webhooks_enabled:
        refusal = "Webhooks are turned off for this merchant: turn them on, then send the test event."
    if refusal is not None:
        return await _endpoint(request, session, opened, endpoint_id, error=refusal, status=400)
    message_id, event_id, now = new_id("outbox_event"), new_id("event"), datetime.now(UTC)
    payload = {
        "eventType": event_type,
        "eventId": event_id,
        "timestamp": iso(now),
        "data": EVENT_TYPES[event_type].example,
    }
    try:
        endpoint = await add_test_message(
            session,
            opened.owner,
            endpoint_id,
            message_id=message_id,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            created_at=now,
        )
    except store.NotFound:
        return pages.not_found_page("Endpoint")
    await wake_webhook_endpoints(request.app, [endpoint], "test event")
    return _to(opened, f"/endpoints/{endpoint.id}", "test_sent", message=message_id)


# ---- one message -----------------------------------------------------------------------------------------


@page_router.get("/messages/{message_id}", response_class=HTMLResponse)
async def message_page(
    token: str, message_id: str, request: Request, session: Session, done: str | None = None
) -> Response:
    opened = await _open(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    try:
        message = await store.get_message(session, opened.owner, message_id)
        attempts, _ = await store.list_message_attempts(session, opened.owner, message_id, ATTEMPTS_SHOWN, 0)
    except store.NotFound:
        return pages.not_found_page("Message")
    deliveries = (await store.message_deliveries(session, [message.id]))[message.id]
    endpoints = await store.live_endpoints(session, opened.owner)
    return pages.message_detail_page(opened.portal, message, deliveries, endpoints, attempts, done=done)


@page_router.post("/messages/{message_id}/resend")
async def resend_message(token: str, message_id: str, request: Request, session: Session) -> Response:
    opened = await _open_form(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    endpoint_id = _one(await _form(request), "endpoint")
    try:
        await store.resend(session, opened.owner, message_id, endpoint_id)
        endpoint = await store.get_endpoint(session, opened.owner, endpoint_id)
    except store.NotFound as exc:
        return pages.not_found_page("Endpoint" if exc.kind == "Webhook endpoint" else "Message")
    await wake_webhook_endpoints(request.app, [endpoint], "resend")
    return _to(opened, f"/messages/{message_id}", "resent")
