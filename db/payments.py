"""One-off payments (POST /v0/payments, behavior §12.2): the rows the API creates and lists, and the status
writes PaymentWorkflow's activities make under the row lock (checked against domain.status.PAYMENT).

Every write of a status also records its webhook (payment.completed.v0 / payment.expired.v0) in the outbox,
in the same transaction, through the caller (activities/payment.py renders the payload)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Payment
from domain import status as machine


@dataclass(frozen=True)
class PaymentFilter:
    merchant_id: str
    environment: str
    customer_id: str | None = None
    status: str | None = None


async def get(
    session: AsyncSession, merchant_id: str, environment: str, payment_id: str, *, lock: bool = False
) -> Payment | None:
    """The tenant's payment with this id (another tenant's is None); `lock` takes it FOR UPDATE."""
    query = select(Payment).where(
        Payment.id == payment_id, Payment.merchant_id == merchant_id, Payment.environment == environment
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    row: Payment | None = await session.scalar(query)
    return row


async def lock(session: AsyncSession, payment_id: str) -> Payment | None:
    """The payment FOR UPDATE, whoever's it is (activities know the id from their workflow)."""
    query = (
        select(Payment)
        .where(Payment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row: Payment | None = await session.scalar(query)
    return row


async def by_idempotency_key(
    session: AsyncSession, merchant_id: str, environment: str, key: str
) -> Payment | None:
    row: Payment | None = await session.scalar(
        select(Payment).where(
            Payment.merchant_id == merchant_id,
            Payment.environment == environment,
            Payment.idempotency_key == key,
        )
    )
    return row


async def list_payments(
    session: AsyncSession, where: PaymentFilter, *, limit: int, offset: int
) -> tuple[list[Payment], int]:
    """One page of the tenant's payments, newest first, and how many match."""
    conditions = [Payment.merchant_id == where.merchant_id, Payment.environment == where.environment]
    if where.customer_id is not None:
        conditions.append(Payment.customer_id == where.customer_id)
    if where.status is not None:
        conditions.append(Payment.status == where.status)
    total = await session.scalar(select(func.count()).select_from(Payment).where(*conditions))
    rows = await session.scalars(
        select(Payment)
        .where(*conditions)
        .order_by(Payment.created_at.desc(), Payment.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


async def open_payments(
    session: AsyncSession, older_than: datetime, merchant_id: str | None = None
) -> list[Payment]:
    """Payments whose workflow must be running (pending or processing), created before `older_than`: what
    the reconciler checks."""
    query = select(Payment).where(Payment.status.in_(machine.PAYMENT_OPEN), Payment.created_at <= older_than)
    if merchant_id is not None:
        query = query.where(Payment.merchant_id == merchant_id)
    return list(await session.scalars(query.order_by(Payment.id)))


def transition(row: Payment, wanted: str, at: datetime) -> None:
    """Move `row` (locked) to `wanted`, stamping when; IllegalTransition when the machine forbids it."""
    machine.PAYMENT.check(row.status, wanted)
    row.status = wanted
    if wanted == "completed":
        row.completed_at = at
    elif wanted == "expired":
        row.expired_at = at


async def customer_blocker(session: AsyncSession, customer_id: str) -> dict[str, Any] | None:
    """What DELETE /v0/customers/{id} reports while one-off payments name the customer (any status: a payment
    is a record the customer keeps): {"type": "payments", "count": n, "items": [{"id", "status"}]} (at most 10
    items), else None."""
    rows = list(
        await session.execute(
            select(Payment.id, Payment.status)
            .where(Payment.customer_id == customer_id)
            .order_by(Payment.created_at, Payment.id)
        )
    )
    if not rows:
        return None
    return {"type": "payments", "count": len(rows), "items": [{"id": i, "status": s} for i, s in rows[:10]]}
