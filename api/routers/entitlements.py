"""v0 entitlements = wallet reservations (behavior §7.1, issue 10 item 4).

`POST /v0/entitlements` prices each requested metric against the customer's active Legacy (billingVersion 0)
subscription, reserves the total from the wallet in the same commit as the row, and starts the entitlement's
expiry timer (EntitlementWorkflow) after the commit; a start that fails is healed by the reconciler.
Decisions (docs/decisions.md, "v0 entitlements"): the per-unit `price` override prices `quantity × price`
(a dynamic price's override must lie within its bounds); without it the plan's price prices `quantity` units
as one record, a dynamic price at its maxPrice; expiresAt is 30 days after creation (on the test clock's
time for a clock-bound subscription).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import func, select
from temporalio.service import RPCError

from api.app_state import temporal_client
from api.deps import Context, Ctx, Paging
from api.problems import ApiError, invalid, not_found
from api.schemas.entitlements import (
    ActiveEntitlementList,
    ActiveEntitlementOut,
    ActivePagination,
    EntitlementCreate,
    EntitlementDatumIn,
    EntitlementOut,
)
from db import entitlements
from db.models import BillableMetric, Customer, Entitlement, Plan, PlanPrice, Price, Subscription, TestClock
from domain import ledger
from domain.money import EXACT, format_amount, from_nanos, parse_decimal, to_nanos_rounded
from domain.pricing import PriceOutOfBounds, PricePropertiesError, model_for
from domain.pricing.base import decimal_prop
from workflows.client import start_entitlement_workflow

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v0/entitlements", tags=["entitlements"])

MAX_RESERVATION = 10**18  # nanodollars (a billion in the currency's units): far beyond any wallet
LIFETIME = timedelta(days=30)  # expiresAt = creation + LIFETIME (Paygentic does not document it)
START_TIMEOUT_SECONDS = 5.0  # the row is committed; an unreachable Temporal is healed by the reconciler


def _show(nanos: int) -> str:
    return format_amount(from_nanos(nanos).normalize()) if nanos else "0"


async def _clock_now(ctx: Ctx, subscription: Subscription, wall: datetime) -> datetime:
    """The subscription's time: its test clock's reading, else the wall clock's."""
    if subscription.test_clock_id is not None:
        clock = await ctx.session.get(TestClock, subscription.test_clock_id)
        if clock is not None:
            return clock.current_time
    return wall


async def _legacy_subscriptions(ctx: Ctx, customer_id: str) -> list[tuple[Subscription, Plan]]:
    """The customer's active subscriptions to Legacy plans, the most recently started first; 422 when
    there is none (naming a Standard one if that is all there is)."""
    rows = (
        await ctx.session.execute(
            ctx.scoped(Subscription)
            .add_columns(Plan)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(Subscription.customer_id == customer_id, Subscription.status == "active")
            .order_by(Subscription.started_at.desc(), Subscription.id)
        )
    ).all()
    legacy = [(sub, plan) for sub, plan in rows if plan.billing_version == 0]
    if legacy:
        return legacy
    if rows:
        sub = rows[0][0]
        raise ApiError(
            422,
            f"Customer {customer_id}'s active subscription {sub.id} is on a Standard (billingVersion 1) "
            "plan: v0 entitlements reserve wallet funds for Legacy usage events (billingVersion 0); use "
            "/v1/entitlements for Standard plans",
            code="NOT_LEGACY_SUBSCRIPTION",
        )
    raise ApiError(
        422,
        f"Customer {customer_id} has no active subscription: an entitlement reserves funds for the usage of "
        "an active Legacy (billingVersion 0) subscription",
        code="NO_ACTIVE_SUBSCRIPTION",
    )


async def _plan_prices(ctx: Ctx, plan_id: str, metric_ids: Sequence[str]) -> dict[str, Price]:
    """The plan's price of each metric (the first by position when a plan prices one twice)."""
    rows = await ctx.session.scalars(
        select(Price)
        .join(PlanPrice, PlanPrice.price_id == Price.id)
        .where(PlanPrice.plan_id == plan_id, Price.billable_metric_id.in_(metric_ids))
        .order_by(PlanPrice.position)
    )
    found: dict[str, Price] = {}
    for price in rows:
        assert price.billable_metric_id is not None
        found.setdefault(price.billable_metric_id, price)
    return found


def _cost(index: int, datum: EntitlementDatumIn, price: Price) -> tuple[Decimal, Decimal]:
    """(exact amount, unit price shown) of one datum under its plan price."""
    field = f"entitlementData[{index}].price"
    props: dict[str, Any] = price.properties
    try:
        model = model_for(price.model)
        override = parse_decimal(datum.price) if datum.price is not None else None
        if override is not None and price.model != "dynamic":
            return EXACT.multiply(datum.quantity, override), override
        if price.model == "dynamic":
            # The most a unit may cost, unless the caller names the price it will report.
            reported = override if override is not None else decimal_prop(props, "maxPrice")
            charge = model.price_record(props, datum.quantity, reported)
        else:
            charge = model.price_record(props, datum.quantity)
    except PriceOutOfBounds as exc:
        raise invalid(field, str(exc), "out_of_bounds") from None
    except PricePropertiesError as exc:
        raise ApiError(
            422, f"Price {price.id} of billable metric {datum.billable_metric_id} cannot be priced: {exc}"
        ) from None
    return charge.amount, charge.unit_price


def _check_data(data: Sequence[EntitlementDatumIn]) -> None:
    seen: set[str] = set()
    for i, datum in enumerate(data):
        if datum.billable_metric_id in seen:
            raise invalid(
                f"entitlementData[{i}].billableMetricId",
                "appears more than once; give each billable metric once with its whole quantity",
                "duplicate",
            )
        seen.add(datum.billable_metric_id)
        if datum.price is not None and parse_decimal(datum.price) < 0:
            raise invalid(f"entitlementData[{i}].price", "must not be negative")


@router.post("", status_code=201, response_model=EntitlementOut)
async def create_entitlement(body: EntitlementCreate, ctx: Context, request: Request) -> EntitlementOut:
    ctx.caller.require_merchant(body.merchant_id)
    _check_data(body.entitlement_data)
    customer = await ctx.owned(Customer, body.customer_id, "Customer")
    ids = [d.billable_metric_id for d in body.entitlement_data]
    known = set(
        await ctx.session.scalars(
            ctx.scoped(BillableMetric).with_only_columns(BillableMetric.id).where(BillableMetric.id.in_(ids))
        )
    )
    for metric_id in ids:
        if metric_id not in known:
            raise not_found("Billable metric", metric_id)
    candidates = await _legacy_subscriptions(ctx, customer.id)
    chosen: tuple[Subscription, Plan, dict[str, Price]] | None = None
    for sub, plan in candidates:
        prices = await _plan_prices(ctx, plan.id, ids)
        if len(prices) == len(ids):
            chosen = (sub, plan, prices)
            break
    if chosen is None:
        sub, plan = candidates[0]
        prices = await _plan_prices(ctx, plan.id, ids)
        index = next(i for i, m in enumerate(ids) if m not in prices)
        raise invalid(
            f"entitlementData[{index}].billableMetricId",
            f"billable metric {ids[index]} is not priced in plan {plan.id} of the customer's active "
            f"subscription {sub.id}",
            "not_in_plan",
        )
    sub, plan, prices = chosen
    total = Decimal(0)
    stored: list[dict[str, Any]] = []
    for i, datum in enumerate(body.entitlement_data):
        amount, unit_price = _cost(i, datum, prices[datum.billable_metric_id])
        total = EXACT.add(total, amount)
        stored.append(
            {
                "billableMetricId": datum.billable_metric_id,
                "quantity": format_amount(datum.quantity),
                "price": datum.price if datum.price is not None else format_amount(unit_price),
                "priceId": prices[datum.billable_metric_id].id,
            }
        )
    nanos = to_nanos_rounded(total)
    if nanos <= 0:
        raise invalid(
            "entitlementData",
            "reserves nothing: Σ quantity × price is 0; an entitlement guarantees payment of a positive "
            "amount",
            "zero_reservation",
        )
    if nanos > MAX_RESERVATION:
        raise invalid(
            "entitlementData",
            f"reserves more than the largest reservation ({_show(MAX_RESERVATION)} {sub.currency})",
            "too_large",
        )
    wall = datetime.now(UTC)
    now = await _clock_now(ctx, sub, wall)
    merchant_id, environment = ctx.caller.merchant_id, ctx.caller.environment
    try:
        row = await entitlements.create(
            ctx.session,
            merchant_id=merchant_id,
            environment=environment,
            customer_id=customer.id,
            subscription_id=sub.id,
            plan_id=plan.id,
            product_id=plan.product_id,
            currency=sub.currency,
            billable_metrics=stored,
            amount=nanos,
            max_uses=body.max_uses,
            expires_at=now + LIFETIME,
            test_clock_id=sub.test_clock_id,
            created_at=wall,
        )
    except ledger.InsufficientFunds as exc:
        await ctx.session.rollback()
        raise ApiError(
            422,
            f"Cannot reserve {_show(exc.needed)} {exc.currency} for this entitlement: {exc}",
            code="INSUFFICIENT_FUNDS",
            details={
                "currency": exc.currency,
                "needed": _show(exc.needed),
                "available": _show(exc.available),
                "shortfall": _show(exc.shortfall),
            },
        ) from None
    await ctx.session.commit()
    await ctx.session.refresh(row)
    await _start(request, row)
    return EntitlementOut.of(row)


async def _start(request: Request, row: Entitlement) -> None:
    """Start the expiry timer after the commit, idempotently; if Temporal cannot be reached, the
    reservation stands and the reconciler starts the workflow of every active entitlement missing one."""
    try:
        client = await asyncio.wait_for(temporal_client(request.app), START_TIMEOUT_SECONDS)
        await asyncio.wait_for(
            start_entitlement_workflow(
                client,
                request.app.state.settings.task_queue,
                row.id,
                merchant_id=row.merchant_id,
                customer_id=row.customer_id,
                subscription_id=row.subscription_id,
                test_clock_id=row.test_clock_id,
            ),
            START_TIMEOUT_SECONDS,
        )
    except (RPCError, RuntimeError, OSError, TimeoutError) as exc:
        log.warning("entitlement %s: workflow not started (%s); the reconciler starts it", row.id, exc)


@router.get("/activeEntitlements", response_model=ActiveEntitlementList)
async def list_active_entitlements(
    ctx: Context,
    page: Paging,
    customer_id: Annotated[str, Query(alias="customerId", max_length=64)],
    product_id: Annotated[str | None, Query(alias="productId", max_length=64)] = None,
    subscription_id: Annotated[str | None, Query(alias="subscriptionId", max_length=64)] = None,
) -> ActiveEntitlementList:
    """Active = not expired (on the test clock's time for a clock-bound one), uses and balance left."""
    await ctx.owned(Customer, customer_id, "Customer")
    now = datetime.now(UTC)
    clock_time = (
        select(TestClock.current_time).where(TestClock.id == Entitlement.test_clock_id).scalar_subquery()
    )
    query = ctx.scoped(Entitlement).where(
        Entitlement.customer_id == customer_id,
        Entitlement.status == entitlements.ACTIVE,
        Entitlement.used_count < Entitlement.max_uses,
        Entitlement.remaining_balance > 0,
        Entitlement.expires_at > func.coalesce(clock_time, now),
    )
    if product_id is not None:
        query = query.where(Entitlement.product_id == product_id)
    if subscription_id is not None:
        query = query.where(Entitlement.subscription_id == subscription_id)
    rows, total = await ctx.page(query, page, Entitlement.created_at, Entitlement.id)
    return ActiveEntitlementList(
        data=[ActiveEntitlementOut.of(r, now) for r in rows],
        pagination=ActivePagination(
            offset=page.offset, limit=page.limit, total=total, has_more=page.offset + len(rows) < total
        ),
    )


@router.get("/{id}", response_model=EntitlementOut)
async def get_entitlement(id: str, ctx: Context) -> EntitlementOut:
    """Extension: one entitlement, with its remaining balance and status."""
    return EntitlementOut.of(await ctx.owned(Entitlement, id, "Entitlement"))
