"""Sources (behavior §9.2): a plan's revenue source, the template each customer's installation follows.
No delete. `config.ampersandProjectId` is accepted and echoed but not required: Accrue connects Stripe
itself (installations), without Ampersand."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from temporalio.client import RPCTimeoutOrCancelledError

from api.deps import Context, Ctx, Paging
from api.problems import ApiError, invalid, not_found
from api.schemas.source_views import SourceOut
from api.schemas.sources import SourceCreate, SourceUpdate
from api.source_connect import LIVE
from api.source_temporal import UNREACHABLE, reachable_client
from api.wire import ListResponse, changes, list_envelope
from db.models import BillableMetric, Plan, Source, SourceInstallation
from domain.ids import new_id
from domain.money import is_currency_code
from workflows.client import poll_installation_now

router = APIRouter(prefix="/v0/sources", tags=["sources"])
log = logging.getLogger("accrue.api")

REVENUE_FIELD = "metadata.billableMetricMapping.revenue"
# Re-enabling a source nudges its installations to poll at once; best effort, the next poll comes anyway.
POLL_NUDGE_TIMEOUT_SECONDS = 5.0


async def _plan(ctx: Ctx, plan_id: str) -> Plan:
    plan = await ctx.owned(Plan, plan_id, "Plan")
    if plan.deleted_at is not None:
        raise not_found("Plan", plan_id)
    return plan


async def revenue_metric(ctx: Ctx, plan: Plan, metadata: dict[str, Any] | None) -> str:
    """The id in metadata.billableMetricMapping.revenue, checked: a metric of the plan's product whose unit
    is the plan's currency and whose events can carry an amount (SUM of a valueProperty of an eventType),
    since approving a source event records its revenue as a meter event on that metric."""
    mapping = (metadata or {}).get("billableMetricMapping")
    if not isinstance(mapping, dict) or "revenue" not in mapping:
        raise invalid(
            REVENUE_FIELD,
            "is required: the id of the billable metric (bm_…) of the plan's product that approved revenue "
            f"is recorded on, with unit {plan.currency}",
            "missing",
        )
    metric_id = mapping["revenue"]
    if not isinstance(metric_id, str) or not metric_id:
        raise invalid(REVENUE_FIELD, "must be the id of a billable metric, such as bm_…")
    metric = await ctx.session.get(BillableMetric, metric_id)
    if metric is None or (metric.merchant_id, metric.environment) != (plan.merchant_id, plan.environment):
        raise invalid(REVENUE_FIELD, f"billable metric {metric_id!r} was not found")
    if metric.product_id != plan.product_id:
        raise invalid(
            REVENUE_FIELD,
            f"billable metric {metric_id} belongs to product {metric.product_id}, but plan {plan.id} is of "
            f"product {plan.product_id}: use a metric of product {plan.product_id}",
        )
    if metric.unit != plan.currency:
        what = "the currency" if is_currency_code(metric.unit) else "not a currency code"
        raise invalid(
            REVENUE_FIELD,
            f"billable metric {metric_id} has unit {metric.unit!r} ({what}), but revenue is recorded in the "
            f"plan's currency: use a metric with unit {plan.currency!r}",
        )
    if metric.aggregation != "SUM" or not metric.value_property or not metric.event_type:
        raise invalid(
            REVENUE_FIELD,
            f"billable metric {metric_id} cannot carry revenue (aggregation {metric.aggregation}, eventType "
            f"{metric.event_type!r}, valueProperty {metric.value_property!r}): revenue needs aggregation SUM "
            "with an eventType and a valueProperty, where approvals record each amount",
        )
    return metric.id


@router.post("", status_code=201, response_model=SourceOut)
async def create_source(body: SourceCreate, ctx: Context) -> SourceOut:
    plan = await _plan(ctx, body.plan_id)
    metric_id = await revenue_metric(ctx, plan, body.metadata)
    row = Source(
        id=new_id("source"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        plan_id=plan.id,
        type=body.type,
        name=body.name,
        description=body.description,
        config=body.config or {},
        metadata_=body.metadata or {},
        enabled=body.enabled,
        processing_mode=body.processing_mode,
        revenue_metric_id=metric_id,
    )
    ctx.session.add(row)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return SourceOut.of(row)


@router.get("", response_model=ListResponse[SourceOut])
async def list_sources(
    ctx: Context,
    page: Paging,
    merchant_id: Annotated[str | None, Query(alias="merchantId")] = None,
    plan_id: Annotated[str | None, Query(alias="planId")] = None,
) -> ListResponse[SourceOut]:
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    query = ctx.scoped(Source)
    if plan_id is not None:
        query = query.where(Source.plan_id == plan_id)
    rows, total = await ctx.page(query, page, Source.created_at, Source.id)
    return list_envelope([SourceOut.of(r) for r in rows], page, total)


@router.get("/{id}", response_model=SourceOut)
async def get_source(id: str, ctx: Context) -> SourceOut:
    return SourceOut.of(await ctx.owned(Source, id, "Source"))


@router.patch("/{id}", response_model=SourceOut)
async def update_source(id: str, body: SourceUpdate, ctx: Context, request: Request) -> SourceOut:
    row = await ctx.owned(Source, id, "Source")
    updates = changes(body, nullable=frozenset({"description"}))
    if "metadata" in updates:
        row.revenue_metric_id = await revenue_metric(ctx, await _plan(ctx, row.plan_id), updates["metadata"])
        updates["metadata_"] = updates.pop("metadata")
    re_enabled = updates.get("enabled") is True and not row.enabled
    for field, value in updates.items():
        setattr(row, field, value)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    if re_enabled:
        await _nudge_installations(ctx, request, row.id)
    return SourceOut.of(row)


async def _nudge_installations(ctx: Ctx, request: Request, source_id: str) -> None:
    """Have the live installations of a re-enabled source poll now. The update stands either way, so an
    unreachable Temporal is logged, not answered with an error."""
    ids = list(
        await ctx.session.scalars(
            select(SourceInstallation.id).where(
                SourceInstallation.source_id == source_id, SourceInstallation.status.in_(LIVE)
            )
        )
    )
    if not ids:
        return
    try:
        client = await asyncio.wait_for(reachable_client(request.app, "poll"), POLL_NUDGE_TIMEOUT_SECONDS)
        await asyncio.wait_for(
            asyncio.gather(*(poll_installation_now(client, i, "source enabled") for i in ids)),
            POLL_NUDGE_TIMEOUT_SECONDS,
        )
    except (ApiError, RPCTimeoutOrCancelledError, TimeoutError, *UNREACHABLE) as exc:
        log.warning(
            "installations of source %s not nudged to poll: %s; they poll at their next time", source_id, exc
        )
