"""Queries more than one router needs: what a price links to, the consumer behind a customer, the keys a
taxRates map may use. Routers never import each other; what they share lives here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from api.deps import Ctx
from api.problems import FieldErrors, conflict
from api.schemas.customers import ConsumerIn
from api.schemas.prices import PriceLinks
from db.models import BillableMetric, Feature, Fee, Organization, Plan, Price
from domain.ids import new_id


async def load_links(ctx: Ctx, rows: Iterable[Price]) -> PriceLinks:
    rows = list(rows)
    metric_ids = {r.billable_metric_id for r in rows if r.billable_metric_id}
    fee_ids = {r.fee_id for r in rows if r.fee_id}
    feature_ids = {r.feature_id for r in rows if r.feature_id}
    metrics = await ctx.session.scalars(select(BillableMetric).where(BillableMetric.id.in_(metric_ids)))
    fees = await ctx.session.scalars(select(Fee).where(Fee.id.in_(fee_ids)))
    features = await ctx.session.scalars(select(Feature).where(Feature.id.in_(feature_ids)))
    return PriceLinks(
        metrics={m.id: m for m in metrics}, fees={f.id: f for f in fees}, features={f.id: f for f in features}
    )


async def find_or_insert_consumer(ctx: Ctx, given: ConsumerIn) -> tuple[Organization, bool]:
    """The merchant's consumer with this email, created if missing; True when this request created it.

    ON CONFLICT DO NOTHING makes concurrent creates for one email converge on one row: the loser waits for
    the winner's commit, inserts nothing, and reads the winner's row."""
    inserted = await ctx.session.scalar(
        insert(Organization)
        .values(
            id=new_id("organization"),
            kind="consumer",
            name=given.name,
            email=given.email,
            phone=given.phone,
            address=given.address.stored(),
            owner_merchant_id=ctx.caller.merchant_id,
            environment=ctx.caller.environment,
        )
        .on_conflict_do_nothing()
        .returning(Organization.id)
    )
    consumer = await ctx.session.scalar(
        select(Organization).where(
            Organization.kind == "consumer",
            Organization.owner_merchant_id == ctx.caller.merchant_id,
            Organization.environment == ctx.caller.environment,
            func.lower(Organization.email) == given.email.lower(),
        )
    )
    if consumer is None:
        raise conflict("The consumer changed while this request ran; retry the request")
    return consumer, inserted is not None


async def check_rate_keys(ctx: Ctx, rates: dict[str, Any]) -> None:
    """Every taxRates key is "default" or the id of one of the caller's plans or billable metrics."""
    keys = set(rates) - {"default"}
    if not keys:
        return
    merchant, environment = ctx.caller.merchant_id, ctx.caller.environment
    plans = select(Plan.id).where(
        Plan.id.in_(keys), Plan.merchant_id == merchant, Plan.environment == environment
    )
    metrics = select(BillableMetric.id).where(
        BillableMetric.id.in_(keys),
        BillableMetric.merchant_id == merchant,
        BillableMetric.environment == environment,
    )
    known = set(await ctx.session.scalars(plans.union(metrics)))
    unknown = sorted(keys - known)
    if unknown:
        message = 'is not "default" or the id of one of your plans or billable metrics'
        errors = [{"field": f"taxRates.{k}", "message": message, "code": "unknown_key"} for k in unknown]
        raise FieldErrors(errors)
