"""The registry of clock-bound kinds: which workflows a test clock drives when it advances.

Each kind lists, page by page in a stable order, the business ids bound to one clock and names their
workflow ids; every such workflow answers the `advance_clock` update (workflows/test_clock.py). A later
clock-bound workflow (source installations, entitlements, webhook retries, payment expiry) adds one entry
here; TestClockWorkflow and the batch activity stay as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import exists, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Entitlement, SourceEvent, SourceInstallation, Subscription
from domain import status
from workflows.ids import (
    entitlement_workflow_id,
    source_installation_workflow_id,
    subscription_workflow_id,
)

BoundIds = Callable[[AsyncSession, str, str | None, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class ClockBoundKind:
    name: str
    bound_ids: BoundIds  # (session, test clock id, after this id, at most) → ids in ascending order
    workflow_id: Callable[[str], str]
    # Drive this kind's workflows one at a time, in the order bound_ids lists them (time order).
    in_order: bool = False


async def _subscriptions(session: AsyncSession, clock_id: str, after: str | None, limit: int) -> list[str]:
    # Terminated ones too: their workflow may still owe a final invoice (it answers NOT_FOUND once done).
    query = select(Subscription.id).where(Subscription.test_clock_id == clock_id)
    if after is not None:
        query = query.where(Subscription.id > after)
    return list(await session.scalars(query.order_by(Subscription.id).limit(limit)))


async def _installations(session: AsyncSession, clock_id: str, after: str | None, limit: int) -> list[str]:
    # Those whose workflow runs: polling, or stopped with events still pending (it waits for their review).
    pending = exists().where(
        SourceEvent.installation_id == SourceInstallation.id, SourceEvent.status == "pending"
    )
    query = (
        select(SourceInstallation.id)
        .join(Subscription, Subscription.id == SourceInstallation.subscription_id)
        .where(
            Subscription.test_clock_id == clock_id,
            or_(SourceInstallation.status.in_(status.INSTALLATION_POLLING), pending),
        )
    )
    if after is not None:
        query = query.where(SourceInstallation.id > after)
    return list(await session.scalars(query.order_by(SourceInstallation.id).limit(limit)))


async def _entitlements(session: AsyncSession, clock_id: str, after: str | None, limit: int) -> list[str]:
    # The active ones (a settled entitlement's workflow has ended), in time order: earliest expiresAt first,
    # driven one at a time (in_order), so an advance releases them in the order they expired (each release
    # is stamped at its expiresAt).
    query = select(Entitlement.id).where(
        Entitlement.test_clock_id == clock_id, Entitlement.status == "active"
    )
    if after is not None:
        previous = select(Entitlement.expires_at).where(Entitlement.id == after).scalar_subquery()
        query = query.where(tuple_(Entitlement.expires_at, Entitlement.id) > tuple_(previous, after))
    return list(await session.scalars(query.order_by(Entitlement.expires_at, Entitlement.id).limit(limit)))


# Subscriptions first: an advance closes their periods before installations import at the new time.
KINDS: tuple[ClockBoundKind, ...] = (
    ClockBoundKind("subscription", _subscriptions, subscription_workflow_id),
    ClockBoundKind("source installation", _installations, source_installation_workflow_id),
    ClockBoundKind("entitlement", _entitlements, entitlement_workflow_id, in_order=True),
)


def kind_named(name: str) -> ClockBoundKind:
    return next(kind for kind in KINDS if kind.name == name)


def kind_after(name: str) -> ClockBoundKind | None:
    """The kind driven after `name`; None when every kind is done."""
    index = KINDS.index(kind_named(name))
    return KINDS[index + 1] if index + 1 < len(KINDS) else None
