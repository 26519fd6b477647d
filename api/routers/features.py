"""Features: what a plan's subscribers are entitled to, keyed by a slug unique within the product."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select

from api.deps import Context, Ctx, Paging
from api.problems import ApiError, conflict
from api.schemas.features import FeatureCreate, FeatureOut, FeatureUpdate
from api.wire import ListResponse, changes, list_envelope
from db.models import Feature, Price, Product
from domain.ids import new_id

router = APIRouter(prefix="/v0/features", tags=["features"])


def _duplicate(key: str, product_id: str) -> ApiError:
    return conflict(f"A feature with key {key!r} already exists in product {product_id!r}")


async def _check_key_free(ctx: Ctx, product_id: str, key: str, feature_id: str | None = None) -> None:
    query = select(Feature.id).where(Feature.product_id == product_id, Feature.key == key)
    if feature_id is not None:
        query = query.where(Feature.id != feature_id)
    if await ctx.session.scalar(query.limit(1)) is not None:
        raise _duplicate(key, product_id)


async def _commit(ctx: Ctx, row: Feature) -> None:
    # Only the (product, key) constraint can fail here: a concurrent request took the key.
    await ctx.commit_or_conflict(_duplicate(row.key, row.product_id))
    await ctx.session.refresh(row)


@router.post("", status_code=201, response_model=FeatureOut)
async def create_feature(body: FeatureCreate, ctx: Context) -> FeatureOut:
    ctx.caller.require_merchant(body.merchant_id)
    await ctx.owned(Product, body.product_id, "Product")
    await _check_key_free(ctx, body.product_id, body.key)
    row = Feature(
        id=new_id("feature"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        product_id=body.product_id,
        key=body.key,
        name=body.name,
        type=body.type,
        metadata_=body.metadata or {},
    )
    ctx.session.add(row)
    await _commit(ctx, row)
    return FeatureOut.of(row)


@router.get("", response_model=ListResponse[FeatureOut])
async def list_features(
    ctx: Context,
    page: Paging,
    product_id: Annotated[str, Query(alias="productId")],
    key: Annotated[str | None, Query()] = None,
) -> ListResponse[FeatureOut]:
    await ctx.owned(Product, product_id, "Product")
    query = ctx.scoped(Feature).where(Feature.product_id == product_id)
    if key is not None:
        query = query.where(Feature.key == key)
    rows, total = await ctx.page(query, page, Feature.created_at, Feature.id)
    return list_envelope([FeatureOut.of(r) for r in rows], page, total)


@router.get("/{id}", response_model=FeatureOut)
async def get_feature(id: str, ctx: Context) -> FeatureOut:
    return FeatureOut.of(await ctx.owned(Feature, id, "Feature"))


@router.patch("/{id}", response_model=FeatureOut)
async def update_feature(id: str, body: FeatureUpdate, ctx: Context) -> FeatureOut:
    row = await ctx.owned(Feature, id, "Feature")
    updates = changes(body)
    if "key" in updates:
        await _check_key_free(ctx, row.product_id, updates["key"], feature_id=row.id)
    if "metadata" in updates:
        updates["metadata_"] = updates.pop("metadata")
    for field, value in updates.items():
        setattr(row, field, value)
    await _commit(ctx, row)
    return FeatureOut.of(row)


async def _in_use(ctx: Ctx, feature_id: str) -> ApiError | None:
    count = int(await ctx.session.scalar(select(func.count()).where(Price.feature_id == feature_id)) or 0)
    if not count:
        return None
    return conflict(
        f"Feature cannot be deleted because {count} price(s) link it; remove the feature from those "
        "prices first",
        {"blockers": [{"type": "prices", "count": count}]},
    )


@router.delete("/{id}", status_code=204, response_class=Response)
async def delete_feature(id: str, ctx: Context) -> Response:
    row = await ctx.owned(Feature, id, "Feature")
    await ctx.delete_unless_referenced(row, lambda: _in_use(ctx, id), "Feature")
    return Response(status_code=204)
