"""GET /v0/revenue: the revenue summary of a window (behavior §12.3; what counts: domain/revenue.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import Context, Ctx
from api.problems import ApiError, invalid
from api.schemas.revenue import RevenueSummaryOut
from api.wire import UtcDatetime, as_utc
from db import revenue as rows
from db.models import Customer
from domain import revenue
from domain.money import is_currency_code

router = APIRouter(prefix="/v0/revenue", tags=["revenue"])

MAX_SUBSCRIPTION_IDS = 100


@router.get("", response_model=RevenueSummaryOut, response_model_exclude_none=True)
async def get_revenue(
    ctx: Context,
    start_time: Annotated[
        UtcDatetime, Query(alias="startTime", description="Start of the window (inclusive), ISO-8601.")
    ],
    end_time: Annotated[
        UtcDatetime, Query(alias="endTime", description="End of the window (exclusive), ISO-8601.")
    ],
    bucket_width: Annotated[
        Literal["hour", "day", "week"],
        Query(alias="bucketWidth", description="Trend buckets: UTC hours, days, or ISO weeks (Monday)."),
    ] = "day",
    merchant_id: Annotated[str | None, Query(alias="merchantId")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    subscription_ids: Annotated[list[str] | None, Query(alias="subscriptionIds")] = None,
    group_by: Annotated[Literal["plan"] | None, Query(alias="groupBy")] = None,
    currency: Annotated[
        str | None,
        Query(description="Every figure in this currency (default: the merchant's primary currency)."),
    ] = None,
) -> RevenueSummaryOut:
    if merchant_id is None and customer_id is None and not subscription_ids:
        raise ApiError(400, "Pass at least one of merchantId, customerId or subscriptionIds")
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    start, end = as_utc(start_time), as_utc(end_time)
    if end <= start:
        raise invalid("endTime", "must be later than startTime (the window is [startTime, endTime))")
    buckets = revenue.bucket_count(start, end, bucket_width)
    if buckets > revenue.MAX_BUCKETS:
        raise invalid(
            "bucketWidth",
            f"the window holds {buckets} {bucket_width} buckets, more than {revenue.MAX_BUCKETS}; "
            "use a wider bucketWidth or a shorter window",
        )
    if customer_id is not None:
        await ctx.owned(Customer, customer_id, "Customer")
    ids = list(dict.fromkeys(subscription_ids or []))
    if len(ids) > MAX_SUBSCRIPTION_IDS:
        raise invalid("subscriptionIds", f"at most {MAX_SUBSCRIPTION_IDS} subscriptions per request")
    if ids and (missing := await rows.subscriptions_missing(ctx.session, *_tenant(ctx), ids)):
        raise ApiError(404, f"Subscription {', '.join(repr(m) for m in missing)} was not found")
    if currency is not None:
        currency = currency.upper()
        if not is_currency_code(currency):
            raise invalid("currency", "must be an ISO 4217 code such as USD")
    else:
        currency = await rows.primary_currency(ctx.session, *_tenant(ctx))

    scope = rows.RevenueScope(
        *_tenant(ctx),
        currency=currency,
        start=start,
        end=end,
        width=bucket_width,
        customer_id=customer_id,
        subscription_ids=ids or None,
    )
    summary = revenue.summarize(
        revenue.bucket_starts(start, end, bucket_width),
        await rows.invoice_rows(ctx.session, scope),
        await rows.written_off_rows(ctx.session, scope),
        await rows.instant_usage_rows(ctx.session, scope),
        await rows.refund_rows(ctx.session, scope),
        await rows.payment_rows(ctx.session, scope),
        group_by_plan=group_by == "plan",
    )
    labels = await rows.plan_names(ctx.session, [k for k, _ in summary.groups or [] if k != revenue.OTHER])
    return RevenueSummaryOut.of(summary, currency, labels)


def _tenant(ctx: Ctx) -> tuple[str, str]:
    return ctx.caller.merchant_id, ctx.caller.environment
