"""Webhooks (D18, behavior §10): SDK 0.6.3's `webhooks` resource (the merchant's configuration and the
portal link) and the extensions for programmatic use (D2, Svix's names): endpoints and their signing
secret, the message log with every attempt, resend and recover, and the event type catalog.

Every write commits before it wakes the endpoints it touched (api/app_state.py): the wake is a nudge, so
a Temporal outage leaves the write standing (logged), and the relay wakes endpoints with pending work each
time its listening activity starts. Nothing here answers 503 for Temporal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.app_state import settings_of, wake_webhook_endpoints
from api.deps import Context, Ctx, Paging
from api.portal_tokens import WEBHOOKS_PORTAL_LIFETIME, issue_webhooks_portal, signing_key
from api.problems import ApiError, invalid
from api.schemas.webhooks import (
    AttemptOut,
    DeliveryOut,
    DeliveryStatus,
    EndpointCreate,
    EndpointOut,
    EndpointUpdate,
    EventTypeName,
    EventTypeOut,
    MessageOut,
    RecoverIn,
    RecoverOut,
    ResendIn,
    SecretOut,
    WebhookPortalOut,
    WebhooksOut,
    WebhooksUpdate,
)
from api.wire import Id, ListResponse, UtcDatetime, changes, iso, list_envelope
from db import webhooks as store
from db.models import WebhookApp
from domain.webhook_events import EVENT_TYPES
from domain.webhook_urls import url_problem
from integrations.secret_box import SecretBox
from integrations.webhook_signing import new_secret

router = APIRouter(prefix="/v0/webhooks", tags=["webhooks"])

MerchantId = Annotated[
    str | None,
    Query(alias="merchantId", description="Your organization's id; omitted: the API key's organization."),
]

NEVER_ENABLED = "Webhooks were never enabled for this merchant in this environment: POST /v0/webhooks first"


def owner(ctx: Ctx, merchant_id: str | None = None) -> store.Owner:
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    return store.Owner(ctx.caller.merchant_id, ctx.caller.environment)


def box(request: Request) -> SecretBox:
    return SecretBox(settings_of(request).secret_key.get_secret_value())


def not_found(exc: store.NotFound) -> ApiError:
    return ApiError(404, str(exc))


# ---- 0.6.3: the merchant's configuration -----------------------------------------------------------------


@router.get("", response_model=WebhooksOut, summary="Get the webhook configuration")
async def get_webhooks(ctx: Context, merchant_id: MerchantId = None) -> WebhooksOut:
    app = await store.get_app(ctx.session, owner(ctx, merchant_id))
    if app is None:
        raise ApiError(404, NEVER_ENABLED)
    return WebhooksOut.of(app)


@router.post("", status_code=201, response_model=WebhooksOut, summary="Enable webhooks")
async def enable_webhooks(ctx: Context, merchant_id: MerchantId = None) -> WebhooksOut:
    """Once per merchant and environment; after that PATCH turns delivery on and off."""
    try:
        app = await store.enable_app(ctx.session, owner(ctx, merchant_id))
    except store.AlreadyEnabled as exc:
        state = "enabled" if exc.app.enabled else "disabled"
        raise ApiError(
            400,
            f"Webhooks are already configured ({exc.app.id}, {state}); "
            "use PATCH /v0/webhooks {enabled} to turn delivery on or off",
            code="DUPLICATE_RESOURCE",
        ) from None
    return WebhooksOut.of(app)


@router.patch("", response_model=WebhooksOut, summary="Turn webhook delivery on or off")
async def update_webhooks(
    body: WebhooksUpdate, request: Request, ctx: Context, merchant_id: MerchantId = None
) -> WebhooksOut:
    return WebhooksOut.of(await switch(request, ctx, owner(ctx, merchant_id), body.enabled))


@router.delete("", status_code=204, summary="Pause webhook delivery")
async def disable_webhooks(request: Request, ctx: Context, merchant_id: MerchantId = None) -> Response:
    """Like PATCH {enabled: false}: endpoints and their settings stay; messages meanwhile are kept and can
    be recovered."""
    await switch(request, ctx, owner(ctx, merchant_id), False)
    return Response(status_code=204)


async def switch(request: Request, ctx: Ctx, who: store.Owner, enabled: bool) -> WebhookApp:
    try:
        app = await store.set_app_enabled(ctx.session, who, enabled)
    except store.NeverEnabled:
        raise ApiError(404, NEVER_ENABLED) from None
    endpoints = await store.live_endpoints(ctx.session, who)
    await wake_webhook_endpoints(request.app, endpoints, "webhooks enabled" if enabled else "webhooks paused")
    return app


@router.get("/portal", response_model=WebhookPortalOut, summary="Get a webhook portal link")
async def get_webhook_portal(
    request: Request, ctx: Context, merchant_id: MerchantId = None
) -> WebhookPortalOut:
    """A magic link to the hosted page for endpoints, secrets and the message log; valid for one hour."""
    who = owner(ctx, merchant_id)
    app = await store.get_app(ctx.session, who)
    if app is None or not app.enabled:
        raise ApiError(
            404,
            NEVER_ENABLED
            if app is None
            else "Webhooks are paused for this merchant: PATCH /v0/webhooks {enabled: true} first",
        )
    settings = settings_of(request)
    expires_at = datetime.now(UTC).replace(microsecond=0) + WEBHOOKS_PORTAL_LIFETIME
    token = issue_webhooks_portal(who.merchant_id, who.environment, expires_at, signing_key(settings))
    return WebhookPortalOut(url=f"{settings.base_url}/webhooks/portal/{token}", expires_at=expires_at)


# ---- endpoints -------------------------------------------------------------------------------------------


def checked_url(url: str, environment: str) -> str:
    problem = url_problem(url, environment)
    if problem is not None:
        raise invalid("url", problem)
    return url


@router.post("/endpoints", status_code=201, response_model=EndpointOut, summary="Create an endpoint")
async def create_endpoint(body: EndpointCreate, request: Request, ctx: Context) -> EndpointOut:
    spec = store.EndpointSpec(
        url=checked_url(body.url, ctx.caller.environment),
        description=body.description,
        filter_types=body.filter_types,
        disabled=body.disabled,
        rate_limit=body.rate_limit,
    )
    try:
        endpoint = await store.create_endpoint(ctx.session, owner(ctx), box(request), spec, new_secret())
    except store.NeverEnabled:
        raise ApiError(
            409,
            "Webhooks are not enabled for this merchant in this environment: "
            "POST /v0/webhooks enables them, then create endpoints",
            code="WEBHOOKS_NOT_ENABLED",
        ) from None
    return EndpointOut.of(endpoint)


@router.get("/endpoints", response_model=ListResponse[EndpointOut], summary="List endpoints")
async def list_endpoints(ctx: Context, page: Paging) -> ListResponse[EndpointOut]:
    rows, total = await store.list_endpoints(ctx.session, owner(ctx), page.limit, page.offset)
    return list_envelope([EndpointOut.of(r) for r in rows], page, total)


@router.get("/endpoints/{id}", response_model=EndpointOut, summary="Get an endpoint")
async def get_endpoint(id: str, ctx: Context) -> EndpointOut:
    try:
        return EndpointOut.of(await store.get_endpoint(ctx.session, owner(ctx), id))
    except store.NotFound as exc:
        raise not_found(exc) from None


@router.patch("/endpoints/{id}", response_model=EndpointOut, summary="Update an endpoint")
async def update_endpoint(id: str, body: EndpointUpdate, request: Request, ctx: Context) -> EndpointOut:
    """`disabled: false` also re-enables an endpoint disabled for failing; its pending messages resume."""
    given = changes(body, nullable=frozenset({"filter_types", "rate_limit"}))
    if "url" in given:
        checked_url(given["url"], ctx.caller.environment)
    try:
        endpoint = await store.update_endpoint(ctx.session, owner(ctx), id, given)
    except store.NotFound as exc:
        raise not_found(exc) from None
    if given:
        await wake_webhook_endpoints(request.app, [endpoint], "endpoint updated")
    return EndpointOut.of(endpoint)


@router.delete("/endpoints/{id}", status_code=204, summary="Delete an endpoint")
async def delete_endpoint(id: str, request: Request, ctx: Context) -> Response:
    """Its message log stays readable through GET /v0/webhooks/messages; the endpoint is gone."""
    try:
        endpoint = await store.delete_endpoint(ctx.session, owner(ctx), id)
    except store.NotFound as exc:
        raise not_found(exc) from None
    await wake_webhook_endpoints(request.app, [endpoint], "endpoint deleted")
    return Response(status_code=204)


@router.get("/endpoints/{id}/secret", response_model=SecretOut, summary="Get an endpoint's signing secret")
async def get_endpoint_secret(id: str, request: Request, ctx: Context) -> SecretOut:
    try:
        return SecretOut(key=await store.read_secret(ctx.session, owner(ctx), box(request), id))
    except store.NotFound as exc:
        raise not_found(exc) from None


@router.post("/endpoints/{id}/secret/rotate", status_code=204, summary="Rotate an endpoint's signing secret")
async def rotate_endpoint_secret(id: str, request: Request, ctx: Context) -> Response:
    """A new secret signs from now on; for 24 hours the old one signs too (both in svix-signature), so
    receivers can switch without rejecting a message. GET …/secret reads the new one."""
    now = datetime.now(UTC)
    try:
        await store.rotate_secret(ctx.session, owner(ctx), box(request), id, new_secret(), now)
    except store.NotFound as exc:
        raise not_found(exc) from None
    return Response(status_code=204)


@router.get(
    "/endpoints/{id}/attempts", response_model=ListResponse[AttemptOut], summary="List an endpoint's attempts"
)
async def list_endpoint_attempts(id: str, ctx: Context, page: Paging) -> ListResponse[AttemptOut]:
    """Newest first."""
    try:
        rows, total = await store.list_endpoint_attempts(ctx.session, owner(ctx), id, page.limit, page.offset)
    except store.NotFound as exc:
        raise not_found(exc) from None
    return list_envelope([AttemptOut.of(r) for r in rows], page, total)


@router.post(
    "/endpoints/{id}/recover", status_code=202, response_model=RecoverOut, summary="Resend failed messages"
)
async def recover_endpoint(id: str, body: RecoverIn, request: Request, ctx: Context) -> RecoverOut:
    """Every message to this endpoint created in [since, until) that failed (or was skipped while the
    endpoint or the merchant's webhooks were disabled) is delivered again, on a fresh retry schedule."""
    until = body.until or datetime.now(UTC)
    if body.since >= until:
        field = "since" if body.until is None else "until"
        raise invalid(field, f"since ({iso(body.since)}) must be before until ({iso(until)})")
    who = owner(ctx)
    try:
        recovered = await store.recover(ctx.session, who, id, body.since, until)
        endpoint = await store.get_endpoint(ctx.session, who, id)
    except store.NotFound as exc:
        raise not_found(exc) from None
    if recovered:
        await wake_webhook_endpoints(request.app, [endpoint], f"recover {recovered} message(s)")
    return RecoverOut(endpoint_id=id, since=body.since, until=until, recovered=recovered)


# ---- messages --------------------------------------------------------------------------------------------


@router.get("/messages", response_model=ListResponse[MessageOut], summary="List messages")
async def list_messages(
    ctx: Context,
    page: Paging,
    event_type: Annotated[EventTypeName | None, Query(alias="eventType")] = None,
    since: Annotated[UtcDatetime | None, Query(description="Created at or after.")] = None,
    until: Annotated[UtcDatetime | None, Query(description="Created before.")] = None,
    endpoint_id: Annotated[Id | None, Query(alias="endpointId")] = None,
    status: Annotated[
        DeliveryStatus | None,
        Query(description="Messages with a delivery in this status (to endpointId when given)."),
    ] = None,
) -> ListResponse[MessageOut]:
    """Newest first, each with where it stands for every endpoint it went to."""
    filters = store.MessageFilter(
        event_type=event_type, since=since, until=until, endpoint_id=endpoint_id, status=status
    )
    try:
        rows, total = await store.list_messages(ctx.session, owner(ctx), filters, page.limit, page.offset)
    except store.NotFound as exc:
        raise not_found(exc) from None
    deliveries = await store.message_deliveries(ctx.session, [r.id for r in rows])
    return list_envelope([MessageOut.of(r, deliveries[r.id]) for r in rows], page, total)


@router.get("/messages/{id}", response_model=MessageOut, summary="Get a message")
async def get_message(id: str, ctx: Context) -> MessageOut:
    try:
        message = await store.get_message(ctx.session, owner(ctx), id)
    except store.NotFound as exc:
        raise not_found(exc) from None
    deliveries = await store.message_deliveries(ctx.session, [message.id])
    return MessageOut.of(message, deliveries[message.id])


@router.get(
    "/messages/{id}/attempts", response_model=ListResponse[AttemptOut], summary="List a message's attempts"
)
async def list_message_attempts(id: str, ctx: Context, page: Paging) -> ListResponse[AttemptOut]:
    """Newest first, to every endpoint."""
    try:
        rows, total = await store.list_message_attempts(ctx.session, owner(ctx), id, page.limit, page.offset)
    except store.NotFound as exc:
        raise not_found(exc) from None
    return list_envelope([AttemptOut.of(r) for r in rows], page, total)


@router.post("/messages/{id}/resend", status_code=202, response_model=DeliveryOut, summary="Resend a message")
async def resend_message(id: str, body: ResendIn, request: Request, ctx: Context) -> DeliveryOut:
    """To one endpoint, at once and on a fresh retry schedule, whatever its delivery's state (also when
    the endpoint's filter left the message out)."""
    who = owner(ctx)
    try:
        delivery = await store.resend(ctx.session, who, id, body.endpoint_id)
        endpoint = await store.get_endpoint(ctx.session, who, body.endpoint_id)
    except store.NotFound as exc:
        raise not_found(exc) from None
    await wake_webhook_endpoints(request.app, [endpoint], f"resend {id}")
    return DeliveryOut.of(delivery)


# ---- event types -----------------------------------------------------------------------------------------


@router.get("/eventTypes", response_model=ListResponse[EventTypeOut], summary="List event types")
async def list_event_types(ctx: Context, page: Paging) -> ListResponse[EventTypeOut]:
    """Every type an endpoint can subscribe to (filterTypes), with an example of its `data`."""
    types = list(EVENT_TYPES.values())
    items = [EventTypeOut.of(t) for t in types[page.offset : page.offset + page.limit]]
    return list_envelope(items, page, len(types))
