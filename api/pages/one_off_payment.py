"""The sandbox provider's hosted page for a one-off payment (`/pay/{id}`): what is being paid for, and
buttons that complete or decline a test payment."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from fastapi.responses import HTMLResponse

from api.pages import document, e, message_page, moment, money, respond
from api.pages import stripe_checkout as stripe_pages
from api.pages.checkout import BANNER, sandbox_actions


@dataclass(frozen=True)
class PaymentLine:
    description: str
    amount: Decimal  # unit amount
    quantity: int


@dataclass(frozen=True)
class PaymentView:
    payment_id: str
    merchant_name: str
    amount: Decimal
    currency: str
    reference: str | None
    lines: list[PaymentLine]
    expires_at: datetime
    declined_before: bool


def _details(view: PaymentView) -> str:
    reference = f'<p class="muted">Reference {e(view.reference)}</p>' if view.reference else ""
    if not view.lines:
        return reference
    rows = "".join(
        f'<tr><td>{e(line.description)}</td><td class="num">{line.quantity}</td>'
        f'<td class="num">{e(money(line.amount * line.quantity, view.currency))}</td></tr>'
        for line in view.lines
    )
    total = (
        f'<tr class="total"><td colspan="2">Total due</td>'
        f'<td class="num" data-testid="total">{e(money(view.amount, view.currency))}</td></tr>'
    )
    return (
        f"{reference}"
        '<table><thead><tr><th>Item</th><th class="num">Qty</th><th class="num">Amount</th></tr></thead>'
        f"<tbody>{rows}{total}</tbody></table>"
    )


def payment_page(view: PaymentView) -> HTMLResponse:
    base = f"/pay/{e(view.payment_id)}"
    retry = (
        '<div class="notice">The last test payment was declined. Nothing was charged; you can try again.'
        "</div>"
        if view.declined_before
        else ""
    )
    body = (
        '<div class="card">'
        f'<p class="muted">Pay {e(view.merchant_name)}</p>'
        f'<h1 data-testid="amount">{e(money(view.amount, view.currency))}</h1>'
        f'<p class="muted">This payment link expires {e(moment(view.expires_at))}.</p>'
        f"{retry}{_details(view)}"
        f"{sandbox_actions(base)}"
        "</div>"
    )
    return respond(document(f"Pay {view.merchant_name}", body, banner=BANNER))


def paid_page(view: PaymentView) -> HTMLResponse:
    body = (
        '<div class="card">'
        '<div class="notice ok">Payment received (test). Thank you!</div>'
        f"<h1>{e(money(view.amount, view.currency))} paid to {e(view.merchant_name)}</h1>"
        f"{_details(view)}</div>"
    )
    return respond(document("Payment received", body, banner=BANNER))


def declined_page(view: PaymentView) -> HTMLResponse:
    body = (
        '<div class="card">'
        "<h1>Payment declined (test)</h1>"
        "<p>Nothing was charged. The payment link stays open until it expires "
        f"({e(moment(view.expires_at))}).</p>"
        f'<div class="actions"><a class="button pay" href="/pay/{e(view.payment_id)}">Try again</a></div>'
        "</div>"
    )
    return respond(document("Payment declined", body, banner=BANNER))


def processing_page(view: PaymentView) -> HTMLResponse:
    body = (
        '<div class="card"><h1>Confirming your payment…</h1>'
        "<p>This page refreshes by itself in a moment. No payment was sent yet? "
        f'<a href="/pay/{e(view.payment_id)}">Back to the payment</a>.</p></div>'
    )
    return respond(document("Confirming payment", body, banner=BANNER, refresh_seconds=2))


def expired_page() -> HTMLResponse:
    return message_page(
        "This payment link has expired",
        "The payment window closed before it was paid, so nothing can be paid here any more. "
        "Ask the merchant for a new payment link.",
        410,
        banner=BANNER,
    )


def cancelled_page() -> HTMLResponse:
    return message_page(
        "This payment was cancelled",
        "The merchant cancelled this payment. Nothing was charged.",
        410,
        banner=BANNER,
    )


def live_page() -> HTMLResponse:
    return message_page(
        "Payments are not available yet",
        "This payment belongs to the live environment, and Accrue's sandbox payment provider only takes test "
        "payments, so nothing can be paid here.",
        403,
    )


def missing_page() -> HTMLResponse:
    return message_page(
        "Payment not found", "There is no payment at this address. Check the link you were given.", 404
    )


# ---- the Stripe provider's page (card entry with Stripe.js; api/pages/stripe_checkout.py's script) --------


def stripe_payment_page(
    view: PaymentView, publishable_key: str, stripe_js_url: str, live: bool
) -> HTMLResponse:
    """The payment with a Stripe.js card Element; the script (shared with the invoice checkout) posts the
    card token to `/pay/<id>/card` and follows the answer (redirect, decline message, 3-D Secure)."""
    nonce = secrets.token_urlsafe(16)
    base = f"/pay/{view.payment_id}"
    config = json.dumps(
        {"publishableKey": publishable_key, "cardUrl": f"{base}/card", "checkUrl": f"{base}/card/check"}
    ).replace("<", "\\u003c")
    retry = (
        '<div class="notice">The last payment attempt was declined. Nothing was charged; try another '
        "card.</div>"
        if view.declined_before
        else ""
    )
    body = (
        '<div class="card">'
        f'<p class="muted">Pay {e(view.merchant_name)}</p>'
        f'<h1 data-testid="amount">{e(money(view.amount, view.currency))}</h1>'
        f'<p class="muted">This payment link expires {e(moment(view.expires_at))}.</p>'
        f"{retry}{_details(view)}"
        '<form id="pay-form" class="actions" autocomplete="on">'
        '<label for="card-element">Card</label>'
        '<div id="card-element" data-testid="card-element" class="card-field"></div>'
        '<button id="pay" class="pay" type="submit" data-testid="pay">'
        f"Pay {e(money(view.amount, view.currency))}</button></form>"
        '<div id="card-message" class="notice" role="alert" hidden></div>'
        '<p class="muted">Card payments are processed by Stripe; Accrue never sees the card number.</p>'
        "</div>"
        f'<script type="application/json" id="checkout-config">{config}</script>'
        f'<script src="{e(stripe_js_url)}"></script>'
        f'<script nonce="{nonce}">{stripe_pages.SCRIPT}</script>'
    )
    response = respond(document(f"Pay {view.merchant_name}", body, banner=stripe_pages.banner(live)))
    response.headers["Content-Security-Policy"] = stripe_pages.csp(stripe_js_url, nonce)
    response.headers["X-Frame-Options"] = "DENY"
    return response


def stripe_unavailable_page() -> HTMLResponse:
    return message_page(
        "The card processor is not reachable",
        "Nothing was charged. Try again in a moment.",
        503,
    )
