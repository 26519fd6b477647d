"""The customer portal: one subscription through a signed link; read-only but for its Sources section."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from fastapi.responses import HTMLResponse

from api.pages import day, document, e, message_page, moment, money, period, respond, status_badge
from api.pages.portal_sources import SourceRow, sources_card
from api.schemas.invoices import exact
from domain.money import format_estimate
from domain.pricing import Rate


@dataclass(frozen=True)
class Usage:
    name: str
    quantity: Decimal
    unit: str
    rate: Rate
    amount: Decimal


@dataclass(frozen=True)
class InvoiceRow:
    number: str
    period_start: datetime
    period_end: datetime
    status: str
    total: Decimal
    pay_url: str | None


@dataclass(frozen=True)
class UsageCharge:
    """One usage event of the subscription, as the "Track spending" section lists it."""

    at: datetime
    description: str  # "Basic submissions × 3"
    amount: Decimal  # total charged (instant and in arrears, tax included)
    paid_from: str  # "reservation" | "wallet" | "invoice"
    refunded: bool


@dataclass(frozen=True)
class WalletMove:
    at: datetime
    kind: str  # the ledger transaction's kind: funding, usage, reserve, release, refund
    amount: Decimal  # signed: what it did to the wallet's balance


@dataclass(frozen=True)
class Spending:
    """The customer's wallet in the subscription's currency and its recent usage charges."""

    wallet_id: str | None
    balance: Decimal
    reserved: Decimal
    active_entitlements: int
    charges: list[UsageCharge]
    moves: list[WalletMove]


@dataclass(frozen=True)
class PortalView:
    merchant_name: str
    customer_name: str
    subscription_id: str
    name: str
    status: str
    plan_name: str
    started_at: datetime
    terminated_at: datetime | None
    current_period: tuple[datetime, datetime] | None
    currency: str
    usage: list[Usage]
    invoices: list[InvoiceRow]
    sandbox: bool
    link_expires_at: datetime
    sources: list[SourceRow] = field(default_factory=list)
    spending: Spending | None = None  # pay-as-you-go: the wallet, reservations and usage charges
    notice: str | None = None  # what a Sources form just did
    notice_failed: bool = False


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


_WORD = re.compile(r"(|.*\s)([a-z]+)")  # inflect only a lowercase word: "calls", not "USD" or "kWh"


def _inflect(unit: str, one: bool) -> str:
    """The unit's singular for one, its plural otherwise; metric units are free text, usually plural."""
    match = _WORD.fullmatch(unit)
    if match is None:
        return unit
    head, word = match.groups()
    if one:
        for plural, singular in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x")):
            if word.endswith(plural) and len(word) > len(plural):
                return head + word[: -len(plural)] + singular
        if word.endswith("s") and not word.endswith(("ss", "us", "is")):
            return head + word[:-1]
        return unit
    if word.endswith("s"):
        return unit
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return head + word[:-1] + "ies"
    return head + word + ("es" if word.endswith(("ch", "sh", "x", "z")) else "s")


def quantity_text(quantity: Decimal, unit: str) -> str:
    """'1 submission', '3 submissions', '1.5 GB'."""
    return f"{_plain(quantity)} {_inflect(unit, quantity == 1)}".rstrip()


def rate_text(rate: Rate, unit: str, currency: str) -> str:
    """'0.000012 USD per token', '5.00 USD per 1000 calls', '2.9% of each amount'."""
    if rate.share:
        return f"{_plain(rate.price * 100)}% of each amount"
    each = _inflect(unit, True) if rate.per == 1 else quantity_text(rate.per, unit)
    text = f"{exact(rate.price, currency)} {currency} per {each or 'unit'}"
    return f"average {text}" if rate.average else text


def _summary(view: PortalView) -> str:
    current = period(*view.current_period) if view.current_period else "—"
    ended = (
        f"<dt>Ended</dt><dd>{e(moment(view.terminated_at))}</dd>" if view.terminated_at is not None else ""
    )
    return (
        '<div class="card">'
        f'<p class="muted">{e(view.merchant_name)} · customer portal for {e(view.customer_name)}</p>'
        f"<h1>{e(view.name)} {status_badge(view.status)}</h1>"
        "<dl>"
        f'<dt>Subscription</dt><dd><code data-testid="subscription-id">{e(view.subscription_id)}</code></dd>'
        f"<dt>Plan</dt><dd>{e(view.plan_name)}</dd>"
        f"<dt>Started</dt><dd>{e(day(view.started_at))}</dd>{ended}"
        f"<dt>Current period</dt><dd>{e(current)}</dd>"
        "</dl></div>"
    )


def _usage(view: PortalView) -> str:
    if view.current_period is None:
        return ""
    if not view.usage and view.spending is not None:
        return ""  # pay-as-you-go, nothing billed in arrears: Track spending shows the usage
    if not view.usage:
        rows = '<tr><td colspan="4" class="muted">This plan has no metered prices.</td></tr>'
    else:
        # Sub-cent estimates keep their first significant digits: 0.000036 USD, not 0.00 USD.
        rows = "".join(
            f'<tr><td>{e(u.name)}</td><td class="num">{e(quantity_text(u.quantity, u.unit))}</td>'
            f'<td class="num">{e(rate_text(u.rate, u.unit, view.currency))}</td>'
            f'<td class="num">{e(format_estimate(u.amount, view.currency))} {e(view.currency)}</td></tr>'
            for u in view.usage
        )
    return (
        '<div class="card"><h2>Usage this period</h2>'
        '<p class="muted">Quantities so far; the amounts are estimates until the period is invoiced.</p>'
        '<table><thead><tr><th>Price</th><th class="num">Quantity so far</th><th class="num">Unit price</th>'
        f'<th class="num">Estimated</th></tr></thead><tbody>{rows}</tbody></table></div>'
    )


_PAID_FROM = {"reservation": "Reserved funds", "wallet": "Wallet", "invoice": "Next invoice"}
_MOVES = {
    "funding": "Top-up",
    "usage": "Usage charge",
    "reserve": "Reserved for an entitlement",
    "release": "Reservation released",
    "refund": "Refund",
}


def _spending(view: PortalView) -> str:
    """ "Track spending" (seed 001): what the wallet holds, what is reserved, what usage cost lately."""
    spent = view.spending
    if spent is None:
        return ""
    currency = view.currency
    held = (
        ""
        if spent.active_entitlements == 0
        else (
            f" for {spent.active_entitlements} active "
            f"{'entitlement' if spent.active_entitlements == 1 else 'entitlements'}"
        )
    )
    if spent.charges:
        charges = "".join(
            f'<tr><td class="nowrap">{e(moment(c.at))}</td><td>{e(c.description)}</td>'
            f"<td>{e(_PAID_FROM.get(c.paid_from, c.paid_from))}"
            f"{' ' + status_badge('refunded') if c.refunded else ''}</td>"
            f'<td class="num">{e(exact(c.amount, currency))} {e(currency)}</td></tr>'
            for c in spent.charges
        )
    else:
        charges = '<tr><td colspan="4" class="muted">No usage charged yet.</td></tr>'
    moves = "".join(
        f'<tr><td class="nowrap">{e(moment(m.at))}</td><td>{e(_MOVES.get(m.kind, m.kind))}</td>'
        f'<td class="num">{"+" if m.amount > 0 else ""}{e(exact(m.amount, currency))} {e(currency)}</td></tr>'
        for m in spent.moves
    )
    activity = (
        '<h3>Wallet activity</h3><table data-testid="wallet-activity"><thead><tr><th>When</th><th>What</th>'
        f'<th class="num">Amount</th></tr></thead><tbody>{moves}</tbody></table>'
        if spent.moves
        else ""
    )
    return (
        '<div class="card" data-testid="track-spending"><h2>Track spending</h2>'
        "<dl>"
        f'<dt>Wallet balance</dt><dd data-testid="wallet-balance">{e(exact(spent.balance, currency))} '
        f"{e(currency)}</dd>"
        f'<dt>Reserved funds</dt><dd data-testid="reserved-funds">{e(exact(spent.reserved, currency))} '
        f"{e(currency)}{e(held)}</dd>"
        "</dl>"
        "<h3>Recent usage charges</h3>"
        '<table data-testid="usage-charges"><thead><tr><th>When</th><th>Usage</th><th>Paid from</th>'
        f'<th class="num">Amount</th></tr></thead><tbody>{charges}</tbody></table>'
        f"{activity}</div>"
    )


def _invoices(view: PortalView) -> str:
    if not view.invoices:
        rows = '<tr><td colspan="5" class="muted">No invoices yet.</td></tr>'
    else:
        rows = "".join(
            f'<tr><td class="nowrap">{e(i.number)}</td>'
            f'<td class="nowrap">{e(period(i.period_start, i.period_end))}</td>'
            f"<td>{status_badge(i.status)}</td>"
            f'<td class="num">{e(money(i.total, view.currency))}</td>'
            f"<td>{_pay(i)}</td></tr>"
            for i in view.invoices
        )
    return (
        '<div class="card"><h2>Invoices</h2>'
        '<table><thead><tr><th>Number</th><th>Period</th><th>Status</th><th class="num">Total</th><th></th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _pay(row: InvoiceRow) -> str:
    if not row.pay_url:
        return ""
    # An autoCharge invoice whose off-session charge failed: paying it here ends its dunning retries.
    label = "Pay now" if row.status == "PAYMENT_FAILED" else "Pay"
    return f'<a class="button pay small" href="{e(row.pay_url)}">{label}</a>'


def portal_page(view: PortalView) -> HTMLResponse:
    kind = "connects your sources" if view.sources else "is read-only"
    note = f'<p class="muted">This link {kind} and expires {e(moment(view.link_expires_at))}.</p>'
    sources = sources_card(view.sources, view.notice, view.notice_failed)
    body = _summary(view) + sources + _spending(view) + _usage(view) + _invoices(view) + note
    banner = "SANDBOX — test data; invoices here are paid with test payments only." if view.sandbox else None
    return respond(document(f"{view.name} — {view.merchant_name}", body, banner=banner))


def tampered_page() -> HTMLResponse:
    return message_page(
        "This portal link is not valid",
        "The link is incomplete or has been altered. Ask the merchant for a new portal link.",
        403,
    )


def expired_page() -> HTMLResponse:
    return message_page(
        "This portal link has expired",
        "Portal links are valid for a limited time. Ask the merchant for a new one.",
        410,
    )


def missing_page() -> HTMLResponse:
    return message_page("Subscription not found", "The subscription of this link no longer exists.", 404)
