"""The hosted checkout (`/checkout/<ps id>`) of a payment session collected through Stripe (D14).

The sandbox checkout's routes (api/routers/payments.py) hand a session to this module when its payment is
at Stripe (`at_stripe`); the card routes (api/routers/stripe_checkout.py) call `pay_with_token` and `check`.
The page is the one the payer opens for Invoice 0, a period invoice's `paymentUrl` and a top-up: the same
URL whichever provider collects it.

Outcomes are sent to the owning workflow as soon as Stripe has answered the server's own confirm call (the
page waits until the workflow has recorded them, so the merchant's success page already sees an active
subscription); Stripe's webhook and the workflow's timer send the same signals later, and the workflow
records each outcome once.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from api.app_state import settings_of, temporal_client
from api.checkout import PAYABLE, Checkout
from api.pages import stripe_checkout as pages
from api.payment_outcomes import UnknownOwner, session_recorded, signal_owner
from api.problems import ApiError
from db.models import LineItem, PaymentSession
from integrations.payments import publishable_key_for
from integrations.payments.base import (
    PaymentDeclinedError,
    PaymentOwner,
    PaymentState,
    PaymentStatus,
    ProviderError,
)
from integrations.payments.sessions import ProviderChoice, open_payment
from settings import Settings
from workflows.client import send_watch_payments
from workflows.subscription_messages import WatchPayments

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"tok_[A-Za-z0-9_]{1,200}")


def at_stripe(settings: Settings, payment: PaymentSession) -> bool:
    """Whether this session is collected through Stripe: the provider it was opened with, or (not opened
    yet) the one its merchant and environment use now."""
    if payment.provider_reference is not None:
        return payment.provider == "stripe"
    return ProviderChoice(settings).name_for(payment.merchant_id, payment.environment) == "stripe"


async def _view(session: AsyncSession, checkout: Checkout) -> pages.StripeCheckoutView:
    invoice, payment = checkout.invoice, checkout.payment
    rows = await session.scalars(
        select(LineItem).where(LineItem.invoice_id == invoice.id).order_by(LineItem.position, LineItem.id)
    )
    return pages.StripeCheckoutView(
        session_id=payment.id,
        merchant_name=checkout.merchant_name,
        invoice_number=invoice.invoice_number or invoice.id,
        lines=[
            pages.Line(r.display_name, r.quantity, r.subtotal, r.period_start, r.period_end) for r in rows
        ],
        subtotal=invoice.subtotal,
        tax=invoice.total_tax,
        total=invoice.grand_total,
        currency=invoice.currency,
        expires_at=payment.expires_at,
        declined_before=payment.status == "declined",
        live=checkout.live,
    )


async def ended(session: AsyncSession, checkout: Checkout) -> HTMLResponse:
    if checkout.status == "completed":
        return pages.paid_page(await _view(session, checkout))
    if checkout.status == "expired":
        return pages.expired_page(checkout.live)
    return pages.cancelled_page(checkout.live)


async def _watch(app: FastAPI, settings: Settings, payment: PaymentSession) -> None:
    """A payment opened here (not by the workflow's activities): the owner's timer must look at it too."""
    now = datetime.now(UTC)
    message = WatchPayments(check_in=ProviderChoice(settings).check_in(now, now))
    try:
        client = await temporal_client(app)
        await send_watch_payments(client, settings.task_queue, payment.subscription_id, message)
    except (RPCError, RuntimeError, OSError) as exc:  # the webhook still confirms it; log and go on
        log.warning("subscription %s not told to watch %s: %s", payment.subscription_id, payment.id, exc)


async def _opened(request: Request, checkout: Checkout) -> tuple[str, PaymentState] | None:
    """The session's PaymentIntent (opened now if nobody had) and where it stands; None: Stripe failed."""
    settings = settings_of(request)
    payment = checkout.payment
    had = payment.provider_reference
    opened = await open_payment(
        request.app.state.sessions, ProviderChoice(settings), payment.id, settings.base_url
    )
    if opened.reference is None:
        return None
    if had is None:
        await _watch(request.app, settings, payment)
    try:
        state = await ProviderChoice(settings).named("stripe", payment.environment).retrieve(opened.reference)
    except ProviderError as exc:
        log.warning("payment session %s: %s", payment.id, exc)
        return None
    return opened.reference, state


def _owned(state: PaymentState, checkout: Checkout) -> PaymentState:
    """The state as the owner's signal needs it (our ids, even if metadata were edited at Stripe)."""
    return PaymentState(
        **{
            **state.__dict__,
            "owner": PaymentOwner(kind="subscription", id=checkout.subscription.id),
            "our_id": checkout.payment.id,
            "invoice_id": checkout.invoice.id,
        }
    )


async def page(request: Request, session: AsyncSession, checkout: Checkout) -> HTMLResponse:
    """GET /checkout/<id> for a Stripe session."""
    if checkout.status not in PAYABLE:
        return await ended(session, checkout)
    view = await _view(session, checkout)
    await session.commit()  # end the read transaction before calling Stripe
    found = await _opened(request, checkout)
    if found is None:
        return pages.unavailable_page(checkout.live)
    _, state = found
    if state.status == PaymentStatus.SUCCEEDED:
        await _record(request, checkout, state, True)
        return pages.processing_page(view)
    if state.status == PaymentStatus.PROCESSING:
        return pages.processing_page(view)
    settings = settings_of(request)
    publishable = publishable_key_for(settings, checkout.payment.environment)
    return pages.checkout_page(view, publishable, settings.stripe_js_url)


async def done(request: Request, session: AsyncSession, checkout: Checkout) -> HTMLResponse:
    """GET /checkout/<id>/done for a Stripe session: what became of the payment (asks Stripe once more
    while nothing is recorded, so a lost webhook does not leave the payer waiting)."""
    if checkout.status not in PAYABLE:
        return await ended(session, checkout)
    view = await _view(session, checkout)
    await session.commit()
    if checkout.payment.provider_reference is not None:
        found = await _opened(request, checkout)
        if found is not None and found[1].status == PaymentStatus.SUCCEEDED:
            row = await _record(request, checkout, found[1], True)
            if row is not None and row.status == "completed":
                return pages.paid_page(view)
    return pages.declined_page(view) if checkout.payment.status == "declined" else pages.processing_page(view)


async def _record(
    request: Request, checkout: Checkout, state: PaymentState, succeeded: bool
) -> PaymentSession | None:
    """Signal the owner and wait (a few seconds at most) until it has recorded the outcome."""
    before = checkout.payment.status
    try:
        await signal_owner(request.app, settings_of(request).task_queue, _owned(state, checkout), succeeded)
    except (UnknownOwner, ApiError) as exc:
        log.warning(
            "payment session %s: outcome not sent now (%s); the webhook or timer sends it",
            checkout.payment.id,
            exc,
        )
        return None
    if not succeeded and before == "declined":
        return checkout.payment  # recorded as declined already: nothing to wait for
    return await session_recorded(request.app, checkout.payment.id, before)


def _answer(outcome: str, **extra: Any) -> dict[str, Any]:
    return {"outcome": outcome, **{k: v for k, v in extra.items() if v is not None}}


def _redirects(checkout: Checkout) -> tuple[str, str | None]:
    urls = checkout.payment.redirect_urls or {}
    done_url = f"/checkout/{checkout.payment.id}/done"
    return urls.get("onSuccess") or done_url, urls.get("onFailure")


async def _settle(request: Request, checkout: Checkout, state: PaymentState) -> dict[str, Any]:
    success, _ = _redirects(checkout)
    done_url = f"/checkout/{checkout.payment.id}/done"
    if state.status == PaymentStatus.SUCCEEDED:
        row = await _record(request, checkout, state, True)
        recorded = row is not None and row.status == "completed"
        return _answer("succeeded", redirect=success if recorded else done_url)
    if state.status == PaymentStatus.REQUIRES_ACTION:
        return _answer("authenticate", clientSecret=state.client_secret)
    if state.status == PaymentStatus.PROCESSING:
        return _answer("processing", redirect=done_url)
    if state.status == PaymentStatus.FAILED:
        return await _declined(request, checkout, state, state.failure_message)
    return _answer("error", message="The payment was not completed. Try again.")


async def _declined(
    request: Request, checkout: Checkout, state: PaymentState, message: str | None
) -> dict[str, Any]:
    await _record(request, checkout, state, False)
    _, failure = _redirects(checkout)
    text = f"{message or 'The card was declined.'} Nothing was charged; try another card."
    return _answer("declined", message=text, redirect=failure)


async def pay_with_token(request: Request, checkout: Checkout, token: object) -> dict[str, Any]:
    """POST /checkout/<id>/card {token}: confirm the PaymentIntent with the card Stripe.js tokenized."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ApiError(
            400, "token must be a Stripe card token (tok_…) made by Stripe.js", error="validation_error"
        )
    if checkout.status not in PAYABLE:
        return _answer("ended", message=f"This checkout is {checkout.status}.", redirect=_ended_url(checkout))
    found = await _opened(request, checkout)
    if found is None:
        return _answer(
            "error", message="The card processor could not be reached. Nothing was charged; try again."
        )
    reference, state = found
    if state.status in (PaymentStatus.SUCCEEDED, PaymentStatus.PROCESSING):
        return await _settle(request, checkout, state)
    provider = ProviderChoice(settings_of(request)).named("stripe", checkout.payment.environment)
    try:
        confirmed = await provider.confirm_with_card_token(reference, token, token)
    except PaymentDeclinedError as exc:
        declined = exc.state or PaymentState(reference=reference, status=PaymentStatus.FAILED)
        return await _declined(request, checkout, declined, str(exc))
    except ProviderError as exc:
        log.warning("payment session %s: confirm failed: %s", checkout.payment.id, exc)
        return _answer("error", message="The payment could not be completed. Nothing was charged; try again.")
    return await _settle(request, checkout, confirmed)


async def check(request: Request, checkout: Checkout) -> dict[str, Any]:
    """POST /checkout/<id>/card/check: after 3-D Secure on the page, where the PaymentIntent stands."""
    if checkout.status not in PAYABLE:
        return _answer("ended", redirect=_ended_url(checkout))
    found = await _opened(request, checkout)
    if found is None:
        return _answer("error", message="The card processor could not be reached. Try again.")
    _, state = found
    if state.status in (PaymentStatus.REQUIRES_PAYMENT, PaymentStatus.REQUIRES_ACTION):
        return _answer(
            "declined", message="The payment was not authenticated. Nothing was charged; try again."
        )
    return await _settle(request, checkout, state)


def _ended_url(checkout: Checkout) -> str:
    return f"/checkout/{checkout.payment.id}"
