"""Prices: what one billable metric or fee costs. Plans link prices; a linked price cannot be deleted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from api.deps import Context, Ctx, Paging
from api.lookups import load_links
from api.problems import ApiError, conflict, invalid
from api.schemas.plans import check_links
from api.schemas.prices import (
    LinkedPrice,
    PriceCreate,
    PriceDraft,
    PriceOut,
    PriceUpdate,
    Problems,
    check_price,
    require_one_target,
)
from api.wire import ListResponse, changes, list_envelope
from db.models import BillableMetric, Feature, Fee, Plan, PlanPrice, Price
from domain import pricing
from domain.ids import new_id

router = APIRouter(prefix="/v0/prices", tags=["prices"])
RACE = "The billable metric, fee or feature was removed meanwhile; retry"

# A PATCH that changes one of these can break a rule of a plan the price is linked to.
PLAN_RELEVANT = {"billable_metric_id", "model", "payment_term"}


@dataclass
class Checked:
    draft: PriceDraft
    properties: dict[str, Any]
    linked: LinkedPrice


async def check(ctx: Ctx, draft: PriceDraft, price_id: str) -> Checked:
    """The draft against every price rule, with its metric, fee and feature looked up as the caller's."""
    require_one_target(draft.billable_metric_id, draft.fee_id)
    metric = fee = None
    if draft.billable_metric_id is not None:
        metric = await ctx.owned(BillableMetric, draft.billable_metric_id, "Billable metric")
    if draft.fee_id is not None:
        fee = await ctx.owned(Fee, draft.fee_id, "Fee")
    feature = await ctx.owned(Feature, draft.feature_id, "Feature") if draft.feature_id else None
    properties = check_price(draft, metric)
    product_id = metric.product_id if metric else fee.product_id  # type: ignore[union-attr]
    if feature is not None and feature.product_id != product_id:
        owner = f"billable metric {metric.id}" if metric else f"fee {draft.fee_id}"
        raise invalid(
            "feature.featureId",
            f"feature {feature.id} belongs to product {feature.product_id}, but {owner} belongs to "
            f"product {product_id}; link a feature of the same product",
        )
    linked = LinkedPrice(price_id, product_id, metric, draft.model or pricing.FEE_MODEL, draft.payment_term)
    return Checked(draft, properties, linked)


def assign(row: Price, checked: Checked) -> None:
    d = checked.draft
    if d.feature_id is None:
        row.price_feature_id = None
    elif d.feature_id != row.feature_id or row.price_feature_id is None:
        # The link keeps its id while it points at the same feature.
        row.price_feature_id = new_id("price_feature")
    row.feature_id = d.feature_id
    row.entitlement_template = (d.entitlement_template or {}) if d.feature_id else None
    row.billable_metric_id = d.billable_metric_id
    row.fee_id = d.fee_id
    row.model = checked.linked.model
    row.payment_term = d.payment_term
    row.properties = checked.properties
    row.billing_cadence = d.billing_cadence
    row.invoice_display_name = d.invoice_display_name
    row.grant_discount_enabled = d.grant_discount_enabled


async def check_linked_plans(ctx: Ctx, checked: Checked) -> None:
    """A linked price must still fit each plan it is in after the change."""
    plans = await ctx.session.scalars(
        select(Plan)
        .join(PlanPrice, PlanPrice.plan_id == Plan.id)
        .where(PlanPrice.price_id == checked.linked.id)
        .order_by(Plan.created_at, Plan.id)
    )
    out = Problems()
    for plan in plans:
        siblings = list(
            await ctx.session.scalars(
                select(Price)
                .join(PlanPrice, PlanPrice.price_id == Price.id)
                .where(PlanPrice.plan_id == plan.id, Price.id != checked.linked.id)
                .order_by(PlanPrice.position)
            )
        )
        links = await load_links(ctx, siblings)
        check_links(
            out,
            [links.linked(p) for p in siblings] + [checked.linked],
            product_id=plan.product_id,
            billing_version=plan.billing_version,
            currency=plan.currency,
            field="plans",
            plan_name=f"plan {plan.id}, which links this price,",
        )
    out.raise_any()


async def view(ctx: Ctx, row: Price) -> PriceOut:
    return (await load_links(ctx, [row])).view(row)


@router.post("", status_code=201, response_model=PriceOut)
async def create_price(body: PriceCreate, ctx: Context) -> PriceOut:
    row = Price(id=new_id("price"), merchant_id=ctx.caller.merchant_id, environment=ctx.caller.environment)
    assign(row, await check(ctx, PriceDraft.of_create(body), row.id))
    ctx.session.add(row)
    await ctx.commit_or_conflict(conflict(RACE))
    await ctx.session.refresh(row)
    return await view(ctx, row)


@router.get("", response_model=ListResponse[PriceOut])
async def list_prices(
    ctx: Context,
    page: Paging,
    billable_metric_id: Annotated[str | None, Query(alias="billableMetricId")] = None,
    merchant_id: Annotated[str | None, Query(alias="merchantId")] = None,
) -> ListResponse[PriceOut]:
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    query = ctx.scoped(Price)
    if billable_metric_id is not None:
        query = query.where(Price.billable_metric_id == billable_metric_id)
    rows, total = await ctx.page(query, page, Price.created_at, Price.id)
    links = await load_links(ctx, rows)
    return list_envelope([links.view(r) for r in rows], page, total)


@router.get("/{id}", response_model=PriceOut)
async def get_price(id: str, ctx: Context) -> PriceOut:
    return await view(ctx, await ctx.owned(Price, id, "Price"))


@router.patch("/{id}", response_model=PriceOut)
async def update_price(id: str, body: PriceUpdate, ctx: Context) -> PriceOut:
    row = await ctx.owned(Price, id, "Price")
    patch = changes(body, nullable=frozenset({"billing_cadence", "feature"}))
    checked = await check(ctx, PriceDraft.of_row(row).patched(patch), row.id)
    if PLAN_RELEVANT & patch.keys():
        await check_linked_plans(ctx, checked)
    assign(row, checked)
    await ctx.commit_or_conflict(conflict(RACE))
    await ctx.session.refresh(row)
    return await view(ctx, row)


@router.delete("/{id}", status_code=204, response_class=Response)
async def delete_price(id: str, ctx: Context) -> Response:
    row = await ctx.owned(Price, id, "Price")

    async def linking_plans() -> ApiError | None:
        query = select(PlanPrice.plan_id).where(PlanPrice.price_id == row.id).order_by(PlanPrice.plan_id)
        plan_ids = list(await ctx.session.scalars(query))
        return linked_conflict(row.id, plan_ids) if plan_ids else None

    await ctx.delete_unless_referenced(row, linking_plans, "Price")
    return Response(status_code=204)


def linked_conflict(price_id: str, plan_ids: list[str]) -> ApiError:
    blocker = {"type": "plans", "count": len(plan_ids), "items": [{"id": p} for p in plan_ids]}
    return conflict(
        f"Price {price_id} cannot be deleted because plans link it ({', '.join(plan_ids)}); "
        "update those plans' prices without it first",
        details={"blockers": [blocker]},
    )
