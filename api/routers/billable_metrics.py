"""Billable metrics: what usage a product measures and how events aggregate into a quantity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import false

from api.deps import Context, Paging
from api.problems import invalid
from api.schemas.billable_metrics import (
    CLEARABLE,
    BillableMetricCreate,
    BillableMetricOut,
    BillableMetricUpdate,
    check_value_property,
)
from api.wire import ListResponse, changes, list_envelope, require_no_item
from db.models import BillableMetric, Product
from domain.ids import new_id

router = APIRouter(prefix="/v0/billableMetrics", tags=["billable metrics"])


@router.post("", status_code=201, response_model=BillableMetricOut)
async def create_billable_metric(body: BillableMetricCreate, ctx: Context) -> BillableMetricOut:
    ctx.caller.require_merchant(body.merchant_id)
    check_value_property(body.aggregation, body.value_property)
    await ctx.owned(Product, body.product_id, "Product")
    require_no_item(body.item_id)
    row = BillableMetric(
        id=new_id("billable_metric"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        product_id=body.product_id,
        name=body.name,
        description=body.description,
        unit=body.unit,
        aggregation=body.aggregation,
        event_type=body.event_type,
        value_property=body.value_property,
        group_by=body.group_by,
        event_from=body.event_from,
    )
    ctx.session.add(row)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return BillableMetricOut.of(row)


@router.get("", response_model=ListResponse[BillableMetricOut])
async def list_billable_metrics(
    ctx: Context,
    page: Paging,
    merchant_id: Annotated[str, Query(alias="merchantId")],
    product_id: Annotated[str | None, Query(alias="productId")] = None,
    item_id: Annotated[str | None, Query(alias="itemId")] = None,
) -> ListResponse[BillableMetricOut]:
    ctx.caller.require_merchant(merchant_id)
    query = ctx.scoped(BillableMetric)
    if product_id is not None:
        query = query.where(BillableMetric.product_id == product_id)
    if item_id is not None:
        query = query.where(false())  # no metric is linked to an item (items are not implemented)
    rows, total = await ctx.page(query, page, BillableMetric.created_at, BillableMetric.id)
    return list_envelope([BillableMetricOut.of(r) for r in rows], page, total)


@router.get("/{id}", response_model=BillableMetricOut)
async def get_billable_metric(id: str, ctx: Context) -> BillableMetricOut:
    return BillableMetricOut.of(await ctx.owned(BillableMetric, id, "Billable metric"))


@router.patch("/{id}", response_model=BillableMetricOut)
async def update_billable_metric(id: str, body: BillableMetricUpdate, ctx: Context) -> BillableMetricOut:
    row = await ctx.owned(BillableMetric, id, "Billable metric")
    if "aggregation" in body.model_fields_set:
        raise invalid("aggregation", "aggregation cannot be changed; create a new metric", code="immutable")
    updates = changes(body, nullable=CLEARABLE)
    check_value_property(row.aggregation, updates.get("value_property", row.value_property))
    require_no_item(updates.pop("item_id", None))
    for field, value in updates.items():
        setattr(row, field, value)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return BillableMetricOut.of(row)
