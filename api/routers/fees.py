"""Fees: named fixed charges on a product; amount and cadence live on the prices that reference them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import false, func, select

from api.deps import Context, Ctx, Paging
from api.problems import ApiError, conflict
from api.schemas.fees import FeeCreate, FeeOut, FeePriceOut, FeeUpdate
from api.wire import ListResponse, changes, list_envelope, require_no_item
from db.billing import tax_rate
from db.models import Customer, Fee, Plan, PlanPrice, Price, Product, Subscription
from domain.ids import new_id

router = APIRouter(prefix="/v0/fees", tags=["fees"])


@router.post("", status_code=201, response_model=FeeOut)
async def create_fee(body: FeeCreate, ctx: Context) -> FeeOut:
    ctx.caller.require_merchant(body.merchant_id)
    await ctx.owned(Product, body.product_id, "Product")
    require_no_item(body.item_id)
    row = Fee(
        id=new_id("fee"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        product_id=body.product_id,
        name=body.name,
        description=body.description,
    )
    ctx.session.add(row)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return FeeOut.of(row)


@router.get("", response_model=ListResponse[FeeOut])
async def list_fees(
    ctx: Context,
    page: Paging,
    merchant_id: Annotated[str, Query(alias="merchantId")],
    product_id: Annotated[str | None, Query(alias="productId")] = None,
    item_id: Annotated[str | None, Query(alias="itemId")] = None,
) -> ListResponse[FeeOut]:
    ctx.caller.require_merchant(merchant_id)
    query = ctx.scoped(Fee)
    if product_id is not None:
        query = query.where(Fee.product_id == product_id)
    if item_id is not None:
        query = query.where(false())  # no fee is linked to an item (items are not implemented)
    rows, total = await ctx.page(query, page, Fee.created_at, Fee.id)
    return list_envelope([FeeOut.of(r) for r in rows], page, total)


@router.get("/{id}", response_model=FeeOut)
async def get_fee(id: str, ctx: Context) -> FeeOut:
    return FeeOut.of(await ctx.owned(Fee, id, "Fee"))


@router.patch("/{id}", response_model=FeeOut)
async def update_fee(id: str, body: FeeUpdate, ctx: Context) -> FeeOut:
    row = await ctx.owned(Fee, id, "Fee")
    updates = changes(body, nullable=frozenset({"item_id"}))
    require_no_item(updates.pop("item_id", None))
    for field, value in updates.items():
        setattr(row, field, value)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return FeeOut.of(row)


async def _in_use(ctx: Ctx, fee_id: str) -> ApiError | None:
    count = int(await ctx.session.scalar(select(func.count()).where(Price.fee_id == fee_id)) or 0)
    if not count:
        return None
    return conflict(
        "Fee cannot be deleted because it has associated prices",
        {"blockers": [{"type": "prices", "count": count}]},
    )


@router.delete("/{id}", status_code=204, response_class=Response)
async def delete_fee(id: str, ctx: Context) -> Response:
    row = await ctx.owned(Fee, id, "Fee")
    await ctx.delete_unless_referenced(row, lambda: _in_use(ctx, id), "Fee")
    return Response(status_code=204)


@router.get("/{id}/price/{subscriptionId}", response_model=FeePriceOut)
async def get_fee_price(id: str, subscriptionId: str, ctx: Context) -> FeePriceOut:
    """The price of this fee on the subscription's plan (the plan's first one if it lists several), with
    the tax percent its lines pay on that subscription. A fee the plan does not price is a 404."""
    fee = await ctx.owned(Fee, id, "Fee")
    sub = await ctx.owned(Subscription, subscriptionId, "Subscription")
    price = await ctx.session.scalar(
        select(Price)
        .join(PlanPrice, PlanPrice.price_id == Price.id)
        .where(PlanPrice.plan_id == sub.plan_id, Price.fee_id == fee.id)
        .order_by(PlanPrice.position, Price.id)
        .limit(1)
    )
    if price is None:
        raise ApiError(
            404,
            f"Fee {fee.id!r} has no price on plan {sub.plan_id!r} of subscription {sub.id!r}",
        )
    plan = await ctx.session.get_one(Plan, sub.plan_id)
    customer = await ctx.session.get_one(Customer, sub.customer_id)
    return FeePriceOut.of(price, tax_rate(sub, plan, customer, None, fee.id))
