"""The sandbox payment provider (D14): Accrue's hosted checkout page and its API twin.

`GET /checkout/{id}` shows the invoice a payment session is for; its buttons (and, for merchants in the
sandbox, `POST /v0/paymentSessions/{id}/complete|decline`) send the outcome to the subscription's workflow,
which records it: the API never writes a payment itself. The session id (24 random base62 characters) is
the page's only credential, as with a hosted card-processor checkout.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from api import stripe_checkout
from api.app_state import settings_of, temporal_client
from api.checkout import PAYABLE, Checkout, load_checkout
from api.deps import Context, Ctx, Session
from api.pages import checkout as pages
from api.pages import message_page
from api.problems import ApiError, conflict, forbidden
from api.schemas.payments import PaymentSessionOut
from db.models import LineItem, PaymentSession
from workflows.client import send_payment_completed, send_payment_declined
from workflows.subscription_messages import PaymentCompleted, PaymentDeclined

router = APIRouter(prefix="/v0/paymentSessions", tags=["payment sessions"])
page_router = APIRouter(include_in_schema=False)

RECORD_TIMEOUT_SECONDS = 10.0


async def send(app: FastAPI, task_queue: str, checkout: Checkout, succeeded: bool) -> None:
    """Signal-with-start, so the outcome reaches the subscription even if its workflow had finished."""
    subscription_id = checkout.subscription.id
    invoice_id, session_id = checkout.invoice.id, checkout.payment.id
    try:
        client = await temporal_client(app)
        if succeeded:
            completed = PaymentCompleted(invoice_id=invoice_id, payment_session_id=session_id)
            await send_payment_completed(client, task_queue, subscription_id, completed)
        else:
            declined = PaymentDeclined(invoice_id=invoice_id, payment_session_id=session_id)
            await send_payment_declined(client, task_queue, subscription_id, declined)
    except (RPCError, RuntimeError, OSError) as exc:
        raise ApiError(
            503,
            f"Could not reach subscription {subscription_id}'s workflow ({exc}); nothing was recorded, retry",
        ) from None


async def recorded(app: FastAPI, payment_session_id: str, before: str) -> PaymentSession | None:
    """The session once the workflow has recorded the outcome (its status left `before`); None on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_TIMEOUT_SECONDS
    while True:
        async with app.state.sessions() as session:
            row: PaymentSession | None = await session.get(PaymentSession, payment_session_id)
        if row is not None and row.status != before:
            return row
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.1)


# ---- merchant API (sandbox only) ------------------------------------------------------------------------


def _sandbox_only(ctx: Ctx) -> None:
    if ctx.caller.environment != "sandbox":
        raise forbidden(
            "The sandbox payment provider only takes test payments: use a sandbox (sk_test_) key. Live "
            "payment sessions cannot be completed or declined through the API"
        )


async def _owned_checkout(ctx: Ctx, id: str) -> Checkout:
    payment = await ctx.owned(PaymentSession, id, "Payment session")
    checkout = await load_checkout(ctx.session, payment.id)
    assert checkout is not None
    return checkout


@router.get("/{id}", response_model=PaymentSessionOut)
async def get_payment_session(id: str, ctx: Context) -> PaymentSessionOut:
    checkout = await _owned_checkout(ctx, id)
    return PaymentSessionOut.of(checkout.payment, checkout.status)


@router.post("/{id}/complete", response_model=PaymentSessionOut)
async def complete_payment_session(id: str, ctx: Context, request: Request) -> PaymentSessionOut:
    """What the checkout's "Pay (test)" button does; returns once the workflow has recorded the payment."""
    return await _api_outcome(id, ctx, request, succeeded=True)


@router.post("/{id}/decline", response_model=PaymentSessionOut)
async def decline_payment_session(id: str, ctx: Context, request: Request) -> PaymentSessionOut:
    """What the checkout's "Decline (test)" button does; returns once the workflow has recorded it."""
    return await _api_outcome(id, ctx, request, succeeded=False)


async def _api_outcome(id: str, ctx: Ctx, request: Request, *, succeeded: bool) -> PaymentSessionOut:
    _sandbox_only(ctx)
    checkout = await _owned_checkout(ctx, id)
    if stripe_checkout.at_stripe(settings_of(request), checkout.payment):
        raise conflict(
            f"Payment session {id} is collected through Stripe: the payer pays by card on its checkout page "
            "(test cards in the sandbox), and Stripe's confirmation records it",
            details={"provider": "stripe"},
        )
    status = checkout.status
    verb, allowed = ("completed", "an open or declined") if succeeded else ("declined", "an open")
    if status not in PAYABLE or (not succeeded and status == "declined"):
        raise conflict(
            f"Payment session {id} is {status}; only {allowed} session can be {verb}",
            details={"status": status},
        )
    await ctx.session.commit()  # end the read transaction (objects stay loaded) while the workflow writes
    await send(request.app, settings_of(request).task_queue, checkout, succeeded)
    row = await recorded(request.app, id, status)
    if row is None:
        raise ApiError(
            503,
            f"The outcome was sent to subscription {checkout.subscription.id}'s workflow but not recorded "
            f"within {RECORD_TIMEOUT_SECONDS:.0f} s; GET /v0/paymentSessions/{id} shows when it is",
        )
    if row.status != verb:
        # The workflow refused it: the session expired or was cancelled in the meantime.
        raise conflict(
            f"Payment session {id} is {row.status}; only {allowed} session can be {verb}",
            details={"status": row.status},
        )
    return PaymentSessionOut.of(row, row.status)


# ---- hosted checkout page -------------------------------------------------------------------------------


async def _lines(session: AsyncSession, invoice_id: str) -> list[pages.Line]:
    rows = await session.scalars(
        select(LineItem).where(LineItem.invoice_id == invoice_id).order_by(LineItem.position, LineItem.id)
    )
    return [
        pages.Line(row.display_name, row.quantity, row.subtotal, row.period_start, row.period_end)
        for row in rows
    ]


async def _view(session: AsyncSession, checkout: Checkout) -> pages.CheckoutView:
    invoice, payment = checkout.invoice, checkout.payment
    return pages.CheckoutView(
        session_id=payment.id,
        merchant_name=checkout.merchant_name,
        invoice_number=invoice.invoice_number or invoice.id,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        lines=await _lines(session, invoice.id),
        subtotal=invoice.subtotal,
        tax=invoice.total_tax,
        total=invoice.grand_total,
        currency=invoice.currency,
        expires_at=payment.expires_at,
        declined_before=payment.status == "declined",
    )


async def _ended(session: AsyncSession, checkout: Checkout) -> HTMLResponse:
    """The page for a checkout that can no longer be paid."""
    if checkout.status == "completed":
        return pages.paid_page(await _view(session, checkout))
    if checkout.status == "expired":
        return pages.expired_page()
    return pages.cancelled_page()


@page_router.get("/checkout/{id}", response_class=HTMLResponse)
async def checkout_page(id: str, request: Request, session: Session) -> HTMLResponse:
    checkout = await load_checkout(session, id)
    if checkout is None:
        return pages.missing_page()
    if stripe_checkout.at_stripe(settings_of(request), checkout.payment):
        return await stripe_checkout.page(request, session, checkout)
    if checkout.live:
        return pages.live_page()
    if checkout.status not in PAYABLE:
        return await _ended(session, checkout)
    return pages.checkout_page(await _view(session, checkout))


@page_router.get("/checkout/{id}/done", response_class=HTMLResponse)
async def checkout_done(id: str, request: Request, session: Session) -> HTMLResponse:
    """Where the buttons land without a redirect URL: what became of the payment."""
    checkout = await load_checkout(session, id)
    if checkout is None:
        return pages.missing_page()
    if stripe_checkout.at_stripe(settings_of(request), checkout.payment):
        return await stripe_checkout.done(request, session, checkout)
    if checkout.live:
        return pages.live_page()
    if checkout.status not in PAYABLE:
        return await _ended(session, checkout)
    view = await _view(session, checkout)
    return pages.declined_page(view) if checkout.status == "declined" else pages.processing_page(view)


@page_router.post("/checkout/{id}/complete")
async def checkout_complete(id: str, request: Request, session: Session) -> Response:
    return await _page_outcome(id, request, session, succeeded=True)


@page_router.post("/checkout/{id}/decline")
async def checkout_decline(id: str, request: Request, session: Session) -> Response:
    return await _page_outcome(id, request, session, succeeded=False)


async def _page_outcome(id: str, request: Request, session: AsyncSession, *, succeeded: bool) -> Response:
    checkout = await load_checkout(session, id)
    if checkout is None:
        return pages.missing_page()
    if stripe_checkout.at_stripe(settings_of(request), checkout.payment):
        return stripe_checkout.pages.wrong_buttons_page(checkout.live)
    if checkout.live:
        return pages.live_page()
    status = checkout.status
    if status not in PAYABLE:
        return await _ended(session, checkout)
    urls = checkout.payment.redirect_urls or {}
    done = f"/checkout/{checkout.payment.id}/done"
    success, failure = urls.get("onSuccess") or done, urls.get("onFailure") or done
    if not succeeded and status == "declined":
        return RedirectResponse(failure, status_code=303)  # already recorded as declined
    await session.commit()  # end the read transaction (objects stay loaded) while the workflow writes
    try:
        await send(request.app, settings_of(request).task_queue, checkout, succeeded)
    except ApiError as exc:
        return message_page("The payment could not be sent", exc.message, 503, banner=pages.BANNER)
    # Waiting lets the merchant's success page already see an active subscription.
    row = await recorded(request.app, id, status)
    if row is not None and row.status == ("completed" if succeeded else "declined"):
        return RedirectResponse(success if succeeded else failure, status_code=303)
    return RedirectResponse(done, status_code=303)
