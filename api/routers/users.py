"""Users: the people behind API keys. Visible to members of the same organization; self-service updates."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import Context, Ctx
from api.problems import forbidden, not_found
from api.schemas.users import UserOut, UserUpdate
from api.wire import changes
from db.models import Membership, User

router = APIRouter(prefix="/v0/users", tags=["users"])


@router.get("/{id}", response_model=UserOut)
async def get_user(id: str, ctx: Context) -> UserOut:
    user = await member(ctx, id)
    return UserOut.of(user, await organizations(ctx, user))


@router.patch("/{id}", response_model=UserOut)
async def update_user(id: str, body: UserUpdate, ctx: Context) -> UserOut:
    user = await member(ctx, id)
    if user.id != ctx.caller.user_id:
        raise forbidden("A user's profile can only be updated with that user's own API key")
    for field, value in changes(body).items():
        setattr(user, field, value.stored() if field == "address" else value)
    await ctx.session.commit()
    await ctx.session.refresh(user)
    return UserOut.of(user, await organizations(ctx, user))


async def member(ctx: Ctx, user_id: str) -> User:
    """A user of the caller's organization; anyone else is a 404, as for every other tenant's object."""
    membership = await ctx.session.get(Membership, (user_id, ctx.caller.merchant_id))
    user = await ctx.session.get(User, user_id) if membership is not None else None
    if user is None:
        raise not_found("User", user_id)
    return user


async def organizations(ctx: Ctx, user: User) -> list[Membership]:
    """All of a user's organizations for the user themself; only the shared one for a teammate."""
    query = select(Membership).where(Membership.user_id == user.id)
    if user.id != ctx.caller.user_id:
        query = query.where(Membership.organization_id == ctx.caller.merchant_id)
    return list(await ctx.session.scalars(query.order_by(Membership.created_at, Membership.organization_id)))
