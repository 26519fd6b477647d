"""HTML of the signup page behind an authorization link (seed 000 "Generate Customer Authorization Links"):
the plan, a form for the customer's name, email and tax address, and the pages for links that open
nothing. After signing up the customer pays Invoice 0 (when the plan charges up front) and lands on the
portal, whose Sources section connects their Stripe account."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi.responses import HTMLResponse

from api.pages import document, e, locked_down, message_page, respond

_STYLE = """
label{display:block;font-weight:600;margin:.9rem 0 .3rem}
input[type=text],input[type=email]{font:inherit;width:100%;padding:.5rem .6rem;border:1px solid #c9ced8;
 border-radius:6px;background:#fff}
.row{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.field-error{color:#b42318;font-size:.9rem;margin:.25rem 0 0}
.bad{background:#fdf0ef;border-color:#e4a19b}
"""


@dataclass(frozen=True)
class SignupView:
    action: str  # the form's own path
    merchant_name: str
    plan_name: str
    plan_summary: str  # the billing terms in a sentence
    has_sources: bool  # the plan has revenue sources: the customer connects Stripe after signing up
    sandbox: bool
    values: Mapping[str, str] = field(default_factory=dict)  # the form as typed (never a secret)
    errors: Mapping[str, str] = field(default_factory=dict)  # field name → reason
    failure: str | None = None  # why the signup could not be completed


def _frame(title: str, body: str, sandbox: bool, status: int = 200) -> HTMLResponse:
    banner = "SANDBOX — test signup; nothing here is charged for real." if sandbox else None
    return locked_down(respond(document(title, f"<style>{_STYLE}</style>{body}", banner=banner), status))


def _input(view: SignupView, name: str, label: str, kind: str = "text", hint: str = "") -> str:
    error = view.errors.get(name)
    said = f'<p class="field-error" data-testid="error-{e(name)}">{e(error)}</p>' if error else ""
    return (
        f'<label for="{e(name)}">{e(label)}</label>'
        f'<input id="{e(name)}" name="{e(name)}" type="{kind}" value="{e(view.values.get(name, ""))}" '
        f"required{hint}>{said}"
    )


def signup_page(view: SignupView, status: int = 200) -> HTMLResponse:
    then = (
        " Afterwards you connect your Stripe account, so that the revenue this plan shares is tracked."
        if view.has_sources
        else ""
    )
    failure = (
        f'<div class="notice bad" role="alert" data-testid="failure">{e(view.failure)}</div>'
        if view.failure
        else ""
    )
    body = (
        '<div class="card">'
        f'<p class="muted">{e(view.merchant_name)} invites you to subscribe</p>'
        f"<h1>{e(view.plan_name)}</h1>"
        f'<p data-testid="plan-summary">{e(view.plan_summary)}</p>'
        f'<p class="muted">Sign up below: your subscription starts at once.{e(then)}</p>'
        "</div>"
        f"{failure}"
        f'<form method="post" action="{e(view.action)}" class="card">'
        + _input(view, "name", "Name (person or company)")
        + _input(view, "email", "Email", "email")
        + '<div class="row"><div>'
        + _input(view, "country", "Country (two letters, e.g. US)", hint=' maxlength="2"')
        + "</div><div>"
        + _input(view, "zipCode", "ZIP / postal code")
        + "</div></div>"
        '<p class="muted">The address is used for tax calculation only.</p>'
        '<div class="actions"><button class="pay" type="submit">Subscribe</button></div>'
        "</form>"
    )
    return _frame(f"Subscribe to {view.plan_name}", body, view.sandbox, status)


def link_page(title: str, text: str, status: int) -> HTMLResponse:
    return locked_down(message_page(title, text, status))


def tampered_page() -> HTMLResponse:
    return link_page(
        "This signup link is not valid",
        "The link is incomplete or has been altered. Ask the merchant for a new signup link.",
        403,
    )


def expired_page() -> HTMLResponse:
    return link_page(
        "This signup link has expired", "Signup links are valid for a limited time. Ask for a new one.", 410
    )


def used_page() -> HTMLResponse:
    return link_page(
        "This signup link was already used",
        "Each signup link subscribes one customer, and this one already did. If that was you, open the "
        "portal link from your confirmation; otherwise ask the merchant for a link of your own.",
        410,
    )


def unavailable_page() -> HTMLResponse:
    return link_page(
        "This plan is no longer available", "The plan behind this link was removed. Ask the merchant.", 404
    )


def cross_site_page() -> HTMLResponse:
    return link_page(
        "This form was sent from another site",
        "Signups are accepted only from the signup page itself. Open the link and try again.",
        403,
    )
