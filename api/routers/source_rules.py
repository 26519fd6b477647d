"""Auto-approval rules of a source (behavior §9.4, D17): at most 10 per source; conditions checked by
domain/source_rules, which names each bad condition. Rules are evaluated when an event is imported."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select

from api.deps import Context, Ctx
from api.problems import ApiError, FieldErrors, not_found
from api.schemas.source_views import SourceRuleOut
from api.schemas.sources import RuleCreate, RuleList, RuleUpdate
from api.wire import changes
from db.models import Source, SourceRule
from domain.ids import new_id
from domain.source_rules import MAX_RULES_PER_SOURCE, condition_errors

router = APIRouter(prefix="/v0/sourceRules", tags=["sources"])


def _check_conditions(conditions: list[Any]) -> None:
    if errors := condition_errors(conditions):
        raise FieldErrors(
            [{"field": field, "message": message, "code": "invalid"} for field, message in errors]
        )


async def _lock_source(ctx: Ctx, source_id: str) -> Source:
    """The caller's source, locked until commit: rule creates of one source queue on it, so counting its
    rules and inserting one cannot interleave (two concurrent creates never make an 11th)."""
    source = await ctx.session.get(Source, source_id, with_for_update=True)
    if source is None or (source.merchant_id, source.environment) != (
        ctx.caller.merchant_id,
        ctx.caller.environment,
    ):
        raise not_found("Source", source_id)
    return source


@router.post("", status_code=201, response_model=SourceRuleOut)
async def create_rule(body: RuleCreate, ctx: Context) -> SourceRuleOut:
    source = await _lock_source(ctx, body.source_id)
    _check_conditions(body.conditions)
    count = int(await ctx.session.scalar(select(func.count()).where(SourceRule.source_id == source.id)) or 0)
    if count >= MAX_RULES_PER_SOURCE:
        raise ApiError(
            400,
            f"Source {source.id} already has {count} rules, the most a source can have "
            f"({MAX_RULES_PER_SOURCE}); delete one, or add this rule's conditions to an existing rule",
            code="rule_limit_reached",
        )
    row = SourceRule(
        id=new_id("source_rule"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        source_id=source.id,
        name=body.name,
        description=body.description or "",
        enabled=body.enabled,
        order=body.order,
        conditions=body.conditions,
        created_by=ctx.caller.user_id,
    )
    ctx.session.add(row)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return SourceRuleOut.of(row)


@router.get("", response_model=RuleList)
async def list_rules(ctx: Context, source_id: Annotated[str, Query(alias="sourceId")]) -> RuleList:
    """Every rule of the source, in evaluation order (D17)."""
    source = await ctx.owned(Source, source_id, "Source")
    rows = await ctx.session.scalars(
        ctx.scoped(SourceRule)
        .where(SourceRule.source_id == source.id)
        .order_by(SourceRule.order, SourceRule.created_at, SourceRule.id)
    )
    return RuleList(data=[SourceRuleOut.of(r) for r in rows])


@router.get("/{ruleId}", response_model=SourceRuleOut)
async def get_rule(ruleId: str, ctx: Context) -> SourceRuleOut:  # the contract names it ruleId
    return SourceRuleOut.of(await ctx.owned(SourceRule, ruleId, "Source rule"))


@router.patch("/{ruleId}", response_model=SourceRuleOut)
async def update_rule(ruleId: str, body: RuleUpdate, ctx: Context) -> SourceRuleOut:
    row = await ctx.owned(SourceRule, ruleId, "Source rule")
    updates = changes(body)
    if "conditions" in updates:
        _check_conditions(updates["conditions"])
    for field, value in updates.items():
        setattr(row, field, value)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return SourceRuleOut.of(row)


@router.delete("/{ruleId}", status_code=204, response_class=Response)
async def delete_rule(ruleId: str, ctx: Context) -> Response:
    row = await ctx.owned(SourceRule, ruleId, "Source rule")
    await ctx.session.delete(row)
    await ctx.session.commit()
    return Response(status_code=204)
