"""One-off payments (behavior §12.2): `POST /v0/payments` (201 new, 200 the existing one for a repeated
idempotencyKey), `GET /v0/payments`, `GET /v0/payments/{id}`, and the sandbox provider's hosted page
`/pay/{id}` whose buttons send the outcome to the payment's workflow (`payment-<id>`), which records it:
the API writes a payment once, at creation, and never its status.

Decisions (docs/decisions.md, "One-off payments"): a customerId the merchant has no customer with is a 400
on `customerId` (the create's typed errors are 400/401/403); line items must add up to the amount; the
payment lives on the wall clock (no test clock); the link is `{ACCRUE_PUBLIC_BASE_URL}/pay/{id}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from api.app_state import settings_of, temporal_client
from api.deps import Context, Paging, Session
from api.link_lifetime import link_expiry
from api.pages import message_page
from api.pages import one_off_payment as pages
from api.pages.checkout import BANNER
from api.problems import ApiError, invalid
from api.schemas.one_off_payments import (
    DEFAULT_EXPIRES_IN,
    MAX_EXPIRES_IN,
    PaymentCreate,
    PaymentOut,
    PaymentStatus,
)
from api.wire import ListResponse, list_envelope
from db import payments as rows
from db.models import Customer, Organization, Payment
from domain.ids import has_prefix, new_id
from domain.status import PAYMENT_OPEN
from integrations.payments import provider_for, provider_named, publishable_key_for
from integrations.payments.base import (
    CreatedPayment,
    PaymentDeclinedError,
    PaymentOwner,
    PaymentProvider,
    PaymentRequest,
    PaymentState,
    ProviderError,
)
from integrations.payments.base import PaymentStatus as ProviderStatus
from workflows.client import send_one_off_payment_outcome, start_payment_workflow
from workflows.payment_messages import Outcome, PaymentOutcome

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v0/payments", tags=["payments"])
page_router = APIRouter(include_in_schema=False)

START_TIMEOUT_SECONDS = 5.0  # the row is committed; an unreachable Temporal is healed by the reconciler
RECORD_TIMEOUT_SECONDS = 10.0


# ---- merchant API ---------------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=PaymentOut)
async def create_payment(
    body: PaymentCreate, ctx: Context, request: Request, response: Response
) -> PaymentOut:
    merchant_id, environment = ctx.caller.merchant_id, ctx.caller.environment
    if body.merchant_id is not None:
        ctx.caller.require_merchant(body.merchant_id)
    if body.idempotency_key is not None:
        existing = await rows.by_idempotency_key(ctx.session, merchant_id, environment, body.idempotency_key)
        if existing is not None:
            response.status_code = 200
            return PaymentOut.of(existing)
    if body.save_payment_method and body.customer_id is None:
        raise invalid(
            "savePaymentMethod",
            "requires customerId: a saved payment method belongs to a customer",
            "required",
        )
    if body.line_items and body.line_total() != Decimal(body.amount):
        raise invalid(
            "lineItems",
            f"add up to {body.line_total():.2f} (Σ amount × quantity), not the amount {body.amount}",
            "sum_mismatch",
        )
    if body.customer_id is not None:
        customer = await ctx.session.get(Customer, body.customer_id)
        if customer is None or customer.merchant_id != merchant_id or customer.environment != environment:
            raise invalid(
                "customerId", f"no customer {body.customer_id!r} belongs to this merchant", "not_found"
            )
    now = datetime.now(UTC)
    try:
        expires_at = link_expiry(body.expires_in, now, default=DEFAULT_EXPIRES_IN, maximum=MAX_EXPIRES_IN)
    except OverflowError:
        raise invalid("expiresIn", f"{body.expires_in!r} is out of range") from None
    payment_id = new_id("payment")
    opened = await _open_at_provider(request, body, payment_id, merchant_id, environment)
    row = Payment(
        id=payment_id,
        merchant_id=merchant_id,
        environment=environment,
        customer_id=body.customer_id,
        status="pending",
        amount=Decimal(body.amount),
        currency=body.currency,
        idempotency_key=body.idempotency_key,
        reference=body.reference,
        payment_metadata=body.metadata,
        line_items=[i.model_dump() for i in body.line_items] if body.line_items is not None else None,
        success_redirect_url=body.success_redirect_url,
        failure_redirect_url=body.failure_redirect_url,
        save_payment_method=body.save_payment_method,
        provider=opened.provider,
        provider_reference=opened.reference if opened.provider != "sandbox" else None,
        payment_url=opened.payment_url,
        expires_at=expires_at,
    )
    ctx.session.add(row)
    try:
        await ctx.session.commit()
    except IntegrityError:
        # Another request with the same idempotencyKey committed first: answer with its payment.
        await ctx.session.rollback()
        assert body.idempotency_key is not None
        existing = await rows.by_idempotency_key(ctx.session, merchant_id, environment, body.idempotency_key)
        if existing is None:
            raise
        response.status_code = 200
        return PaymentOut.of(existing)
    await ctx.session.refresh(row)
    await _start(request, row)
    return PaymentOut.of(row)


async def _open_at_provider(
    request: Request, body: PaymentCreate, payment_id: str, merchant_id: str, environment: str
) -> CreatedPayment:
    """The payment at its merchant's provider (integrations.payments.provider_for): the sandbox answers at
    once; Stripe creates a PaymentIntent (idempotency key `<pay id>:create`) whose metadata names this
    payment's workflow as its owner, so the Stripe webhook signals `payment-<id>`. Nothing is stored when
    the provider cannot be reached (503: retry)."""
    settings = settings_of(request)
    page_url = f"{settings.base_url}/pay/{payment_id}"
    payment = PaymentRequest(
        our_id=payment_id,
        merchant_id=merchant_id,
        environment=environment,
        amount=Decimal(body.amount),
        currency=body.currency,
        owner=PaymentOwner(kind="payment", id=payment_id),
        description=body.reference or f"Payment {payment_id}",
        page_url=page_url,
        customer_id=body.customer_id,
        save_payment_method=body.save_payment_method,
        success_url=body.success_redirect_url,
        failure_url=body.failure_redirect_url,
    )
    try:
        return await provider_for(settings, merchant_id, environment).create_payment(payment)
    except ProviderError as exc:
        raise ApiError(503, f"The payment provider could not open the payment ({exc}); retry") from None


async def _start(request: Request, row: Payment) -> None:
    """Start the expiry timer after the commit, idempotently; if Temporal cannot be reached, the payment
    stands and the reconciler starts the workflow of every open payment missing one."""
    try:
        client = await asyncio.wait_for(temporal_client(request.app), START_TIMEOUT_SECONDS)
        await asyncio.wait_for(
            start_payment_workflow(
                client,
                settings_of(request).task_queue,
                row.id,
                merchant_id=row.merchant_id,
                customer_id=row.customer_id,
            ),
            START_TIMEOUT_SECONDS,
        )
    except (RPCError, RuntimeError, OSError, TimeoutError) as exc:
        log.warning("payment %s: workflow not started (%s); the reconciler starts it", row.id, exc)


@router.get("", response_model=ListResponse[PaymentOut])
async def list_payments(
    ctx: Context,
    page: Paging,
    merchant_id: Annotated[str | None, Query(alias="merchantId", max_length=64)] = None,
    status: Annotated[PaymentStatus | None, Query()] = None,
    customer_id: Annotated[str | None, Query(alias="customerId", max_length=64)] = None,
) -> ListResponse[PaymentOut]:
    """Newest first. A customerId the merchant has no customer with matches nothing (an empty page)."""
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    where = rows.PaymentFilter(ctx.caller.merchant_id, ctx.caller.environment, customer_id, status)
    found, total = await rows.list_payments(ctx.session, where, limit=page.limit, offset=page.offset)
    return list_envelope([PaymentOut.of(r) for r in found], page, total)


@router.get("/{id}", response_model=PaymentOut)
async def get_payment(id: str, ctx: Context) -> PaymentOut:
    row = await rows.get(ctx.session, ctx.caller.merchant_id, ctx.caller.environment, id)
    if row is None:
        raise ApiError(404, f"Payment {id!r} was not found")
    return PaymentOut.of(row)


# ---- hosted page (sandbox provider) ---------------------------------------------------------------------


def status_now(row: Payment, now: datetime) -> str:
    """The payment's status as the payer sees it: past expiresAt it is expired even before the workflow
    has recorded that, so a payment can never slip in after it."""
    if row.status in PAYMENT_OPEN and row.expires_at <= now:
        return "expired"
    return row.status


async def _load(session: AsyncSession, payment_id: str) -> Payment | None:
    if not has_prefix(payment_id, "payment"):
        return None
    return await session.get(Payment, payment_id)


async def _view(session: AsyncSession, row: Payment) -> pages.PaymentView:
    merchant = await session.get(Organization, row.merchant_id)
    lines = [
        pages.PaymentLine(str(i["description"]), Decimal(str(i["amount"])), int(i.get("quantity", 1)))
        for i in (row.line_items or [])
    ]
    return pages.PaymentView(
        payment_id=row.id,
        merchant_name=merchant.name if merchant is not None else "the merchant",
        amount=row.amount,
        currency=row.currency,
        reference=row.reference,
        lines=lines,
        expires_at=row.expires_at,
        declined_before=row.declined_at is not None,
    )


async def _ended(session: AsyncSession, row: Payment, status: str) -> HTMLResponse:
    if status == "completed":
        return pages.paid_page(await _view(session, row))
    if status == "expired":
        return pages.expired_page()
    return pages.cancelled_page()


def _refused(row: Payment) -> HTMLResponse | None:
    """The sandbox page takes test payments only (a Stripe payment is paid by card, never by its buttons)."""
    if row.provider != "sandbox":
        return pages.missing_page()
    if row.environment != "sandbox":
        return pages.live_page()
    return None


@page_router.get("/pay/{id}", response_class=HTMLResponse)
async def payment_page(id: str, request: Request, session: Session) -> HTMLResponse:
    row = await _load(session, id)
    if row is None:
        return pages.missing_page()
    if row.provider == "stripe":
        return await _stripe_page(request, session, row)
    if (refused := _refused(row)) is not None:
        return refused
    status = status_now(row, datetime.now(UTC))
    if status not in PAYMENT_OPEN:
        return await _ended(session, row, status)
    return pages.payment_page(await _view(session, row))


@page_router.get("/pay/{id}/done", response_class=HTMLResponse)
async def payment_done(id: str, session: Session) -> HTMLResponse:
    """Where the buttons land without a redirect URL: what became of the payment."""
    row = await _load(session, id)
    if row is None:
        return pages.missing_page()
    if row.provider == "stripe" and status_now(row, datetime.now(UTC)) in PAYMENT_OPEN:
        view = await _view(session, row)
        return pages.declined_page(view) if row.declined_at is not None else pages.processing_page(view)
    if (refused := _refused(row)) is not None and row.provider == "sandbox":
        return refused
    status = status_now(row, datetime.now(UTC))
    if status not in PAYMENT_OPEN:
        return await _ended(session, row, status)
    view = await _view(session, row)
    return pages.declined_page(view) if row.declined_at is not None else pages.processing_page(view)


@page_router.post("/pay/{id}/complete")
async def payment_complete(id: str, request: Request, session: Session) -> Response:
    return await _outcome(id, request, session, succeeded=True)


@page_router.post("/pay/{id}/decline")
async def payment_decline(id: str, request: Request, session: Session) -> Response:
    return await _outcome(id, request, session, succeeded=False)


async def _outcome(id: str, request: Request, session: AsyncSession, *, succeeded: bool) -> Response:
    row = await _load(session, id)
    if row is None:
        return pages.missing_page()
    if (refused := _refused(row)) is not None:
        return refused
    status = status_now(row, datetime.now(UTC))
    if status not in PAYMENT_OPEN:
        return await _ended(session, row, status)
    done = f"/pay/{row.id}/done"
    success, failure = row.success_redirect_url or done, row.failure_redirect_url or done
    before = (row.status, row.declined_at)
    await session.commit()  # end the read transaction (the row stays loaded) while the workflow writes
    message = PaymentOutcome(payment_id=row.id, outcome="completed" if succeeded else "declined")
    try:
        client = await temporal_client(request.app)
        await send_one_off_payment_outcome(
            client, settings_of(request).task_queue, row.id, message, merchant_id=row.merchant_id
        )
    except (RPCError, RuntimeError, OSError) as exc:
        text = f"Could not reach the payment's workflow ({exc}); nothing was recorded, try again."
        return message_page("The payment could not be sent", text, 503, banner=BANNER)
    after = await _recorded(request.app, row.id, before)
    if after is not None and succeeded and after.status == "completed":
        return RedirectResponse(success, status_code=303)
    if after is not None and not succeeded and after.declined_at is not None:
        return RedirectResponse(failure, status_code=303)
    return RedirectResponse(done, status_code=303)


async def _recorded(app: FastAPI, payment_id: str, before: tuple[str, datetime | None]) -> Payment | None:
    """The payment once the workflow has recorded the outcome (status or declinedAt changed); None on
    timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_TIMEOUT_SECONDS
    while True:
        async with app.state.sessions() as session:
            found: Payment | None = await session.get(Payment, payment_id)
        if found is not None and (found.status, found.declined_at) != before:
            return found
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.1)


# ---- hosted page (Stripe provider): card entry, confirmed on the server -----------------------------------

_TOKEN = re.compile(r"tok_[A-Za-z0-9_]{1,200}")
MAX_CARD_BODY = 4096


def _stripe(request: Request, row: Payment) -> PaymentProvider:
    return provider_named(settings_of(request), "stripe", row.environment)


async def _stripe_page(request: Request, session: AsyncSession, row: Payment) -> HTMLResponse:
    status = status_now(row, datetime.now(UTC))
    if status not in PAYMENT_OPEN:
        return await _ended(session, row, status)
    view = await _view(session, row)
    await session.commit()  # end the read transaction before calling Stripe
    if row.provider_reference is None:
        return pages.stripe_unavailable_page()
    try:
        state = await _stripe(request, row).retrieve(row.provider_reference)
    except ProviderError as exc:
        log.warning("payment %s: %s", row.id, exc)
        return pages.stripe_unavailable_page()
    if state.status in (ProviderStatus.SUCCEEDED, ProviderStatus.PROCESSING):
        await _signal(request, row, "completed" if state.status == ProviderStatus.SUCCEEDED else "processing")
        return pages.processing_page(view)
    settings = settings_of(request)
    publishable = publishable_key_for(settings, row.environment)
    return pages.stripe_payment_page(view, publishable, settings.stripe_js_url, row.environment != "sandbox")


async def _signal(request: Request, row: Payment, outcome: Outcome) -> Payment | None:
    """Send the outcome to the payment's workflow and wait (10 s at most) until it has recorded it; None when
    it could not be sent or recorded in time (the webhook or the workflow's timer records it later)."""
    before = (row.status, row.declined_at)
    message = PaymentOutcome(
        payment_id=row.id, outcome=outcome, provider_reference=row.provider_reference, source="stripe page"
    )
    try:
        client = await temporal_client(request.app)
        await send_one_off_payment_outcome(
            client, settings_of(request).task_queue, row.id, message, merchant_id=row.merchant_id
        )
    except (RPCError, RuntimeError, OSError) as exc:
        log.warning("payment %s: outcome not sent now (%s); the webhook or timer sends it", row.id, exc)
        return None
    return await _recorded(request.app, row.id, before)


async def _settle(request: Request, row: Payment, state: PaymentState) -> dict[str, Any]:
    done = f"/pay/{row.id}/done"
    if state.status == ProviderStatus.SUCCEEDED:
        after = await _signal(request, row, "completed")
        recorded = after is not None and after.status == "completed"
        return {"outcome": "succeeded", "redirect": (row.success_redirect_url or done) if recorded else done}
    if state.status == ProviderStatus.REQUIRES_ACTION:
        return {"outcome": "authenticate", "clientSecret": state.client_secret}
    if state.status == ProviderStatus.PROCESSING:
        await _signal(request, row, "processing")
        return {"outcome": "processing", "redirect": done}
    if state.status == ProviderStatus.FAILED:
        return await _declined(request, row, state.failure_message)
    return {"outcome": "error", "message": "The payment was not completed. Try again."}


async def _declined(request: Request, row: Payment, message: str | None) -> dict[str, Any]:
    await _signal(request, row, "declined")
    answer: dict[str, Any] = {
        "outcome": "declined",
        "message": f"{message or 'The card was declined.'} Nothing was charged; try another card.",
    }
    if row.failure_redirect_url:
        answer["redirect"] = row.failure_redirect_url
    return answer


async def _card_payment(id: str, session: AsyncSession) -> Payment | JSONResponse:
    row = await _load(session, id)
    if row is None or row.provider != "stripe" or row.provider_reference is None:
        return JSONResponse({"error": "not_found", "message": f"Payment {id} takes no cards here"}, 404)
    status = status_now(row, datetime.now(UTC))
    if status not in PAYMENT_OPEN:
        return JSONResponse(
            {"outcome": "ended", "message": f"This payment is {status}.", "redirect": f"/pay/{id}"}
        )
    await session.commit()  # end the read transaction (the row stays loaded) before calling Stripe
    return row


@page_router.post("/pay/{id}/card")
async def pay_by_card(id: str, request: Request, session: Session) -> JSONResponse:
    """`{"token": "tok_…"}` from Stripe.js: confirm the PaymentIntent with it and say what happened."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw and len(raw) <= MAX_CARD_BODY else None
    except ValueError:
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        message = "token must be a Stripe card token (tok_…) made by Stripe.js"
        return JSONResponse({"error": "validation_error", "message": message}, 400)
    found = await _card_payment(id, session)
    if isinstance(found, JSONResponse):
        return found
    row, reference = found, found.provider_reference
    assert reference is not None
    provider = _stripe(request, row)
    try:
        state = await provider.retrieve(reference)
        if state.status in (ProviderStatus.SUCCEEDED, ProviderStatus.PROCESSING):
            return JSONResponse(await _settle(request, row, state))
        confirmed = await provider.confirm_with_card_token(reference, token, token)
    except PaymentDeclinedError as exc:
        return JSONResponse(await _declined(request, row, str(exc)))
    except ProviderError as exc:
        log.warning("payment %s: confirm failed: %s", row.id, exc)
        message = "The payment could not be completed. Nothing was charged; try again."
        return JSONResponse({"outcome": "error", "message": message})
    return JSONResponse(await _settle(request, row, confirmed))


@page_router.post("/pay/{id}/card/check")
async def check_card_payment(id: str, request: Request, session: Session) -> JSONResponse:
    """After 3-D Secure in the browser: where the PaymentIntent stands now."""
    found = await _card_payment(id, session)
    if isinstance(found, JSONResponse):
        return found
    assert found.provider_reference is not None
    try:
        state = await _stripe(request, found).retrieve(found.provider_reference)
    except ProviderError as exc:
        log.warning("payment %s: %s", found.id, exc)
        return JSONResponse({"outcome": "error", "message": "The card processor could not be reached."})
    return JSONResponse(await _settle(request, found, state))
