"""Signup (authorization) links, seed 000 "Generate Customer Authorization Links" (an extension: behavior
§4.4's older API was `POST /v0/customers/authorization`, absent from SDK 0.1.34):
`POST /v0/plans/{id}/authorizationLinks` hands out a single-use, expiring link; the page behind it signs a
customer up for the plan — the customer and the subscription exactly as `POST /v0/subscriptions` with an
inline customer makes them — then sends them through the checkout when Invoice 0 is due, and on to their
portal, whose Sources section connects their Stripe account.

A link is claimed (pending → completed) before anything is created, so two submissions of one link can never
make two customers; a signup that then fails gives the claim back, changes nothing else, and is reported as
`customer.creation_failed.v0`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import Strict, ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api import portal_tokens
from api.app_state import settings_of
from api.auth import Caller
from api.deps import Context, Ctx, Session
from api.link_lifetime import link_expiry
from api.pages import signup as pages
from api.problems import ApiError, FieldErrors, forbidden, not_found
from api.same_site import same_site
from api.schemas.customers import CustomerOut
from api.schemas.subscriptions import InlineCustomer, RedirectUrls, SubscriptionCreate
from api.subscription_create import create
from api.wire import Timestamp, WireModel, iso
from db import outbox
from db.models import (
    AuthorizationLink,
    Customer,
    Organization,
    PaymentSession,
    Plan,
    Source,
    Subscription,
    TestClock,
)
from db.subscriptions import view_rows
from domain.ids import new_id

router = APIRouter(prefix="/v0/plans", tags=["plans"])
page_router = APIRouter(prefix="/authorize/{token}", include_in_schema=False)

DEFAULT_EXPIRES_IN = "P7D"
MAX_EXPIRES_IN = "P30D"
PORTAL_LIFETIME = timedelta(days=1)  # the portal link a completed signup lands on
_FIELDS = {"name": "name", "email": "email", "address.country": "country", "address.zipCode": "zipCode"}


class AuthorizationLinkCreate(WireModel):
    email: Annotated[str, Strict()] | None = None  # pre-fills the page's form
    redirect_url: Annotated[str, Strict()] | None = None  # where the customer goes once signed up
    expires_in: Annotated[str, Strict()] | None = None
    test_clock_id: Annotated[str, Strict()] | None = None  # sandbox: the subscription lives on this clock


class AuthorizationLinkOut(WireModel):
    object: Literal["authorizationLink"] = "authorizationLink"
    id: str
    url: str
    status: str
    plan_id: str
    email: str | None
    redirect_url: str | None
    customer_id: str | None
    subscription_id: str | None
    test_clock_id: str | None
    expires_at: Timestamp
    completed_at: Timestamp | None
    created_at: Timestamp


def _out(row: AuthorizationLink, url: str) -> AuthorizationLinkOut:
    status = "expired" if row.status == "pending" and row.expires_at <= datetime.now(UTC) else row.status
    return AuthorizationLinkOut(
        id=row.id,
        url=url,
        status=status,
        plan_id=row.plan_id,
        email=row.email,
        redirect_url=row.redirect_url,
        customer_id=row.customer_id,
        subscription_id=row.subscription_id,
        test_clock_id=row.test_clock_id,
        expires_at=row.expires_at,
        completed_at=row.completed_at,
        created_at=row.created_at,
    )


def _url(request: Request, row: AuthorizationLink) -> str:
    settings = settings_of(request)
    token = portal_tokens.issue_signup(row.id, row.expires_at, portal_tokens.signing_key(settings))
    return f"{settings.base_url}/authorize/{token}"


def _checked(body: AuthorizationLinkCreate) -> None:
    errors: list[dict[str, str]] = []
    if body.email is not None:
        try:
            InlineCustomer.model_validate({"name": "x", "email": body.email, "address": {}})
        except ValidationError:
            errors.append({"field": "email", "message": "is not an email address", "code": "invalid"})
    if body.redirect_url is not None:
        try:
            RedirectUrls.model_validate({"onSuccess": body.redirect_url})
        except ValidationError:
            errors.append({"field": "redirectUrl", "message": "must be an http(s) URL", "code": "invalid"})
    if errors:
        raise FieldErrors(errors)


@router.post("/{id}/authorizationLinks", status_code=201, response_model=AuthorizationLinkOut)
async def create_authorization_link(
    id: str, ctx: Context, request: Request, body: Annotated[AuthorizationLinkCreate | None, Body()] = None
) -> AuthorizationLinkOut:
    """A unique, single-use signup link for one customer: the page subscribes them to this plan (and, for
    a plan with revenue sources, connects their Stripe account). Valid for `expiresIn` (ISO-8601, default
    P7D, at most P30D)."""
    body = body or AuthorizationLinkCreate()
    plan = await ctx.owned(Plan, id, "Plan")
    if plan.deleted_at is not None:
        raise not_found("Plan", id)
    _checked(body)
    if body.test_clock_id is not None:
        if ctx.caller.environment != "sandbox":
            raise forbidden("Test clocks exist only in the sandbox environment (sk_test_ keys)")
        clock = await ctx.owned(TestClock, body.test_clock_id, "Test clock")
        if clock.deleted_at is not None:
            raise not_found("Test clock", body.test_clock_id)
    now = datetime.now(UTC)
    expires_at = link_expiry(body.expires_in, now, default=DEFAULT_EXPIRES_IN, maximum=MAX_EXPIRES_IN)
    row = AuthorizationLink(
        id=new_id("authorization_link"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        plan_id=plan.id,
        status="pending",
        email=body.email,
        redirect_url=body.redirect_url,
        test_clock_id=body.test_clock_id,
        expires_at=expires_at.replace(microsecond=0),
    )
    ctx.session.add(row)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return _out(row, _url(request, row))


@router.get("/{id}/authorizationLinks/{linkId}", response_model=AuthorizationLinkOut)
async def get_authorization_link(
    id: str, linkId: str, ctx: Context, request: Request
) -> AuthorizationLinkOut:
    row = await ctx.owned(AuthorizationLink, linkId, "Authorization link")
    if row.plan_id != id:
        raise not_found("Authorization link", linkId)
    return _out(row, _url(request, row))


# ---- the page ---------------------------------------------------------------------------------------------


async def _open(token: str, request: Request, session: AsyncSession) -> AuthorizationLink | HTMLResponse:
    try:
        link_id = portal_tokens.verify_signup(token, portal_tokens.signing_key(settings_of(request)))
    except portal_tokens.TokenInvalid:
        return pages.tampered_page()
    except portal_tokens.TokenExpired:
        return pages.expired_page()
    link = await session.get(AuthorizationLink, link_id)
    if link is None:
        return pages.tampered_page()
    if link.status == "completed":
        return pages.used_page()
    if link.status == "expired" or link.expires_at <= datetime.now(UTC):
        return pages.expired_page()
    return link


async def _view(
    session: AsyncSession, token: str, link: AuthorizationLink, **extra: object
) -> pages.SignupView | HTMLResponse:
    plan = await session.get(Plan, link.plan_id)
    if plan is None or plan.deleted_at is not None:
        return pages.unavailable_page()
    merchant = await session.get_one(Organization, link.merchant_id)
    sources = await session.scalar(
        select(func.count()).select_from(Source).where(Source.plan_id == plan.id, Source.enabled)
    )
    return pages.SignupView(
        action=f"/authorize/{token}",
        merchant_name=merchant.name,
        plan_name=plan.name,
        plan_summary=f"Billed every {plan.billing_cadence.removeprefix('P').lower()} in {plan.currency}; "
        "usage is billed after each period.",
        has_sources=bool(sources),
        sandbox=link.environment == "sandbox",
        **extra,  # type: ignore[arg-type]
    )


@page_router.get("", response_class=HTMLResponse)
async def signup_page(token: str, request: Request, session: Session) -> Response:
    link = await _open(token, request, session)
    if isinstance(link, HTMLResponse):
        return link
    view = await _view(session, token, link, values={"email": link.email or ""})
    return view if isinstance(view, HTMLResponse) else pages.signup_page(view)


def _form_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        name = _FIELDS.get(where.replace("zip_code", "zipCode"), "name")
        errors.setdefault(name, str(error["msg"]).removeprefix("Value error, "))
    return errors


async def _claim(session: AsyncSession, link_id: str) -> bool:
    """pending → completed, by this request only (a concurrent submission of the link finds it taken)."""
    claimed = await session.scalar(
        update(AuthorizationLink)
        .where(
            AuthorizationLink.id == link_id,
            AuthorizationLink.status == "pending",
            AuthorizationLink.expires_at > func.now(),
        )
        .values(status="completed", completed_at=func.now())
        .returning(AuthorizationLink.id)
    )
    await session.commit()
    return claimed is not None


async def _give_back(
    session: AsyncSession, link: AuthorizationLink, consumer: dict[str, str], why: str
) -> None:
    """The signup failed: the link is pending again, and the merchant hears of the attempt."""
    await session.rollback()
    await session.execute(
        update(AuthorizationLink)
        .where(AuthorizationLink.id == link.id)
        .values(status="pending", completed_at=None)
    )
    data = {
        "object": "customerCreationFailure",
        "merchantId": link.merchant_id,
        "planId": link.plan_id,
        "authorizationLinkId": link.id,
        "consumer": consumer,
        "errorMessage": why,
        "createdAt": iso(datetime.now(UTC)),
    }
    outbox.record(session, link.merchant_id, link.environment, "customer.creation_failed.v0", data)
    await session.commit()


@page_router.post("", response_class=HTMLResponse)
async def sign_up(token: str, request: Request, session: Session) -> Response:
    link = await _open(token, request, session)
    if isinstance(link, HTMLResponse):
        return link
    if not same_site(request):
        return pages.cross_site_page()
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    values = {k: form.get(k, "").strip() for k in ("name", "email", "country", "zipCode")}
    try:
        customer = InlineCustomer.model_validate(
            {
                "name": values["name"],
                "email": values["email"],
                "address": {
                    "country": values["country"].upper() or None,
                    "zipCode": values["zipCode"] or None,
                },
            }
        )
    except ValidationError as exc:
        view = await _view(session, token, link, values=values, errors=_form_errors(exc))
        return view if isinstance(view, HTMLResponse) else pages.signup_page(view, 400)
    link_id, merchant_id, environment = link.id, link.merchant_id, link.environment
    plan_id, redirect_url, clock_id = link.plan_id, link.redirect_url, link.test_clock_id
    if not await _claim(session, link_id):
        return pages.used_page()
    settings = settings_of(request)
    portal_expires = datetime.now(UTC).replace(microsecond=0) + PORTAL_LIFETIME
    plan = await session.get(Plan, plan_id)
    clock = await session.get(TestClock, clock_id) if clock_id else None
    body = SubscriptionCreate(
        name=f"{customer.name} - {plan.name if plan else plan_id}",
        plan_id=plan_id,
        started_at=clock.current_time if clock is not None else datetime.now(UTC),
        customer=customer,
        test_clock_id=clock_id,
    )
    ctx = Ctx(session, Caller(merchant_id, environment, user_id="signup", key_id=f"signup:{link_id}"))
    try:
        sub, created = await create(body, ctx, request)
        why = None if created else f"{customer.email} already has a subscription to this plan"
    except ApiError as exc:
        sub, why = None, exc.message
    consumer = {"name": customer.name, "email": customer.email}
    if sub is None or why is not None:
        await _give_back(session, link, consumer, why or "the signup could not be completed")
        fresh = await session.get_one(AuthorizationLink, link_id)
        view = await _view(session, token, fresh, values=values, failure=why)
        return view if isinstance(view, HTMLResponse) else pages.signup_page(view, 409)
    await _completed(session, link_id, sub)
    portal = portal_tokens.issue(
        portal_tokens.PortalClaim(sub.id, merchant_id, environment, portal_expires),
        portal_tokens.signing_key(settings),
    )
    # A plan with revenue sources needs the customer's Stripe key: the portal's Sources section asks for it.
    portal_url = f"{settings.base_url}/portal/{portal}"
    has_sources = await session.scalar(
        select(func.count()).select_from(Source).where(Source.plan_id == plan_id)
    )
    onward = portal_url if has_sources or redirect_url is None else redirect_url
    rows = await view_rows(session, sub)
    if sub.status == "pending_payment" and rows.payment is not None:
        await _send_back_to(session, rows.payment.id, onward)
        return RedirectResponse(f"/checkout/{rows.payment.id}", status_code=303)
    return RedirectResponse(onward, status_code=303)


async def _completed(session: AsyncSession, link_id: str, sub: Subscription) -> None:
    """The link names what it created; the customer is announced (customer.created.v0)."""
    customer = await session.get_one(Customer, sub.customer_id)
    consumer = await session.get_one(Organization, customer.consumer_id)
    await session.execute(
        update(AuthorizationLink)
        .where(AuthorizationLink.id == link_id)
        .values(customer_id=customer.id, subscription_id=sub.id)
    )
    data = CustomerOut.of(customer, consumer).model_dump(mode="json", by_alias=True)
    outbox.record(session, sub.merchant_id, sub.environment, "customer.created.v0", data)
    await session.commit()


async def _send_back_to(session: AsyncSession, payment_session_id: str, url: str) -> None:
    """After paying Invoice 0 the checkout sends the customer on (to their portal, or the merchant's page)."""
    payment = await session.get_one(PaymentSession, payment_session_id)
    payment.redirect_urls = {"onSuccess": url, "onFailure": url} | (payment.redirect_urls or {})
    await session.commit()
