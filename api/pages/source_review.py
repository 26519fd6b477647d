"""HTML of the merchant's review page (`GET /v0/sources/{id}/reviewLink`): a source's pending events with
approve, reject and bulk actions. One form, no script: each row's buttons name their event, the bulk
buttons act on the ticked rows or on every row of the page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fastapi.responses import HTMLResponse

from api.pages import day, document, e, locked_down, message_page, moment, money, respond
from db.models import Source, SourceEvent

PAGE_SIZE = 50
_STYLE = """
main{max-width:68rem}
.secondary{background:#fff;color:#1d2330;border-color:#c9ced8}.secondary:hover{background:#f3f4f7}
.bad{background:#fdf0ef;border-color:#e4a19b}
td form{display:inline}
.pager{display:flex;gap:1rem;justify-content:space-between;margin-top:.75rem}
"""


@dataclass(frozen=True)
class ReviewView:
    base: str  # the page's own path, /sources/review/<token>
    source: Source
    environment: str
    expires_at: datetime
    events: Sequence[SourceEvent]
    total: int  # pending events of the source
    offset: int


def _frame(title: str, body: str, environment: str, status: int = 200) -> HTMLResponse:
    banner = (
        "SANDBOX — test data; approving here bills sandbox subscriptions only."
        if environment == "sandbox"
        else None
    )
    return locked_down(respond(document(title, f"<style>{_STYLE}</style>{body}", banner=banner), status))


def _customer(event: SourceEvent) -> str:
    who = " · ".join(e(part) for part in (event.customer_name, event.customer_email) if part)
    return f'{who or "—"}<br><span class="muted">{e(event.customer_id)}</span>'


def _row(event: SourceEvent) -> str:
    return (
        f'<tr data-testid="event-row" data-event-id="{e(event.id)}">'
        f'<td><input type="checkbox" name="event_ids" value="{e(event.id)}" '
        f'aria-label="select {e(event.id)}"></td>'
        f'<td class="nowrap">{e(day(event.paid_at))}</td>'
        f'<td class="num">{e(money(event.amount, event.currency))}</td>'
        f"<td>{_customer(event)}</td>"
        f"<td><code>{e(event.external_event_id)}</code></td>"
        '<td class="nowrap">'
        f'<button class="pay small" type="submit" name="one" value="approve {e(event.id)}">Approve</button> '
        f'<button class="decline small" type="submit" name="one" value="reject {e(event.id)}">Reject</button>'
        "</td></tr>"
    )


def _pager(view: ReviewView) -> str:
    links = []
    if view.offset > 0:
        links.append(f'<a href="{e(view.base)}?offset={max(0, view.offset - PAGE_SIZE)}">← Newer</a>')
    if view.offset + PAGE_SIZE < view.total:
        links.append(f'<a href="{e(view.base)}?offset={view.offset + PAGE_SIZE}">Older →</a>')
    return f'<div class="pager">{"".join(links)}</div>' if links else ""


def review_page(view: ReviewView, notice: str | None = None, failed: bool = False) -> HTMLResponse:
    source = view.source
    head = (
        '<div class="card">'
        f'<p class="muted">Revenue source · {e(source.name)} · plan {e(source.plan_id)}</p>'
        f"<h1>Pending revenue: {view.total} event{'s' if view.total != 1 else ''}</h1>"
        "<p class=\"muted\">Approved revenue is billed on the customer's period invoice at the plan's "
        "percentage; rejected revenue is billed nowhere. Neither can be undone. "
        f"This link expires {e(moment(view.expires_at))}; anyone holding it can review these events.</p>"
        "</div>"
    )
    shown = ""
    if notice:
        css = "notice bad" if failed else "notice ok"
        shown = f'<div class="{css}" role="status" data-testid="notice">{e(notice)}</div>'
    if not view.events:
        body = '<div class="card"><p data-testid="empty">Nothing is waiting for review.</p></div>'
        return _frame("Review pending revenue", head + shown + body, view.environment)
    page_ids = "".join(f'<input type="hidden" name="page_ids" value="{e(ev.id)}">' for ev in view.events)
    table = (
        f'<form method="post" action="{e(view.base)}" class="card">'
        f'<input type="hidden" name="offset" value="{view.offset}">{page_ids}'
        '<table><thead><tr><th></th><th>Paid</th><th class="num">Amount</th><th>Customer</th>'
        "<th>Stripe invoice</th><th></th></tr></thead><tbody>"
        + "".join(_row(ev) for ev in view.events)
        + "</tbody></table>"
        '<div class="actions">'
        '<button class="pay" type="submit" name="bulk" value="approve selected">Approve selected</button>'
        '<button class="decline" type="submit" name="bulk" value="reject selected">Reject selected</button>'
        '<button class="secondary" type="submit" name="bulk" value="approve page">'
        "Approve all on this page</button>"
        '<button class="secondary" type="submit" name="bulk" value="reject page">'
        "Reject all on this page</button>"
        "</div></form>"
    )
    return _frame("Review pending revenue", head + shown + table + _pager(view), view.environment)


def link_page(title: str, text: str, status: int) -> HTMLResponse:
    return locked_down(message_page(title, text, status))


def tampered_page() -> HTMLResponse:
    return link_page(
        "This review link is not valid",
        "The link is incomplete or has been altered. Ask for a new one with GET /v0/sources/{id}/reviewLink.",
        403,
    )


def expired_page() -> HTMLResponse:
    return link_page(
        "This review link has expired",
        "Review links are valid for the time asked for (one hour by default). Ask for a new one with "
        "GET /v0/sources/{id}/reviewLink.",
        410,
    )


def gone_page() -> HTMLResponse:
    return link_page("Source not found", "The source behind this link no longer exists.", 404)


def cross_site_page() -> HTMLResponse:
    return link_page(
        "This form was sent from another site",
        "Reviews are accepted only from the review page itself. Open the review link and try again.",
        403,
    )
