"""The sandbox provider's hosted checkout: the invoice, and buttons that complete or decline a test
payment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from fastapi.responses import HTMLResponse

from api.pages import document, e, message_page, moment, money, period, respond

BANNER = "SANDBOX — test payment page. No real money moves and no card is needed."


@dataclass(frozen=True)
class Line:
    name: str
    quantity: Decimal | None
    amount: Decimal
    # The period the line bills, which is not always the invoice's: a period invoice carries the next
    # period's in-advance fees.
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True)
class CheckoutView:
    session_id: str
    merchant_name: str
    invoice_number: str
    period_start: datetime
    period_end: datetime
    lines: list[Line]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    currency: str
    expires_at: datetime
    declined_before: bool


def _quantity(value: Decimal | None) -> str:
    if value is None:
        return ""
    return format(value.normalize(), "f")


def _invoice(view: CheckoutView) -> str:
    rows = "".join(
        f'<tr><td>{e(line.name)}<div class="muted">{e(period(line.period_start, line.period_end))}</div></td>'
        f'<td class="num">{e(_quantity(line.quantity))}</td>'
        f'<td class="num">{e(money(line.amount, view.currency))}</td></tr>'
        for line in view.lines
    )
    sums = (
        f'<tr class="sum"><td colspan="2">Subtotal</td>'
        f'<td class="num">{e(money(view.subtotal, view.currency))}</td></tr>'
        f'<tr class="sum"><td colspan="2">Tax</td>'
        f'<td class="num">{e(money(view.tax, view.currency))}</td></tr>'
        f'<tr class="total"><td colspan="2">Total due</td>'
        f'<td class="num" data-testid="total">{e(money(view.total, view.currency))}</td></tr>'
    )
    return (
        f"<h2>Invoice {e(view.invoice_number)}</h2>"
        f'<p class="muted">Service period {e(period(view.period_start, view.period_end))}</p>'
        '<table><thead><tr><th>Item</th><th class="num">Qty</th><th class="num">Amount</th></tr></thead>'
        f"<tbody>{rows}{sums}</tbody></table>"
    )


def checkout_page(view: CheckoutView) -> HTMLResponse:
    base = f"/checkout/{e(view.session_id)}"
    retry = (
        '<div class="notice">The last test payment was declined. Nothing was charged; you can try again.'
        "</div>"
        if view.declined_before
        else ""
    )
    body = (
        '<div class="card">'
        f'<p class="muted">Pay {e(view.merchant_name)}</p>'
        f"<h1>{e(money(view.total, view.currency))}</h1>"
        f'<p class="muted">This checkout expires {e(moment(view.expires_at))}.</p>'
        f"{retry}{_invoice(view)}"
        f"{sandbox_actions(base)}"
        "</div>"
    )
    return respond(document(f"Pay {view.merchant_name}", body, banner=BANNER))


def sandbox_actions(base: str) -> str:
    """The sandbox provider's two buttons, posting to `<base>/complete` and `<base>/decline`."""
    return (
        '<div class="actions">'
        f'<form method="post" action="{base}/complete"><button class="pay" type="submit">Pay (test)</button>'
        "</form>"
        f'<form method="post" action="{base}/decline">'
        '<button class="decline" type="submit">Decline (test)</button></form>'
        "</div>"
        '<p class="muted">Sandbox provider: “Pay (test)” records a successful payment, “Decline (test)” a '
        "declined one, exactly as a card processor would report them.</p>"
    )


def paid_page(view: CheckoutView) -> HTMLResponse:
    body = (
        '<div class="card">'
        '<div class="notice ok">Payment received (test). Thank you!</div>'
        f"<h1>{e(money(view.total, view.currency))} paid to {e(view.merchant_name)}</h1>"
        f"{_invoice(view)}</div>"
    )
    return respond(document("Payment received", body, banner=BANNER))


def declined_page(view: CheckoutView) -> HTMLResponse:
    body = (
        '<div class="card">'
        "<h1>Payment declined (test)</h1>"
        "<p>Nothing was charged. The invoice is still open until the checkout expires "
        f"({e(moment(view.expires_at))}).</p>"
        f'<div class="actions"><a class="button pay" href="/checkout/{e(view.session_id)}">Try again</a>'
        "</div>"
        "</div>"
    )
    return respond(document("Payment declined", body, banner=BANNER))


def processing_page(view: CheckoutView) -> HTMLResponse:
    body = (
        '<div class="card"><h1>Confirming your payment…</h1>'
        "<p>This page refreshes by itself in a moment. No payment was sent yet? "
        f'<a href="/checkout/{e(view.session_id)}">Back to the checkout</a>.</p></div>'
    )
    return respond(document("Confirming payment", body, banner=BANNER, refresh_seconds=2))


def expired_page() -> HTMLResponse:
    return message_page(
        "This checkout has expired",
        "The payment window closed before the invoice was paid, so nothing can be paid here any more. "
        "Ask the merchant for a new payment link.",
        410,
        banner=BANNER,
    )


def cancelled_page() -> HTMLResponse:
    return message_page(
        "This checkout was cancelled",
        "The invoice it was for is no longer payable (the subscription was cancelled or the invoice voided). "
        "Nothing was charged.",
        410,
        banner=BANNER,
    )


def live_page() -> HTMLResponse:
    return message_page(
        "Payments are not available yet",
        "This checkout belongs to the live environment. Accrue's sandbox payment provider only takes test "
        "payments, and no real payment provider is configured, so nothing can be paid here.",
        403,
    )


def missing_page() -> HTMLResponse:
    return message_page(
        "Checkout not found", "There is no checkout at this address. Check the link you were given.", 404
    )
