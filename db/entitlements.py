"""v0 entitlements = reservations of wallet funds (behavior §7.1, issue 10 item 4).

An entitlement reserves `reserved_amount` nanodollars from the customer's main wallet into its reserved
account (ledger key `reserve:<com_id>`, posted in the same database transaction as the row). Usage with an
`entitlementId` consumes it (`consume`): the remaining balance goes down, the used count up, and the caller
charges the consumed amount from the reserved account. What is left is given back to the main wallet
(`release_remainder`, ledger key `release:<com_id>`) when the uses run out, the balance reaches zero, or at
`expires_at` (the EntitlementWorkflow's durable timer).

Lock order (wallets.md): the entitlement row (SELECT … FOR UPDATE) first, then the ledger accounts (db.ledger
locks them in id order). Nothing here commits: the caller commits together with its own writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db import ledger as records
from db.models import Entitlement
from domain import ledger
from domain.ids import new_id
from domain.money import format_amount, from_nanos

ACTIVE = "active"
FINAL_STATUSES = frozenset({"exhausted", "expired", "released"})


class EntitlementUnavailable(Exception):
    """The entitlement cannot pay for this usage. `str()` is the person-readable message for a 4xx;
    `reason` is one of not_found, wrong_customer, exhausted, expired, released, insufficient."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _show(nanos: int) -> str:
    return format_amount(from_nanos(nanos).normalize()) if nanos else "0"


async def lock(
    session: AsyncSession, merchant_id: str, environment: str, entitlement_id: str
) -> Entitlement | None:
    """The entitlement row of this tenant, locked FOR UPDATE (take it before any ledger account)."""
    return await session.scalar(
        select(Entitlement)
        .where(
            Entitlement.id == entitlement_id,
            Entitlement.merchant_id == merchant_id,
            Entitlement.environment == environment,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def is_active(entitlement: Entitlement, now: datetime) -> bool:
    """Usable now: status active, not expired, uses and balance left."""
    return (
        entitlement.status == ACTIVE
        and now < entitlement.expires_at
        and entitlement.used_count < entitlement.max_uses
        and entitlement.remaining_balance > 0
    )


async def create(
    session: AsyncSession,
    *,
    merchant_id: str,
    environment: str,
    customer_id: str,
    subscription_id: str,
    plan_id: str,
    product_id: str,
    currency: str,
    billable_metrics: Sequence[dict[str, Any]],
    amount: int,
    max_uses: int,
    expires_at: datetime,
    test_clock_id: str | None,
    entitlement_id: str | None = None,
    created_at: datetime | None = None,
) -> Entitlement:
    """Insert an active entitlement and reserve `amount` from the customer's wallet in the same database
    transaction. Raises domain.ledger.InsufficientFunds (nothing reserved; the caller rolls back) when the
    wallet cannot pay. A zero amount reserves nothing (the entitlement is born without a balance)."""
    entitlement_id = entitlement_id or new_id("entitlement")
    row = Entitlement(
        id=entitlement_id,
        merchant_id=merchant_id,
        environment=environment,
        customer_id=customer_id,
        subscription_id=subscription_id,
        plan_id=plan_id,
        product_id=product_id,
        currency=currency,
        billable_metrics=list(billable_metrics),
        reserved_amount=amount,
        remaining_balance=amount,
        used_count=0,
        max_uses=max_uses,
        region="global",
        status=ACTIVE,
        expires_at=expires_at,
        test_clock_id=test_clock_id,
    )
    if created_at is not None:
        row.created_at = created_at
    session.add(row)
    await session.flush()  # the row first (lock order: entitlement, then ledger accounts)
    if amount > 0:
        posted = await records.post(
            session,
            merchant_id,
            environment,
            ledger.reserve(customer_id, currency, amount),
            idempotency_key=f"reserve:{entitlement_id}",
            reference_id=entitlement_id,
            description=f"reservation of entitlement {entitlement_id}",
        )
        row.reserve_transaction_id = posted.transaction_id
    await session.flush()
    return row


async def consume(
    session: AsyncSession,
    merchant_id: str,
    environment: str,
    entitlement_id: str,
    customer_id: str,
    amount: int,
    now: datetime,
) -> Entitlement:
    """Consume `amount` nanodollars (≥ 0) and one use of the entitlement.

    Locks the row, checks it belongs to `customer_id`, is active, not expired at `now`, has a use left and at
    least `amount` remaining; decrements `remaining_balance`, increments `used_count`. When the uses run out
    or the (non-zero) reservation is used up, the remainder is released in the same transaction
    (`release_remainder`) and the status becomes 'exhausted'.
    Raises EntitlementUnavailable (nothing changed) otherwise.

    The CALLER posts the usage charge (domain.ledger.usage(..., from_reserved=True)) for `amount` in the same
    transaction, after this call (the row lock comes before the ledger accounts). Does not commit.
    """
    if type(amount) is not int or amount < 0:
        raise ValueError("an entitlement is consumed by a non-negative integer of nanodollars")
    row = await lock(session, merchant_id, environment, entitlement_id)
    if row is None:
        raise EntitlementUnavailable("not_found", f"entitlement {entitlement_id} not found")
    if row.customer_id != customer_id:
        raise EntitlementUnavailable(
            "wrong_customer", f"entitlement {entitlement_id} does not belong to customer {customer_id}"
        )
    if row.status != ACTIVE:
        raise EntitlementUnavailable(row.status, f"entitlement {entitlement_id} is {row.status}")
    if now >= row.expires_at:
        raise EntitlementUnavailable(
            "expired", f"entitlement {entitlement_id} expired at {row.expires_at.isoformat()}"
        )
    if row.used_count >= row.max_uses:
        raise EntitlementUnavailable(
            "exhausted", f"entitlement {entitlement_id} has no uses left ({row.used_count} of {row.max_uses})"
        )
    if amount > row.remaining_balance:
        raise EntitlementUnavailable(
            "insufficient",
            f"entitlement {entitlement_id} has {_show(row.remaining_balance)} {row.currency} left but this "
            f"usage costs {_show(amount)} {row.currency} (short by {_show(amount - row.remaining_balance)} "
            f"{row.currency})",
        )
    row.remaining_balance -= amount
    row.used_count += 1
    if row.used_count >= row.max_uses or (row.remaining_balance == 0 and row.reserved_amount > 0):
        await release_remainder(session, row, now, "exhausted")
    await session.flush()
    return row


async def release_remainder(
    session: AsyncSession, entitlement: Entitlement, now: datetime, status: str
) -> None:
    """Give the entitlement's remaining balance back to the customer's main wallet and end it with `status`
    (exhausted, expired or released). Idempotent: an entitlement that is no longer active is left as it is,
    and the ledger posts `release:<com_id>` at most once. The caller holds the row lock (`lock`, or the
    row `consume` locked). Does not commit."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"an entitlement ends as one of {sorted(FINAL_STATUSES)}, not {status!r}")
    if entitlement.status != ACTIVE:
        return
    remainder = entitlement.remaining_balance
    if remainder > 0:
        posted = await records.post(
            session,
            entitlement.merchant_id,
            entitlement.environment,
            ledger.release(entitlement.customer_id, entitlement.currency, remainder),
            idempotency_key=f"release:{entitlement.id}",
            reference_id=entitlement.id,
            description=f"unused remainder of entitlement {entitlement.id} ({status})",
        )
        entitlement.release_transaction_id = posted.transaction_id
    entitlement.remaining_balance = 0
    entitlement.status = status
    entitlement.released_at = now
    await session.flush()
