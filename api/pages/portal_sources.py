"""The customer portal's Sources section: each revenue source of the plan, its connection's state, and the
forms that connect a Stripe account or disconnect it (seed 000: "Navigate to Sources … enter their Stripe
API key … activate the source")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from api.pages import e, moment
from db.models import SourceInstallation

STYLE = """
.sources label{display:block;font-weight:600;margin:.6rem 0 .3rem}
.sources input[type=password]{font:inherit;width:100%;padding:.5rem .6rem;border:1px solid #c9ced8;
 border-radius:6px;background:#fff}
.sources .bad{background:#fdf0ef;border-color:#e4a19b}
.status-error,.status-disconnected{background:#f2e3e3;color:#8c1d18}
"""


@dataclass(frozen=True)
class SourceRow:
    source_id: str
    name: str
    description: str | None
    connect_action: str  # POST here with `stripeSecretKey`
    installation: SourceInstallation | None  # the latest connection, live or not
    disconnect_action: str | None  # POST here to disconnect the live one


def _state(row: SourceRow) -> str:
    inst = row.installation
    if inst is None:
        return '<p data-testid="source-status">Not connected yet.</p>'
    facts = [
        f'<dt>Status</dt><dd><span class="status status-{e(inst.status)}" data-testid="source-status">'
        f"{e(inst.status)}</span></dd>",
        f"<dt>Key</dt><dd><code>…{e(inst.key_last4)}</code> ({e(inst.key_mode)} mode)</dd>",
    ]
    if inst.connected_at:
        facts.append(f"<dt>Connected</dt><dd>{e(moment(inst.connected_at))}</dd>")
    facts.append(
        f"<dt>Last sync</dt><dd>{e(moment(inst.last_sync_at)) if inst.last_sync_at else 'not yet'}</dd>"
    )
    if inst.disconnected_at:
        facts.append(f"<dt>Disconnected</dt><dd>{e(moment(inst.disconnected_at))}</dd>")
    problem = (
        f'<div class="notice bad" data-testid="source-error">{e(inst.error_message)}</div>'
        if inst.error_message and inst.status == "error"
        else ""
    )
    return f"<dl>{''.join(facts)}</dl>{problem}"


def _forms(row: SourceRow) -> str:
    if row.disconnect_action is not None:
        return (
            f'<form method="post" action="{e(row.disconnect_action)}" class="actions">'
            '<button class="decline" type="submit">Disconnect</button></form>'
        )
    return (
        f'<form method="post" action="{e(row.connect_action)}">'
        f'<label for="key-{e(row.source_id)}">Stripe secret key</label>'
        f'<input id="key-{e(row.source_id)}" name="stripeSecretKey" type="password" autocomplete="off" '
        'placeholder="sk_test_… or rk_test_…" required>'
        '<p class="muted">Try a test-mode key (sk_test_…) first. The key lets Accrue read your paid Stripe '
        "invoices, nothing else; it is stored encrypted and never shown again.</p>"
        '<div class="actions"><button class="pay" type="submit">Connect Stripe</button></div></form>'
    )


def sources_card(rows: Sequence[SourceRow], notice: str | None, failed: bool) -> str:
    if not rows:
        return ""
    said = ""
    if notice:
        css = "notice bad" if failed else "notice ok"
        said = f'<div class="{css}" role="status" data-testid="sources-notice">{e(notice)}</div>'
    items = "".join(
        f'<div class="source" data-testid="source" data-source-id="{e(r.source_id)}">'
        f"<h3>{e(r.name)}</h3>"
        + (f'<p class="muted">{e(r.description)}</p>' if r.description else "")
        + _state(r)
        + _forms(r)
        + "</div>"
        for r in rows
    )
    return f'<div class="card sources"><style>{STYLE}</style><h2>Sources</h2>{said}{items}</div>'
