"""The merchant's review page for a source's pending revenue (seed 000 "Review and approve revenue events"):
`GET /v0/sources/{id}/reviewLink` hands out a signed, expiring link; the page behind it lists the pending
events and approves or rejects them through api/source_review.py — the same workflow updates as the API, on
behalf of the user who asked for the link.

The token in the path (api/portal_tokens.py) is the only credential and names one source; forms post back
under the same path, and every post answers with a redirect to the page (post/redirect/get)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api import portal_tokens
from api.app_state import settings_of
from api.deps import Context, Session
from api.link_lifetime import link_expiry
from api.pages import source_review as pages
from api.problems import ApiError
from api.same_site import same_site
from api.source_review import review
from api.source_temporal import lazy_client
from api.wire import Timestamp, WireModel
from db.models import Source, SourceEvent
from workflows.source_messages import ReviewAction, ReviewResult

router = APIRouter(prefix="/v0/sources", tags=["sources"])
page_router = APIRouter(prefix="/sources/review/{token}", include_in_schema=False)

DEFAULT_EXPIRES_IN = "PT1H"
MAX_EXPIRES_IN = "P7D"
_NOTICE_LIMIT = 1500  # characters of outcome carried in the redirect
_PAST = {"approve": "Approved", "reject": "Rejected"}


class SourceReviewLinkOut(WireModel):
    object: Literal["sourceReviewLink"] = "sourceReviewLink"
    url: str
    expires_at: Timestamp


@router.get("/{id}/reviewLink", response_model=SourceReviewLinkOut, summary="Get a review page link")
async def get_review_link(
    id: str,
    ctx: Context,
    request: Request,
    expires_in: Annotated[str | None, Query(alias="expiresIn")] = None,
) -> SourceReviewLinkOut:
    """A link to the hosted page that lists the source's pending events with approve and reject actions;
    valid for `expiresIn` (ISO-8601 duration, default PT1H, at most P7D). Reviews made there are recorded
    as made by the user whose API key asked for the link."""
    source = await ctx.owned(Source, id, "Source")
    now = datetime.now(UTC)
    expires_at = link_expiry(expires_in, now, default=DEFAULT_EXPIRES_IN, maximum=MAX_EXPIRES_IN)
    expires_at = expires_at.replace(microsecond=0)  # the token carries whole seconds: round down, never up
    settings = settings_of(request)
    token = portal_tokens.issue_source_review(
        source.id,
        ctx.caller.merchant_id,
        ctx.caller.environment,
        ctx.caller.user_id,
        expires_at,
        portal_tokens.signing_key(settings),
    )
    return SourceReviewLinkOut(url=f"{settings.base_url}/sources/review/{token}", expires_at=expires_at)


async def _open(
    token: str, request: Request, session: AsyncSession
) -> tuple[portal_tokens.SourceReviewClaim, Source] | HTMLResponse:
    try:
        claim = portal_tokens.verify_source_review(token, portal_tokens.signing_key(settings_of(request)))
    except portal_tokens.TokenInvalid:
        return pages.tampered_page()
    except portal_tokens.TokenExpired:
        return pages.expired_page()
    source = await session.get(Source, claim.source_id)
    if source is None or (source.merchant_id, source.environment) != (claim.merchant_id, claim.environment):
        return pages.gone_page()
    return claim, source


@page_router.get("", response_class=HTMLResponse)
async def review_page(
    token: str,
    request: Request,
    session: Session,
    offset: int = 0,
    notice: str | None = None,
    failed: int = 0,
) -> Response:
    opened = await _open(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    claim, source = opened
    offset = max(0, offset)
    pending = (SourceEvent.source_id == source.id, SourceEvent.status == "pending")
    total = int(await session.scalar(select(func.count()).select_from(SourceEvent).where(*pending)) or 0)
    events = (
        await session.scalars(
            select(SourceEvent)
            .where(*pending)
            .order_by(SourceEvent.created_at.desc(), SourceEvent.id.desc())
            .offset(offset)
            .limit(pages.PAGE_SIZE)
        )
    ).all()
    view = pages.ReviewView(
        base=f"/sources/review/{token}",
        source=source,
        environment=claim.environment,
        expires_at=claim.expires_at,
        events=events,
        total=total,
        offset=offset,
    )
    return pages.review_page(view, notice[:_NOTICE_LIMIT] if notice else None, failed=bool(failed))


def _asked(form: list[tuple[str, str]]) -> tuple[ReviewAction, list[str], bool] | None:
    """(action, event ids, single) of a posted form; None for a form that asks nothing."""
    fields: dict[str, list[str]] = {}
    for name, value in form:
        fields.setdefault(name, []).append(value)
    if one := fields.get("one"):
        action, _, event_id = one[0].partition(" ")
        if action in _PAST and event_id:
            return action, [event_id], True  # type: ignore[return-value]
        return None
    if bulk := fields.get("bulk"):
        action, _, scope = bulk[0].partition(" ")
        ids = fields.get("event_ids" if scope == "selected" else "page_ids", [])
        if action in _PAST and ids:
            return action, ids[:1000], False  # type: ignore[return-value]
    return None


def _outcome(action: ReviewAction, result: ReviewResult) -> str:
    text = f"{_PAST[action]} {len(result.done)} event{'s' if len(result.done) != 1 else ''}."
    if result.failed:
        reasons = "; ".join(f"{f.id}: {f.error}" for f in result.failed)
        text += f" {len(result.failed)} could not be {_PAST[action].lower()}: {reasons}"
    return text


@page_router.post("", response_class=HTMLResponse)
async def review_events(token: str, request: Request, session: Session) -> Response:
    opened = await _open(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    if not same_site(request):
        return pages.cross_site_page()
    claim, source = opened
    form = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    offset = next((v for k, v in form if k == "offset" and v.isdigit()), "0")
    asked = _asked(form)
    if asked is None:
        notice, failed = "Tick at least one event, or use a row's own Approve or Reject button.", True
    else:
        action, ids, single = asked
        try:
            result = await review(
                session,
                lazy_client(request.app, f"{action} the events"),
                source,
                ids,
                action,
                processed_by=claim.user_id,
                single=single,
            )
        except ApiError as exc:
            notice, failed = exc.message, True
        else:
            notice, failed = _outcome(action, result), bool(result.failed)
    query = urlencode({"offset": offset, "notice": notice[:_NOTICE_LIMIT], "failed": int(failed)})
    return RedirectResponse(f"/sources/review/{token}?{query}", status_code=303)
