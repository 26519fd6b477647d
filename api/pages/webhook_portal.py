"""The hosted webhook portal: a merchant's endpoints, their secrets and the message log, through a signed
link (no API key). Every form posts back under the link's own path, so the token is the capability."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi.responses import HTMLResponse

from api.pages import document, e, message_page, moment, respond, status_badge
from db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage
from domain.webhook_events import EventType

# Forms post only to this site, and no other site may frame the page and click its buttons.
_CSP_EXTRA = "; form-action 'self'; frame-ancestors 'none'"

_STYLE = """
main{max-width:64rem}
label{display:block;font-weight:600;margin:.9rem 0 .3rem}
input[type=text],input[type=url],input[type=number],select{font:inherit;width:100%;padding:.5rem .6rem;
 border:1px solid #c9ced8;border-radius:6px;background:#fff}
fieldset{border:1px solid #dde1e8;border-radius:8px;margin:.9rem 0 0;padding:.5rem 1rem .75rem}
legend{font-weight:600;padding:0 .3rem}
.types{display:grid;grid-template-columns:repeat(auto-fill,minmax(16rem,1fr));gap:.15rem 1rem}
.types label{font-weight:400;margin:.2rem 0}
.error{color:#b42318;font-size:.9rem;margin:.25rem 0 0}
.notice.bad{background:#fdf0ef;border-color:#e4a19b}
.secondary{background:#fff;color:#1d2330;border-color:#c9ced8}.secondary:hover{background:#f3f4f7}
.row-actions{display:flex;gap:.5rem;flex-wrap:wrap;align-items:center}
.row-actions form{margin:0}
pre{background:#f0f2f5;border-radius:6px;padding:.75rem;overflow:auto;font-size:.85rem;max-height:24rem}
td code.excerpt{white-space:pre-wrap;word-break:break-all}
.scroll{overflow-x:auto}
.small-id{font-size:.8rem}
h2.spaced{margin-top:1.25rem}
.status-delivered,.status-enabled{background:#dff3e6;color:#17633a}
.status-pending{background:#fff1d6;color:#8a5300}
.status-failed,.status-disabled{background:#f2e3e3;color:#8c1d18}
.status-skipped{background:#eceef2;color:#5b6475}
"""

NOTICES = {
    "created": "Endpoint added. Its signing secret is below: reveal it to configure your receiver.",
    "updated": "Endpoint saved.",
    "disabled": "Endpoint disabled. Messages for it are kept; enable it to receive them.",
    "enabled": "Endpoint enabled. Messages that waited while it was disabled are being delivered.",
    "rotated": "Secret rotated. The previous secret keeps signing for 24 hours, so switch your receiver "
    "to the new one within that time.",
    "test_sent": "Test event queued for this endpoint; its attempt shows below in a moment.",
    "resent": "Message queued again for that endpoint, on a fresh retry schedule.",
    "deleted": "Endpoint deleted. Its messages stay in the log.",
}

RATE_LIMIT_HELP = "At most this many messages per second; leave empty for no limit."
FILTER_HELP = "Tick the event types to receive; leave every box empty to receive all event types."


@dataclass(frozen=True)
class Portal:
    """Who the link is for, and where its pages live."""

    base: str  # /webhooks/portal/<token>
    merchant_name: str
    environment: str
    webhooks_enabled: bool
    link_expires_at: datetime


@dataclass
class EndpointForm:
    """What the add or edit form holds: as typed, so a refused form comes back as the person left it."""

    url: str = ""
    description: str = ""
    filter_types: list[str] = field(default_factory=list)  # empty: every type
    rate_limit: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> EndpointForm:
        return cls(
            url=endpoint.url,
            description=endpoint.description,
            filter_types=list(endpoint.filter_types or []),
            rate_limit="" if endpoint.rate_limit is None else str(endpoint.rate_limit),
        )


@dataclass(frozen=True)
class SecretView:
    current: str | None  # None until revealed
    previous_expires_at: datetime | None  # the rotated-out secret still signs until then


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%b %-d, %Y %H:%M:%S UTC") if value is not None else "—"


def _page(portal: Portal, title: str, body: str, status: int = 200) -> HTMLResponse:
    head = (
        '<div class="card">'
        f'<p class="muted">{e(portal.merchant_name)} · webhooks · {e(portal.environment)}</p>'
        f"<h1>{e(title)}</h1>"
        f'<p class="muted">This link expires {e(moment(portal.link_expires_at))}; anyone holding it can '
        "manage these endpoints, so do not share it.</p>"
        "</div>"
    )
    paused = (
        ""
        if portal.webhooks_enabled
        else '<div class="notice bad" data-testid="webhooks-paused">Webhooks are turned off for this '
        "merchant: new messages are not delivered to any endpoint (they are kept and can be recovered). "
        "Turn them on with PATCH /v0/webhooks {enabled: true}.</div>"
    )
    banner = (
        "SANDBOX — test data; endpoints here receive sandbox events only."
        if portal.environment == "sandbox"
        else None
    )
    html = document(title, f"<style>{_STYLE}</style>{head}{paused}{body}", banner=banner)
    response = respond(html, status)
    response.headers["Content-Security-Policy"] += _CSP_EXTRA
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _notice(done: str | None, error: str | None = None) -> str:
    if error:
        return f'<div class="notice bad" role="alert" data-testid="error">{e(error)}</div>'
    text = NOTICES.get(done or "")
    return f'<div class="notice ok" role="status" data-testid="notice">{e(text)}</div>' if text else ""


def _post(
    action: str, label: str, css: str = "secondary small", hidden: Mapping[str, str] | None = None
) -> str:
    fields = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in (hidden or {}).items())
    return (
        f'<form method="post" action="{e(action)}">{fields}'
        f'<button class="{css}" type="submit">{e(label)}</button></form>'
    )


def endpoint_status(endpoint: WebhookEndpoint) -> str:
    if not endpoint.disabled:
        return status_badge("enabled")
    if endpoint.disabled_reason == "failing":
        return (
            f'{status_badge("disabled")} <span class="muted" data-testid="disabled-reason">after 5 days of '
            f"failed deliveries (failing since {e(when(endpoint.failing_since))})</span>"
        )
    return f'{status_badge("disabled")} <span class="muted" data-testid="disabled-reason">by hand</span>'


def _types_text(endpoint: WebhookEndpoint) -> str:
    if not endpoint.filter_types:
        return '<span class="muted">all event types</span>'
    return "<br>".join(f"<code>{e(t)}</code>" for t in endpoint.filter_types)


def _error(form: EndpointForm, name: str) -> str:
    message = form.errors.get(name)
    return f'<p class="error" data-testid="error-{e(name)}">{e(message)}</p>' if message else ""


def _endpoint_fields(form: EndpointForm, catalog: Mapping[str, EventType]) -> str:
    boxes = "".join(
        f'<label title="{e(t.description)}"><input type="checkbox" name="filter" value="{e(name)}"'
        f"{' checked' if name in form.filter_types else ''}> <code>{e(name)}</code></label>"
        for name, t in catalog.items()
    )
    return (
        '<label for="url">Endpoint URL</label>'
        f'<input type="text" id="url" name="url" value="{e(form.url)}" placeholder="https://example.com/webhooks"'
        " required>"
        f"{_error(form, 'url')}"
        '<label for="description">Description</label>'
        f'<input type="text" id="description" name="description" value="{e(form.description)}">'
        f"{_error(form, 'description')}"
        f'<fieldset><legend>Event types</legend><p class="muted">{e(FILTER_HELP)}</p>'
        f'<div class="types">{boxes}</div>{_error(form, "filter")}</fieldset>'
        '<label for="rate_limit">Rate limit (messages per second)</label>'
        f'<input type="number" id="rate_limit" name="rate_limit" min="1" value="{e(form.rate_limit)}">'
        f'<p class="muted">{e(RATE_LIMIT_HELP)}</p>{_error(form, "rate_limit")}'
    )


# ---- the overview: endpoints, add form, message log --------------------------------------------------------


def overview_page(
    portal: Portal,
    endpoints: Sequence[WebhookEndpoint],
    messages: Sequence[WebhookMessage],
    deliveries: Mapping[str, Sequence[WebhookDelivery]],
    catalog: Mapping[str, EventType],
    form: EndpointForm,
    *,
    done: str | None = None,
    more_messages: bool = False,
    status: int = 200,
) -> HTMLResponse:
    error = "The endpoint was not added: correct the fields marked below." if form.errors else None
    body = (
        _notice(done, error)
        + _endpoints_card(portal, endpoints)
        + _add_card(portal, catalog, form)
        + _log_card(portal, endpoints, messages, deliveries, more_messages)
    )
    return _page(portal, "Webhook endpoints", body, status)


def _endpoints_card(portal: Portal, endpoints: Sequence[WebhookEndpoint]) -> str:
    if not endpoints:
        rows = '<tr><td colspan="4" class="muted">No endpoints yet: add one below.</td></tr>'
    else:
        rows = "".join(
            f'<tr data-endpoint="{e(ep.id)}">'
            f'<td><a href="{e(portal.base)}/endpoints/{e(ep.id)}">{e(ep.url)}</a>'
            f'<div class="muted">{e(ep.description)}</div></td>'
            f"<td>{_types_text(ep)}</td><td>{endpoint_status(ep)}</td>"
            f'<td class="num">{e(ep.rate_limit or "—")}</td></tr>'
            for ep in endpoints
        )
    return (
        '<div class="card"><h2>Endpoints</h2><div class="scroll">'
        "<table><thead><tr><th>URL</th><th>Event types</th><th>Status</th>"
        '<th class="num">Rate limit</th></tr></thead>'
        f'<tbody data-testid="endpoints">{rows}</tbody></table></div></div>'
    )


def _add_card(portal: Portal, catalog: Mapping[str, EventType], form: EndpointForm) -> str:
    return (
        '<div class="card"><h2>Add an endpoint</h2>'
        f'<form method="post" action="{e(portal.base)}/endpoints">{_endpoint_fields(form, catalog)}'
        '<div class="actions"><button class="pay" type="submit">Add endpoint</button></div></form></div>'
    )


def _log_card(
    portal: Portal,
    endpoints: Sequence[WebhookEndpoint],
    messages: Sequence[WebhookMessage],
    deliveries: Mapping[str, Sequence[WebhookDelivery]],
    more: bool,
) -> str:
    urls = {ep.id: ep.url for ep in endpoints}
    if not messages:
        rows = '<tr><td colspan="3" class="muted">No messages yet.</td></tr>'
    else:
        rows = "".join(
            f'<tr data-message="{e(m.id)}"><td><code>{e(m.event_type)}</code><div class="muted small-id">'
            f'<a href="{e(portal.base)}/messages/{e(m.id)}">{e(m.id)}</a></div></td>'
            f"<td>{e(when(m.created_at))}</td>"
            f"<td>{_delivery_summary(deliveries.get(m.id, ()), urls)}</td></tr>"
            for m in messages
        )
    tail = '<p class="muted">Older messages: GET /v0/webhooks/messages.</p>' if more else ""
    return (
        '<div class="card"><h2>Message log</h2><p class="muted">The most recent messages and how each '
        "endpoint took it; open one for its attempts and to resend it.</p>"
        '<div class="scroll"><table><thead><tr><th>Message</th><th>Created</th><th>Endpoints</th></tr>'
        "</thead>"
        f'<tbody data-testid="messages">{rows}</tbody></table></div>{tail}</div>'
    )


def _delivery_summary(deliveries: Sequence[WebhookDelivery], urls: Mapping[str, str]) -> str:
    if not deliveries:
        return '<span class="muted">no endpoint took this event type</span>'
    return "<br>".join(
        f"{status_badge(d.status)} {e(urls.get(d.endpoint_id, f'{d.endpoint_id} (deleted)'))}"
        f'<span class="muted"> · {d.attempts} attempt{"" if d.attempts == 1 else "s"}</span>'
        for d in deliveries
    )


# ---- one endpoint ------------------------------------------------------------------------------------------


def endpoint_page(
    portal: Portal,
    endpoint: WebhookEndpoint,
    catalog: Mapping[str, EventType],
    form: EndpointForm,
    secret: SecretView,
    attempts: Sequence[WebhookAttempt],
    *,
    done: str | None = None,
    error: str | None = None,
    sent_message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    if form.errors and error is None:
        error = "The endpoint was not saved: correct the fields marked below."
    here = f"{portal.base}/endpoints/{endpoint.id}"
    sent = (
        f'<p class="muted">Test message <a href="{e(portal.base)}/messages/{e(sent_message)}">'
        f"<code>{e(sent_message)}</code></a>.</p>"
        if sent_message
        else ""
    )
    failing = (
        '<div class="notice bad" data-testid="auto-disabled">Accrue disabled this endpoint: every delivery '
        f"failed for 5 days (failing since {e(when(endpoint.failing_since))}). Fix the receiver, then "
        "enable it; the messages that waited are delivered then.</div>"
        if endpoint.disabled and endpoint.disabled_reason == "failing"
        else ""
    )
    toggle = (
        _post(f"{here}/enable", "Enable endpoint", "pay small")
        if endpoint.disabled
        else _post(f"{here}/disable", "Disable endpoint", "decline small")
    )
    delete = _post(f"{here}/delete", "Delete endpoint", "decline small")
    limit = f"{endpoint.rate_limit} per second" if endpoint.rate_limit else "none"
    summary = (
        f'<div class="card"><p><a href="{e(portal.base)}">← All endpoints</a></p>'
        f'<h2 data-testid="endpoint-url">{e(endpoint.url)}</h2>'
        f'<p class="muted">{e(endpoint.description)}</p>{failing}'
        "<dl>"
        f'<dt>Endpoint</dt><dd><code data-testid="endpoint-id">{e(endpoint.id)}</code></dd>'
        f'<dt>Status</dt><dd data-testid="endpoint-status">{endpoint_status(endpoint)}</dd>'
        f"<dt>Event types</dt><dd>{_types_text(endpoint)}</dd>"
        f"<dt>Rate limit</dt><dd>{e(limit)}</dd>"
        f"<dt>Created</dt><dd>{e(when(endpoint.created_at))}</dd>"
        "</dl>"
        f'<div class="actions">{toggle}{delete}</div></div>'
    )
    body = (
        _notice(done, error)
        + sent
        + summary
        + _secret_card(here, secret)
        + _test_card(here, endpoint, catalog)
        + '<div class="card"><h2>Edit endpoint</h2>'
        f'<form method="post" action="{e(here)}">{_endpoint_fields(form, catalog)}'
        '<div class="actions"><button class="pay" type="submit">Save</button></div></form></div>'
        + _attempts_card(portal, attempts, "Recent attempts", None)
    )
    return _page(portal, "Webhook endpoint", body, status)


def _secret_card(here: str, secret: SecretView) -> str:
    if secret.current is None:
        shown = _post(f"{here}/secret", "Reveal secret")
    else:
        shown = f'<p><code data-testid="secret">{e(secret.current)}</code></p>'
    overlap = (
        f'<p class="muted">The previous secret also signs until {e(when(secret.previous_expires_at))}.</p>'
        if secret.previous_expires_at is not None and secret.previous_expires_at > datetime.now(UTC)
        else ""
    )
    return (
        '<div class="card"><h2>Signing secret</h2>'
        '<p class="muted">Verify each request with this secret (the svix or standardwebhooks libraries, '
        "or the svix-signature header by hand).</p>"
        f'{shown}{overlap}<div class="actions">{_post(f"{here}/rotate", "Rotate secret")}</div></div>'
    )


def _test_card(here: str, endpoint: WebhookEndpoint, catalog: Mapping[str, EventType]) -> str:
    names = [t for t in endpoint.filter_types or catalog if t in catalog]
    options = "".join(f'<option value="{e(n)}">{e(n)}</option>' for n in names)
    return (
        '<div class="card"><h2>Send a test event</h2>'
        '<p class="muted">A message of the chosen type with example data, sent to this endpoint only.</p>'
        f'<form method="post" action="{e(here)}/test" class="row-actions">'
        f'<select name="event_type" aria-label="Event type">{options}</select>'
        '<button class="pay small" type="submit">Send test event</button></form></div>'
    )


def _attempts_card(
    portal: Portal, attempts: Sequence[WebhookAttempt], title: str, endpoints: Mapping[str, str] | None
) -> str:
    """An endpoint's attempts (a Message column), or with `endpoints` a message's (an Endpoint column)."""
    first = "Endpoint" if endpoints is not None else "Message"
    if not attempts:
        rows = '<tr><td colspan="7" class="muted">No attempts yet.</td></tr>'
    else:
        rows = "".join(_attempt_row(portal, a, endpoints) for a in attempts)
    return (
        f'<div class="card"><h2>{e(title)}</h2><div class="scroll">'
        f"<table><thead><tr><th>Time</th><th>{first}</th><th>#</th><th>Status</th>"
        '<th class="num">Duration</th><th>Response</th><th>Next retry</th></tr></thead>'
        f'<tbody data-testid="attempts">{rows}</tbody></table></div></div>'
    )


def _attempt_row(portal: Portal, a: WebhookAttempt, endpoints: Mapping[str, str] | None) -> str:
    if endpoints is not None:
        first = e(endpoints.get(a.endpoint_id, f"{a.endpoint_id} (deleted)"))
    else:
        first = f'<a href="{e(portal.base)}/messages/{e(a.message_id)}"><code>{e(a.message_id)}</code></a>'
    code = f"HTTP {a.status_code}" if a.status_code is not None else "no response"
    outcome = status_badge("delivered" if a.succeeded else "failed")
    manual = ' <span class="muted">(resend)</span>' if a.trigger == "manual" else ""
    excerpt = a.response if len(a.response) <= 300 else a.response[:300] + "…"
    retry = when(a.next_attempt_at) if a.next_attempt_at is not None else "—"
    return (
        f'<tr data-attempt="{e(a.id)}"><td>{e(when(a.created_at))}</td><td>{first}</td>'
        f"<td>{a.attempt}{manual}</td><td>{outcome} {e(code)}</td>"
        f'<td class="num">{a.duration_ms} ms</td>'
        f'<td><code class="excerpt">{e(excerpt)}</code></td><td>{e(retry)}</td></tr>'
    )


# ---- one message -------------------------------------------------------------------------------------------


def message_detail_page(
    portal: Portal,
    message: WebhookMessage,
    deliveries: Sequence[WebhookDelivery],
    endpoints: Sequence[WebhookEndpoint],
    attempts: Sequence[WebhookAttempt],
    *,
    done: str | None = None,
) -> HTMLResponse:
    urls = {ep.id: ep.url for ep in endpoints}
    here = f"{portal.base}/messages/{message.id}"
    by_endpoint = {d.endpoint_id: d for d in deliveries}
    rows = []
    for d in deliveries:
        resend = (
            _post(f"{here}/resend", "Resend", hidden={"endpoint": d.endpoint_id})
            if d.endpoint_id in urls
            else ""
        )
        retry = when(d.next_attempt_at) if d.status == "pending" and d.next_attempt_at is not None else "—"
        rows.append(
            f'<tr data-delivery="{e(d.endpoint_id)}">'
            f"<td>{e(urls.get(d.endpoint_id, f'{d.endpoint_id} (deleted)'))}</td>"
            f'<td>{status_badge(d.status)}</td><td class="num">{d.attempts}</td>'
            f'<td class="nowrap">{e(retry)}</td><td>{resend}</td></tr>'
        )
    for ep in endpoints:
        if ep.id not in by_endpoint:
            rows.append(
                f'<tr data-delivery="{e(ep.id)}"><td>{e(ep.url)}</td><td class="muted">not sent</td>'
                f'<td class="num">0</td><td>—</td>'
                f"<td>{_post(f'{here}/resend', 'Send', hidden={'endpoint': ep.id})}</td></tr>"
            )
    table = "".join(rows) or '<tr><td colspan="5" class="muted">No endpoints.</td></tr>'
    payload = json.dumps(message.payload, indent=2, ensure_ascii=False)
    body = (
        _notice(done) + f'<div class="card"><p><a href="{e(portal.base)}">← All endpoints</a></p>'
        f'<h2><code data-testid="message-id">{e(message.id)}</code></h2>'
        f"<dl><dt>Event type</dt><dd><code>{e(message.event_type)}</code></dd>"
        f"<dt>Event id</dt><dd><code>{e(message.event_id)}</code></dd>"
        f"<dt>Created</dt><dd>{e(when(message.created_at))}</dd></dl>"
        f'<h2 class="spaced">Payload</h2><pre>{e(payload)}</pre></div>'
        '<div class="card"><h2>Endpoints</h2><table><thead><tr><th>Endpoint</th><th>Status</th>'
        '<th class="num">Attempts</th><th>Next retry</th><th></th></tr></thead>'
        f'<tbody data-testid="deliveries">{table}</tbody></table></div>'
        + _attempts_card(portal, attempts, "Attempts", urls)
    )
    return _page(portal, "Webhook message", body)


# ---- links that open nothing -------------------------------------------------------------------------------


def tampered_page() -> HTMLResponse:
    return message_page_plain(
        "This webhook portal link is not valid",
        "The link is incomplete or has been altered. Generate a new one with GET /v0/webhooks/portal.",
        403,
    )


def expired_page() -> HTMLResponse:
    return message_page_plain(
        "This webhook portal link has expired",
        "Webhook portal links are valid for one hour. Generate a new one with GET /v0/webhooks/portal.",
        410,
    )


def not_enabled_page() -> HTMLResponse:
    return message_page_plain(
        "Webhooks are not enabled",
        "This merchant has not enabled webhooks in this environment: POST /v0/webhooks enables them.",
        404,
    )


def not_found_page(kind: str) -> HTMLResponse:
    return message_page_plain(f"{kind} not found", f"There is no such {kind.lower()} behind this link.", 404)


def cross_site_page() -> HTMLResponse:
    return message_page_plain(
        "This form was sent from another site",
        "Changes are accepted only from the portal's own pages. Open the portal link and try again.",
        403,
    )


def message_page_plain(title: str, text: str, status: int) -> HTMLResponse:
    """A page with nothing but a message, e.g. for a link that opens nothing."""
    response = message_page(title, text, status)
    response.headers["Content-Security-Policy"] += _CSP_EXTRA
    response.headers["X-Frame-Options"] = "DENY"
    return response
