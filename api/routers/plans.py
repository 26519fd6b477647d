"""Plans: a product's prices, currency, cadence and tax settings, as customers subscribe to them."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from api.deps import Context, Ctx, Paging
from api.lookups import load_links
from api.problems import conflict, invalid, not_found
from api.schemas.plans import PlanCreate, PlanOut, PlanUpdate, cadence_of, check_links, check_price_ids
from api.schemas.prices import LinkedPrice, Problems
from api.wire import ListResponse, changes, contains, list_envelope
from db.models import Customer, Plan, PlanPrice, Price, Product, Subscription
from domain.ids import new_id

router = APIRouter(prefix="/v0/plans", tags=["plans"])

DEFAULT_CADENCE = "P1M"
RACE = "A linked price was deleted meanwhile; retry"


async def load_prices(ctx: Ctx, ids: list[str]) -> list[Price]:
    """The caller's prices with these ids, in the order given; an unknown or foreign id is a 404."""
    check_price_ids(ids)
    found = {p.id: p for p in await ctx.session.scalars(ctx.scoped(Price).where(Price.id.in_(ids)))}
    missing = next((i for i in ids if i not in found), None)
    if missing is not None:
        raise not_found("Price", missing)
    return [found[i] for i in ids]


def derive_product(linked: list[LinkedPrice]) -> str:
    products = sorted({p.product_id for p in linked})
    if len(products) == 1:
        return products[0]
    reason = (
        "there are no prices to take it from"
        if not products
        else f"the prices belong to several products ({', '.join(products)})"
    )
    message = f"productId is required: a plan belongs to one product, and {reason}"
    raise invalid("productId", message, "missing")


async def link_prices(ctx: Ctx, plan_id: str, prices: list[Price]) -> None:
    # Core statements: new links may reuse old links' primary keys, which the ORM unit of work dislikes.
    await ctx.session.execute(delete(PlanPrice).where(PlanPrice.plan_id == plan_id))
    if not prices:
        return
    rows = [{"plan_id": plan_id, "price_id": p.id, "position": i} for i, p in enumerate(prices)]
    try:
        await ctx.session.execute(insert(PlanPrice), rows)
    except IntegrityError:
        await ctx.session.rollback()
        raise conflict(RACE) from None


async def views(ctx: Ctx, plans: list[Plan]) -> list[PlanOut]:
    linked = await ctx.session.execute(
        select(PlanPrice.plan_id, Price)
        .join(Price, Price.id == PlanPrice.price_id)
        .where(PlanPrice.plan_id.in_([p.id for p in plans]))
        .order_by(PlanPrice.plan_id, PlanPrice.position)
    )
    by_plan: dict[str, list[Price]] = defaultdict(list)
    for plan_id, price in linked:
        by_plan[plan_id].append(price)
    links = await load_links(ctx, [p for prices in by_plan.values() for p in prices])
    return [PlanOut.of(plan, [links.view(p) for p in by_plan[plan.id]]) for plan in plans]


async def view(ctx: Ctx, plan: Plan) -> PlanOut:
    return (await views(ctx, [plan]))[0]


@router.post("", status_code=201, response_model=PlanOut)
async def create_plan(body: PlanCreate, ctx: Context) -> PlanOut:
    ctx.caller.require_merchant(body.merchant_id)
    prices = await load_prices(ctx, body.prices or [])
    links = await load_links(ctx, prices)
    linked = [links.linked(p) for p in prices]
    if body.product_id is not None:
        product_id = (await ctx.owned(Product, body.product_id, "Product")).id
    else:
        product_id = derive_product(linked)
    out = Problems()
    check_links(
        out, linked, product_id=product_id, billing_version=body.billing_version, currency=body.currency
    )
    out.raise_any()
    row = Plan(
        id=new_id("plan"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        product_id=product_id,
        name=body.name,
        description=body.description,
        invoice_display_name=body.invoice_display_name,
        currency=body.currency,
        billing_cadence=cadence_of(body.billing_cadence, body.billing_interval) or DEFAULT_CADENCE,
        default_tax_code=body.default_tax_code,
        default_tax_rate=body.default_tax_rate,
        tax_behavior=body.tax_behavior,
        renewal_reminder_enabled=body.renewal_reminder_enabled,
        renewal_reminder_days=body.renewal_reminder_days,
        billing_version=body.billing_version,
    )
    ctx.session.add(row)
    await ctx.session.flush()
    await link_prices(ctx, row.id, prices)
    await ctx.commit_or_conflict(conflict(RACE))
    await ctx.session.refresh(row)
    return await view(ctx, row)


@router.get("", response_model=ListResponse[PlanOut])
async def list_plans(
    ctx: Context,
    page: Paging,
    merchant_id: Annotated[str | None, Query(alias="merchantId")] = None,
    product_id: Annotated[str | None, Query(alias="productId")] = None,
) -> ListResponse[PlanOut]:
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    query = ctx.scoped(Plan).where(Plan.deleted_at.is_(None))
    if product_id is not None:
        query = query.where(Plan.product_id == product_id)
    rows, total = await ctx.page(query, page, Plan.created_at, Plan.id)
    return list_envelope(await views(ctx, rows), page, total)


@router.get("/available", response_model=ListResponse[PlanOut])
async def list_available_plans(
    ctx: Context,
    page: Paging,
    customer_id: Annotated[str, Query(alias="customerId")],
    product_id: Annotated[str | None, Query(alias="productId")] = None,
    search: Annotated[str | None, Query(max_length=255)] = None,
) -> ListResponse[PlanOut]:
    """Plans the customer has no active or pending subscription for; a subscription to any plan of a
    product excludes every plan of that product (behavior §4.9)."""
    customer = await ctx.owned(Customer, customer_id, "Customer")
    taken = (
        select(Plan.product_id)
        .join(Subscription, Subscription.plan_id == Plan.id)
        .where(Subscription.customer_id == customer.id, Subscription.status != "terminated")
    )
    query = ctx.scoped(Plan).where(Plan.deleted_at.is_(None), Plan.product_id.not_in(taken))
    if product_id is not None:
        query = query.where(Plan.product_id == product_id)
    if search:
        query = query.where(contains(Plan.name, search))
    rows, total = await ctx.page(query, page, Plan.created_at, Plan.id)
    return list_envelope(await views(ctx, rows), page, total)


@router.get("/{id}", response_model=PlanOut)
async def get_plan(id: str, ctx: Context) -> PlanOut:
    return await view(ctx, await ctx.owned(Plan, id, "Plan"))


@router.patch("/{id}", response_model=PlanOut)
async def update_plan(id: str, body: PlanUpdate, ctx: Context) -> PlanOut:
    row = await ctx.owned(Plan, id, "Plan")
    patch = changes(body, nullable=frozenset({"description", "invoice_display_name"}))
    prices = None
    if "prices" in patch:
        prices = await load_prices(ctx, patch.pop("prices"))
        links = await load_links(ctx, prices)
        out = Problems()
        check_links(
            out,
            [links.linked(p) for p in prices],
            product_id=row.product_id,
            billing_version=row.billing_version,
            currency=row.currency,
        )
        out.raise_any()
    cadence = cadence_of(patch.pop("billing_cadence", None), patch.pop("billing_interval", None))
    if cadence is not None:
        row.billing_cadence = cadence
    for field, value in patch.items():
        setattr(row, field, value)
    if prices is not None:
        await link_prices(ctx, row.id, prices)
    if body.model_fields_set:
        # Replacing only the prices leaves the plan row clean, so bump the timestamp explicitly.
        row.updated_at = func.now()
    await ctx.commit_or_conflict(conflict(RACE))
    await ctx.session.refresh(row)
    return await view(ctx, row)
