"""Products: what a merchant sells. No delete in the Paygentic API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Context, Paging
from api.schemas.products import ProductCreate, ProductOut, ProductUpdate
from api.wire import ListResponse, changes, list_envelope
from db.models import Product
from domain.ids import new_id

router = APIRouter(prefix="/v0/products", tags=["products"])


@router.post("", status_code=201, response_model=ProductOut)
async def create_product(body: ProductCreate, ctx: Context) -> ProductOut:
    ctx.caller.require_merchant(body.merchant_id)
    row = Product(
        id=new_id("product"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        name=body.name,
        description=body.description,
        metadata_=body.metadata or {},
    )
    ctx.session.add(row)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return ProductOut.of(row)


@router.get("", response_model=ListResponse[ProductOut])
async def list_products(
    ctx: Context, page: Paging, merchant_id: Annotated[str | None, Query(alias="merchantId")] = None
) -> ListResponse[ProductOut]:
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    rows, total = await ctx.page(ctx.scoped(Product), page, Product.created_at, Product.id)
    return list_envelope([ProductOut.of(r) for r in rows], page, total)


@router.get("/{id}", response_model=ProductOut)
async def get_product(id: str, ctx: Context) -> ProductOut:
    return ProductOut.of(await ctx.owned(Product, id, "Product"))


@router.patch("/{id}", response_model=ProductOut)
async def update_product(id: str, body: ProductUpdate, ctx: Context) -> ProductOut:
    row = await ctx.owned(Product, id, "Product")
    for field, value in changes(body).items():
        setattr(row, field, value)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return ProductOut.of(row)
