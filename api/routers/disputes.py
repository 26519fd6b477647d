"""Disputes of usage events (behavior §12.1): create (one per event), list (at least one filter), get, and
the merchant's resolution `PATCH /v0/disputes/{id}` (extension, docs/api-extensions.md): accepted refunds
the event through api.usage_refunds.refund_usage_event in the same commit.

Accrue has merchant API keys only, so the merchant files a dispute on its customer's behalf (the customer
is the usage event's); docs/decisions.md.

Locks: creation locks the usage event row (so it and a refund of the event serialize); resolution locks
the dispute row, then the refund path takes its invoices, the event and the ledger accounts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Context, Ctx, Paging
from api.problems import ApiError, conflict, forbidden, not_found
from api.schemas.disputes import (
    DisputeCreate,
    DisputeOut,
    DisputeResolve,
    DisputeStatus,
    DisputeWithCustomerOut,
)
from api.usage_refunds import refund_usage_event
from api.wire import ListResponse, iso, list_envelope
from db import disputes as rows
from db import usage as usage_rows
from db.models import Customer, Dispute, Organization, Subscription, TestClock, UsageEvent
from domain.ids import new_id

router = APIRouter(prefix="/v0/disputes", tags=["disputes"])


def _exists(existing: Dispute) -> ApiError:
    return ApiError(
        409,
        f"Usage event {existing.usage_event_id!r} already has dispute {existing.id!r} ({existing.status}); "
        "a usage event can be disputed once",
        code="DISPUTE_EXISTS",
        details={"disputeId": existing.id, "status": existing.status},
    )


@router.post("", status_code=201, response_model=DisputeOut)
async def create_dispute(body: DisputeCreate, ctx: Context) -> DisputeOut:
    merchant_id, environment = ctx.caller.merchant_id, ctx.caller.environment
    event = await usage_rows.get(ctx.session, merchant_id, environment, body.usage_event_id, lock=True)
    if event is None:
        raise not_found("Usage event", body.usage_event_id)
    if event.refunded_at is not None:
        raise ApiError(
            409,
            f"Usage event {event.id!r} was refunded at {iso(event.refunded_at)}; a refunded charge cannot be "
            "disputed",
            code="ALREADY_REFUNDED",
        )
    if (existing := await rows.of_usage_event(ctx.session, event.id)) is not None:
        raise _exists(existing)
    row = Dispute(
        id=new_id("dispute"),
        merchant_id=merchant_id,
        environment=environment,
        usage_event_id=event.id,
        customer_id=event.customer_id,
        customer_message=body.message,
        status="pending",
        disputed_amount=event.total_amount,
    )
    ctx.session.add(row)
    # The unique index on usage_event_id refuses a dispute another request created meanwhile.
    await ctx.commit_or_conflict(
        conflict(f"Usage event {event.id!r} already has a dispute; a usage event can be disputed once")
    )
    await ctx.session.refresh(row)
    return DisputeOut.of(row, event.currency)


@router.get("", response_model=ListResponse[DisputeWithCustomerOut])
async def list_disputes(
    ctx: Context,
    page: Paging,
    merchant_id: Annotated[str | None, Query(alias="merchantId")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    consumer_id: Annotated[str | None, Query(alias="consumerId")] = None,
    status: Annotated[DisputeStatus | None, Query()] = None,
) -> ListResponse[DisputeWithCustomerOut]:
    if merchant_id is None and customer_id is None and consumer_id is None:
        raise ApiError(400, "Pass at least one of merchantId, customerId or consumerId")
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    if customer_id is not None:
        await ctx.owned(Customer, customer_id, "Customer")
    if consumer_id is not None:
        await _managed_consumer(ctx, consumer_id)
    where = rows.DisputeFilter(
        ctx.caller.merchant_id, ctx.caller.environment, customer_id, consumer_id, status
    )
    found, total = await rows.list_disputes(ctx.session, where, limit=page.limit, offset=page.offset)
    items = [DisputeWithCustomerOut.with_customer(d, currency, org) for d, org, currency in found]
    return list_envelope(items, page, total)


@router.get("/{id}", response_model=DisputeOut)
async def get_dispute(id: str, ctx: Context) -> DisputeOut:
    row = await rows.get(ctx.session, ctx.caller.merchant_id, ctx.caller.environment, id)
    if row is None:
        raise not_found("Dispute", id)
    return DisputeOut.of(row, await _currency(ctx, row))


@router.patch("/{id}", response_model=DisputeOut)
async def resolve_dispute(id: str, body: DisputeResolve, ctx: Context) -> DisputeOut:
    merchant_id, environment = ctx.caller.merchant_id, ctx.caller.environment
    row = await rows.get(ctx.session, merchant_id, environment, id, lock=True)
    if row is None:
        raise not_found("Dispute", id)
    if row.status != "pending":
        when = f" at {iso(row.resolved_at)}" if row.resolved_at else ""
        raise ApiError(
            409,
            f"Dispute {id!r} was already {row.status}{when}; a resolution is final",
            code="DISPUTE_RESOLVED",
            details={"status": row.status},
        )
    event = await ctx.session.get_one(UsageEvent, row.usage_event_id)
    if body.status == "accepted" and event.refunded_at is None:
        reason = f"dispute {row.id} accepted" + (f": {body.message}" if body.message else "")
        try:
            await refund_usage_event(
                ctx.session, merchant_id, environment, event.id, reason, await _event_now(ctx, event)
            )
        except ApiError as exc:
            # Refunded by PATCH /v0/usage/{id} since we looked: the customer has the money back already.
            if exc.code != "ALREADY_REFUNDED":
                raise
    row.status, row.merchant_message, row.resolved_at = body.status, body.message, datetime.now(UTC)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return DisputeOut.of(row, event.currency)


async def _currency(ctx: Ctx, row: Dispute) -> str:
    return (await ctx.session.get_one(UsageEvent, row.usage_event_id)).currency


async def _event_now(ctx: Ctx, event: UsageEvent) -> datetime:
    """The refund's time: a subscription bound to a test clock lives at the clock's time (as in
    PATCH /v0/usage/{id}), so the refund lands in the clock's periods and revenue buckets."""
    sub = await ctx.session.get(Subscription, event.subscription_id)
    if sub is not None and sub.test_clock_id is not None:
        clock = await ctx.session.get(TestClock, sub.test_clock_id)
        if clock is not None:
            return clock.current_time
    return datetime.now(UTC)


async def _managed_consumer(ctx: Ctx, consumer_id: str) -> None:
    org = await ctx.session.get(Organization, consumer_id)
    if (
        org is None
        or org.kind != "consumer"
        or org.owner_merchant_id != ctx.caller.merchant_id
        or org.environment != ctx.caller.environment
    ):
        raise forbidden(f"consumerId {consumer_id!r} is not a managed consumer of this merchant")
