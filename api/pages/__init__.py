"""Server-rendered HTML for the pages payers and customers open (hosted checkout, portal).

Plain f-strings: every value that comes from data goes through `e()` (html.escape). The pages carry no
script; a strict Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from html import escape

from fastapi.responses import HTMLResponse

from domain.money import format_money

# No scripts, no external loads; inline styles only. Framing stays allowed: checkouts may be embedded.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"

_STYLE = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
 background:#f3f4f7}
.sandbox{background:#ffd54a;color:#3b2f00;text-align:center;padding:.55rem 1rem;font-weight:600;
 letter-spacing:.02em;border-bottom:1px solid #e0b800}
main{max-width:50rem;margin:2rem auto;padding:0 1rem}
.card{background:#fff;border:1px solid #dde1e8;border-radius:10px;padding:1.5rem 1.75rem;
 margin-bottom:1.25rem}
h1{font-size:1.45rem;margin:0 0 .25rem}
h2{font-size:1.1rem;margin:0 0 .75rem}
.muted{color:#5b6475;font-size:.92rem}
table{width:100%;border-collapse:collapse;margin:.75rem 0}
th,td{padding:.45rem .35rem;text-align:left;border-bottom:1px solid #eceef2;vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:#5b6475;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.nowrap{white-space:nowrap}
tr.sum td{border-bottom:none;padding-top:.25rem;padding-bottom:.25rem}
tr.total td{font-weight:700;font-size:1.08rem;border-top:2px solid #1d2330}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1.25rem;margin:0}
dt{color:#5b6475}dd{margin:0}
.actions{display:flex;gap:.75rem;flex-wrap:wrap;margin-top:1.25rem}
.actions form{margin:0}
button,.button{font:inherit;font-weight:600;border-radius:8px;padding:.7rem 1.4rem;cursor:pointer;
 border:1px solid transparent;text-decoration:none;display:inline-block}
.small{padding:.2rem .8rem;font-size:.88rem}
.pay{background:#1f6feb;color:#fff}.pay:hover{background:#1858c0}
.decline{background:#fff;color:#b42318;border-color:#e4a19b}.decline:hover{background:#fdf0ef}
.notice{border-radius:8px;padding:.75rem 1rem;margin:.75rem 0;background:#fff4e5;border:1px solid #f5c27a}
.ok{background:#e8f6ee;border-color:#9bd3b0}
.status{display:inline-block;border-radius:999px;padding:.05rem .6rem;font-size:.82rem;font-weight:600;
 background:#eceef2}
.status-PAID,.status-active{background:#dff3e6;color:#17633a}
.status-ISSUED,.status-pending_payment,.status-PAYMENT_FAILED{background:#fff1d6;color:#8a5300}
.status-CANCELLED,.status-terminated{background:#f2e3e3;color:#8c1d18}
code{font-size:.88em;background:#f0f2f5;padding:.05rem .3rem;border-radius:4px}
footer{color:#7a8294;font-size:.82rem;text-align:center;margin:1rem 0 2rem}
"""


def e(value: object) -> str:
    return escape(str(value), quote=True)


def money(amount: Decimal, currency: str) -> str:
    return f"{format_money(amount, currency)} {currency}"


def day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%b %-d, %Y")


def moment(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%b %-d, %Y %H:%M UTC")


def period(start: datetime, end: datetime) -> str:
    return f"{day(start)} – {day(end)}"


def status_badge(status: str) -> str:
    return f'<span class="status status-{e(status)}">{e(status.replace("_", " "))}</span>'


def document(title: str, body: str, *, banner: str | None, refresh_seconds: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    top = f'<div class="sandbox" role="note">{e(banner)}</div>' if banner else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex">{refresh}<title>{e(title)}</title>'
        f"<style>{_STYLE}</style></head>"
        f"<body>{top}<main>{body}</main><footer>Served by Accrue</footer></body></html>"
    )


def respond(html: str, status: int = 200) -> HTMLResponse:
    headers = {
        "Cache-Control": "no-store",
        # Portal and checkout URLs are capabilities: never leak them to other sites.
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff",
    }
    return HTMLResponse(html, status_code=status, headers=headers)


# Pages whose forms change things (signup, review) post only to themselves and are never framed.
_FORMS_CSP = "; form-action 'self'; frame-ancestors 'none'"


def locked_down(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] += _FORMS_CSP
    response.headers["X-Frame-Options"] = "DENY"
    return response


def message_page(title: str, text: str, status: int, *, banner: str | None = None) -> HTMLResponse:
    body = f'<div class="card"><h1>{e(title)}</h1><p>{e(text)}</p></div>'
    return respond(document(title, body, banner=banner), status)
