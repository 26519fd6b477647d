"""Disputes of usage events (behavior §12.1): one per event (a unique index), pending until the merchant
accepts (the event is refunded through api.usage_refunds) or declines it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Customer, Dispute, Organization, UsageEvent


@dataclass(frozen=True)
class DisputeFilter:
    merchant_id: str
    environment: str
    customer_id: str | None = None
    consumer_id: str | None = None
    status: str | None = None


async def get(
    session: AsyncSession, merchant_id: str, environment: str, dispute_id: str, *, lock: bool = False
) -> Dispute | None:
    """The tenant's dispute with this id (another tenant's is None); `lock` takes it FOR UPDATE."""
    query = select(Dispute).where(
        Dispute.id == dispute_id, Dispute.merchant_id == merchant_id, Dispute.environment == environment
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    row: Dispute | None = await session.scalar(query)
    return row


async def of_usage_event(session: AsyncSession, usage_event_id: str) -> Dispute | None:
    row: Dispute | None = await session.scalar(
        select(Dispute).where(Dispute.usage_event_id == usage_event_id)
    )
    return row


async def list_disputes(
    session: AsyncSession, where: DisputeFilter, *, limit: int, offset: int
) -> tuple[list[tuple[Dispute, Organization, str]], int]:
    """One page of the tenant's disputes, newest first, each with its customer's consumer organization
    (name and email) and the disputed event's currency, and how many match."""
    conditions = [Dispute.merchant_id == where.merchant_id, Dispute.environment == where.environment]
    if where.customer_id is not None:
        conditions.append(Dispute.customer_id == where.customer_id)
    if where.consumer_id is not None:
        conditions.append(Customer.consumer_id == where.consumer_id)
    if where.status is not None:
        conditions.append(Dispute.status == where.status)
    joined = (
        select(Dispute, Organization, UsageEvent.currency)
        .join(UsageEvent, UsageEvent.id == Dispute.usage_event_id)
        .join(Customer, Customer.id == Dispute.customer_id)
        .join(Organization, Organization.id == Customer.consumer_id)
        .where(*conditions)
    )
    total = await session.scalar(select(func.count()).select_from(joined.subquery()))
    rows = await session.execute(
        joined.order_by(Dispute.created_at.desc(), Dispute.id.desc()).limit(limit).offset(offset)
    )
    return [(d, o, c) for d, o, c in rows.all()], int(total or 0)


async def pending_blocker(session: AsyncSession, customer_id: str) -> dict[str, Any] | None:
    """What DELETE /v0/customers/{id} reports while the customer has pending disputes:
    {"type": "disputes", "count": n, "items": [{"id", "status"}]} (at most 10 items), else None."""
    rows = list(
        await session.execute(
            select(Dispute.id, Dispute.status)
            .where(Dispute.customer_id == customer_id, Dispute.status == "pending")
            .order_by(Dispute.created_at, Dispute.id)
        )
    )
    if not rows:
        return None
    return {"type": "disputes", "count": len(rows), "items": [{"id": i, "status": s} for i, s in rows[:10]]}
