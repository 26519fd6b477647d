"""Request dependencies: a DB session per request, the authenticated caller, offset paging."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from api.auth import Caller, authenticate
from api.problems import ApiError, conflict, not_found
from api.wire import Page
from db.base import Tenant

T = TypeVar("T", bound=Tenant)


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    # A request that fails before commit leaves nothing behind: the session rolls back on close.
    async with request.app.state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(db_session)]


@dataclass
class Ctx:
    session: AsyncSession
    caller: Caller

    async def owned(self, model: type[T], id_: str, kind: str) -> T:
        """The caller's row of `model` with this id; another tenant's id is a 404, never a 403."""
        row = await self.session.get(model, id_)
        if (
            row is None
            or row.merchant_id != self.caller.merchant_id
            or row.environment != self.caller.environment
        ):
            raise not_found(kind, id_)
        return row

    def scoped(self, model: type[T]) -> Select[T]:
        return select(model).where(
            model.merchant_id == self.caller.merchant_id, model.environment == self.caller.environment
        )

    async def commit_or_conflict(self, error: ApiError) -> None:
        """Commit; a constraint another request broke meanwhile (a race) is `error`, never a 500."""
        try:
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise error from None

    async def delete_unless_referenced(
        self, row: Tenant, blocker: Callable[[], Awaitable[ApiError | None]], kind: str
    ) -> None:
        """Delete `row` unless `blocker` reports what still references it (a 409 with blockers).

        A reference created between the check and the commit is refused by the foreign key; the
        blocker is then asked again so the 409 still names it.
        """
        if blocked := await blocker():
            raise blocked
        await self.session.delete(row)
        try:
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise (await blocker()) or conflict(f"{kind} {row.id} is in use and cannot be deleted") from None

    async def page(self, query: Select[T], page: Page, *order: Any) -> tuple[list[T], int]:
        total = await self.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        rows = await self.session.scalars(query.order_by(*order).limit(page.limit).offset(page.offset))
        return list(rows), int(total or 0)


async def context(request: Request, session: Session) -> Ctx:
    return Ctx(session, await authenticate(request, session))


Context = Annotated[Ctx, Depends(context)]


# PostgreSQL's OFFSET is a bigint; a billion rows in is far past any list a person pages through.
MAX_OFFSET = 1_000_000_000


def paging(
    limit: Annotated[int, Query(ge=1, le=100, description="Items to return (1–100).")] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")] = 0,
) -> Page:
    return Page(limit, offset)


Paging = Annotated[Page, Depends(paging)]
