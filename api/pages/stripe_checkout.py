"""The Stripe provider's hosted checkout page (D14): the invoice, a Stripe.js card Element, and the script
that pays with it (api/stripe_checkout.py serves it and takes the card token).

The card is entered in Stripe's Element and tokenized by Stripe.js in the browser: the card number never
reaches Accrue. The page posts the token to `/checkout/<id>/card`; Accrue confirms the PaymentIntent with it
on the server and answers what happened next: paid (go to the success URL), declined (say so, try another
card, or go to the failure URL), or authenticate (3-D Secure: Stripe.js `confirmCardPayment` with the
PaymentIntent's client secret, then `/checkout/<id>/card/check`).

Stripe.js comes from Settings.stripe_js_url (localstripe serves its own in tests); the Content-Security-Policy
allows scripts, frames and requests to that origin and Stripe's, and this page's inline script by nonce.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from urllib.parse import urlsplit

from fastapi.responses import HTMLResponse

from api.pages import document, e, message_page, moment, money, period, respond

TEST_BANNER = (
    "TEST MODE — Stripe test payments: no real money moves. Pay with a Stripe test card such as "
    "4242 4242 4242 4242."
)
STRIPE_ORIGINS = ("https://js.stripe.com", "https://api.stripe.com", "https://hooks.stripe.com")


@dataclass(frozen=True)
class Line:
    name: str
    quantity: Decimal | None
    amount: Decimal
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True)
class StripeCheckoutView:
    session_id: str
    merchant_name: str
    invoice_number: str
    lines: list[Line]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    currency: str
    expires_at: datetime
    declined_before: bool
    live: bool


def banner(live: bool) -> str | None:
    return None if live else TEST_BANNER


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _csp(stripe_js_url: str, nonce: str) -> str:
    origins = " ".join(dict.fromkeys(o for o in (_origin(stripe_js_url), *STRIPE_ORIGINS) if o))
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data: https://*.stripe.com; base-uri 'none'; "
        f"script-src 'nonce-{nonce}' {origins}; connect-src 'self' {origins}; frame-src {origins}; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def _quantity(value: Decimal | None) -> str:
    return "" if value is None else format(value.normalize(), "f")


def _invoice(view: StripeCheckoutView) -> str:
    rows = "".join(
        f'<tr><td>{e(line.name)}<div class="muted">{e(period(line.period_start, line.period_end))}</div></td>'
        f'<td class="num">{e(_quantity(line.quantity))}</td>'
        f'<td class="num">{e(money(line.amount, view.currency))}</td></tr>'
        for line in view.lines
    )
    return (
        f"<h2>Invoice {e(view.invoice_number)}</h2>"
        '<table><thead><tr><th>Item</th><th class="num">Qty</th><th class="num">Amount</th></tr></thead>'
        f"<tbody>{rows}"
        '<tr class="sum"><td colspan="2">Subtotal</td>'
        f'<td class="num">{e(money(view.subtotal, view.currency))}</td></tr>'
        '<tr class="sum"><td colspan="2">Tax</td>'
        f'<td class="num">{e(money(view.tax, view.currency))}</td></tr>'
        f'<tr class="total"><td colspan="2">Total due</td>'
        f'<td class="num" data-testid="total">{e(money(view.total, view.currency))}</td></tr>'
        "</tbody></table>"
    )


_SCRIPT = """
(function () {
  var config = JSON.parse(document.getElementById('checkout-config').textContent);
  var form = document.getElementById('pay-form');
  var button = document.getElementById('pay');
  var message = document.getElementById('card-message');
  var stripe = Stripe(config.publishableKey);
  var card = stripe.elements().create('card');
  card.mount('#card-element');
  function say(text, kind) {
    message.textContent = text || '';
    message.className = 'notice' + (kind ? ' ' + kind : '');
    message.hidden = !text;
  }
  async function post(path) {
    var response = await fetch(path.url, {
      method: 'POST', headers: {'Content-Type': 'application/json'}, credentials: 'same-origin',
      body: JSON.stringify(path.body || {})
    });
    var body = await response.json().catch(function () { return {}; });
    if (!response.ok && !body.outcome) { body = {outcome: 'error', message: body.message || 'Try again.'}; }
    return body;
  }
  async function settle(answer) {
    if (answer.outcome === 'authenticate') {
      say('Confirm the payment with your bank…');
      var result = await stripe.confirmCardPayment(answer.clientSecret);
      if (result && result.error) { say(result.error.message || 'Authentication failed.'); }
      answer = await post({url: config.checkUrl});
    }
    if (answer.redirect) { window.location.assign(answer.redirect); return; }
    say(answer.message || 'Something went wrong. Try again.', answer.outcome === 'declined' ? 'warn' : '');
    button.disabled = false;
  }
  form.addEventListener('submit', async function (event) {
    event.preventDefault();
    button.disabled = true;
    say('Processing…');
    try {
      var created = await stripe.createToken(card);
      if (!created || created.error || !created.token) {
        say((created && created.error && created.error.message) || 'Check the card details.');
        button.disabled = false;
        return;
      }
      await settle(await post({url: config.cardUrl, body: {token: created.token.id}}));
    } catch (err) {
      say('The payment could not be sent. Try again.');
      button.disabled = false;
    }
  });
})();
"""


def checkout_page(view: StripeCheckoutView, publishable_key: str, stripe_js_url: str) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    base = f"/checkout/{view.session_id}"
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
        f"<h1>{e(money(view.total, view.currency))}</h1>"
        f'<p class="muted">This checkout expires {e(moment(view.expires_at))}.</p>'
        f"{retry}{_invoice(view)}"
        '<form id="pay-form" class="actions" autocomplete="on">'
        '<label for="card-element">Card</label>'
        '<div id="card-element" data-testid="card-element" class="card-field"></div>'
        '<button id="pay" class="pay" type="submit" data-testid="pay">'
        f"Pay {e(money(view.total, view.currency))}</button></form>"
        '<div id="card-message" class="notice" role="alert" hidden></div>'
        '<p class="muted">Card payments are processed by Stripe; Accrue never sees the card number.</p>'
        "</div>"
        f'<script type="application/json" id="checkout-config">{config}</script>'
        f'<script src="{e(stripe_js_url)}"></script>'
        f'<script nonce="{nonce}">{_SCRIPT}</script>'
    )
    response = respond(document(f"Pay {view.merchant_name}", body, banner=banner(view.live)))
    response.headers["Content-Security-Policy"] = _csp(stripe_js_url, nonce)
    response.headers["X-Frame-Options"] = "DENY"
    return response


def paid_page(view: StripeCheckoutView) -> HTMLResponse:
    body = (
        '<div class="card"><div class="notice ok">Payment received. Thank you!</div>'
        f"<h1>{e(money(view.total, view.currency))} paid to {e(view.merchant_name)}</h1>"
        f"{_invoice(view)}</div>"
    )
    return respond(document("Payment received", body, banner=banner(view.live)))


def declined_page(view: StripeCheckoutView) -> HTMLResponse:
    body = (
        '<div class="card"><h1>Payment declined</h1>'
        "<p>The card was declined and nothing was charged. The invoice stays open until the checkout expires "
        f"({e(moment(view.expires_at))}).</p>"
        '<div class="actions">'
        f'<a class="button pay" href="/checkout/{e(view.session_id)}">Try another card</a></div></div>'
    )
    return respond(document("Payment declined", body, banner=banner(view.live)))


def processing_page(view: StripeCheckoutView) -> HTMLResponse:
    body = (
        '<div class="card"><h1>Confirming your payment…</h1>'
        "<p>This page refreshes by itself in a moment. Not paid yet? "
        f'<a href="/checkout/{e(view.session_id)}">Back to the checkout</a>.</p></div>'
    )
    return respond(document("Confirming payment", body, banner=banner(view.live), refresh_seconds=2))


def expired_page(live: bool) -> HTMLResponse:
    return message_page(
        "This checkout has expired",
        "The payment window closed before the invoice was paid, so nothing can be paid here any more. "
        "Ask the merchant for a new payment link.",
        410,
        banner=banner(live),
    )


def cancelled_page(live: bool) -> HTMLResponse:
    return message_page(
        "This checkout was cancelled",
        "The invoice it was for is no longer payable (the subscription was cancelled or the invoice voided). "
        "Nothing was charged.",
        410,
        banner=banner(live),
    )


def unavailable_page(live: bool) -> HTMLResponse:
    return message_page(
        "Payments are unavailable right now",
        "The card processor could not be reached. Nothing was charged; reload this page in a minute.",
        503,
        banner=banner(live),
    )


def wrong_buttons_page(live: bool) -> HTMLResponse:
    return message_page(
        "This checkout takes cards",
        "This invoice is paid by card through Stripe; there are no test buttons here. Open the checkout "
        "again and enter a card.",
        409,
        banner=banner(live),
    )


# Shared with the one-off payment's Stripe page (api/pages/one_off_payment.py).
SCRIPT = _SCRIPT
csp = _csp
