"""Source events (behavior §9.3, D16): what the installations imported, and their review. Approve and
reject go through api/source_review.py to the installation's workflow; a non-pending event is a 409."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from api.deps import Context, Ctx, Paging
from api.problems import not_found
from api.schemas.source_views import SourceEventOut
from api.schemas.sources import BulkApproveDetails, BulkApproveOut, BulkEvents, BulkFailure, BulkRejectOut
from api.source_review import not_pending, review
from api.source_temporal import lazy_client
from api.wire import ListResponse, list_envelope
from db.models import Source, SourceEvent
from workflows.source_messages import ReviewAction, ReviewResult

router = APIRouter(prefix="/v0/sources", tags=["sources"])

EventStatus = Literal["pending", "processed", "failed", "rejected"]


async def _event(ctx: Ctx, source: Source, event_id: str) -> SourceEvent:
    row = await ctx.session.get(SourceEvent, event_id)
    if row is None or row.source_id != source.id:
        raise not_found("Source event", event_id)
    return row


@router.get("/{id}/events", response_model=ListResponse[SourceEventOut])
async def list_source_events(
    id: str,
    ctx: Context,
    page: Paging,
    status: Annotated[EventStatus | None, Query()] = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    subscription_id: Annotated[str | None, Query(alias="subscriptionId")] = None,
) -> ListResponse[SourceEventOut]:
    """Newest first (imported, then paid)."""
    source = await ctx.owned(Source, id, "Source")
    query = ctx.scoped(SourceEvent).where(SourceEvent.source_id == source.id)
    if status is not None:
        query = query.where(SourceEvent.status == status)
    if customer_id is not None:
        query = query.where(SourceEvent.customer_id == customer_id)
    if subscription_id is not None:
        query = query.where(SourceEvent.subscription_id == subscription_id)
    # One poll imports a page of invoices in one transaction (one created_at): newest paid first among them.
    order = (SourceEvent.created_at.desc(), SourceEvent.paid_at.desc(), SourceEvent.id.desc())
    rows, total = await ctx.page(query, page, *order)
    return list_envelope([SourceEventOut.of(r) for r in rows], page, total)


async def _review_one(
    id: str, event_id: str, action: ReviewAction, ctx: Ctx, request: Request
) -> SourceEventOut:
    source = await ctx.owned(Source, id, "Source")
    row = await _event(ctx, source, event_id)
    if row.status != "pending":
        raise not_pending(row.id, row.status, action)
    client = lazy_client(request.app, f"{action} the event")
    await review(ctx.session, client, source, [row.id], action, ctx.caller.user_id, single=True)
    await ctx.session.refresh(row)  # the workflow wrote the outcome (processed, failed or rejected)
    return SourceEventOut.of(row)


@router.post("/{id}/events/{eventId}/approve", response_model=SourceEventOut)
async def approve_source_event(id: str, eventId: str, ctx: Context, request: Request) -> SourceEventOut:
    return await _review_one(id, eventId, "approve", ctx, request)


@router.post("/{id}/events/{eventId}/reject", response_model=SourceEventOut)
async def reject_source_event(id: str, eventId: str, ctx: Context, request: Request) -> SourceEventOut:
    return await _review_one(id, eventId, "reject", ctx, request)


async def _review_many(
    id: str, body: BulkEvents, action: ReviewAction, ctx: Ctx, request: Request
) -> ReviewResult:
    source = await ctx.owned(Source, id, "Source")
    client = lazy_client(request.app, f"{action} the events")
    return await review(ctx.session, client, source, body.event_ids, action, ctx.caller.user_id, single=False)


@router.post("/{id}/events/bulk-approve", response_model=BulkApproveOut)
async def bulk_approve_source_events(
    id: str, body: BulkEvents, ctx: Context, request: Request
) -> BulkApproveOut:
    """Per-event results: an id not in the source, not pending, or whose revenue could not be recorded is
    in `details.failed` with the reason."""
    result = await _review_many(id, body, "approve", ctx, request)
    failed = [BulkFailure(id=f.id, error=f.error) for f in result.failed]
    return BulkApproveOut(
        processed=len(result.done),
        failed=len(failed),
        details=BulkApproveDetails(processed=result.done, failed=failed),
    )


@router.post("/{id}/events/bulk-reject", response_model=BulkRejectOut)
async def bulk_reject_source_events(
    id: str, body: BulkEvents, ctx: Context, request: Request
) -> BulkRejectOut:
    """`rejected` counts the events rejected; ids not in the source or not pending are skipped."""
    result = await _review_many(id, body, "reject", ctx, request)
    return BulkRejectOut(rejected=len(result.done))
