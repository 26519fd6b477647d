"""EntitlementWorkflow's side effects: loading the entitlement and releasing its remainder at expiry.

Idempotent by business key: the release is `release:<com_id>` in the ledger and happens only while the row
(locked FOR UPDATE, before any ledger account) is still active, so a retried or repeated activity, or one
racing a usage event that exhausts the reservation, gives nothing back twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import entitlements
from db.models import Entitlement, TestClock
from db.session import session_factory
from workflows.entitlement_messages import (
    EntitlementActivityDefs,
    EntitlementState,
    Expired,
    ExpireEntitlement,
    LoadEntitlement,
)


def _not_found(entitlement_id: str) -> ApplicationError:
    return ApplicationError(f"entitlement {entitlement_id} not found", type="NotFound", non_retryable=True)


class EntitlementActivities(EntitlementActivityDefs):
    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = session_factory(engine)

    @activity.defn
    async def load_entitlement(self, request: LoadEntitlement) -> EntitlementState:
        async with self.sessions() as session:
            row = await session.get(Entitlement, request.entitlement_id)
            if row is None:
                raise _not_found(request.entitlement_id)
            clock_now = None
            if row.test_clock_id is not None:
                clock = await session.get(TestClock, row.test_clock_id)
                clock_now = clock.current_time if clock is not None else None
            return EntitlementState(
                entitlement_id=row.id,
                merchant_id=row.merchant_id,
                environment=row.environment,
                customer_id=row.customer_id,
                subscription_id=row.subscription_id,
                expires_at=row.expires_at,
                status=row.status,
                test_clock_id=row.test_clock_id,
                clock_now=clock_now,
            )

    @activity.defn
    async def expire_entitlement(self, request: ExpireEntitlement) -> Expired:
        """Release the remainder (status expired, stamped at expiresAt) when `at` has reached expiresAt and
        the entitlement is still active; otherwise report its status and release nothing."""
        async with self.sessions() as session:
            row = await entitlements.lock(
                session, request.merchant_id, request.environment, request.entitlement_id
            )
            if row is None:
                raise _not_found(request.entitlement_id)
            if row.status != entitlements.ACTIVE or request.at < row.expires_at:
                return Expired(status=row.status, released_at=row.released_at)
            remainder = row.remaining_balance
            await entitlements.release_remainder(session, row, row.expires_at, "expired")
            status, released_at = row.status, row.released_at
            await session.commit()
            activity.logger.info("entitlement %s expired: released %d nanodollars", row.id, remainder)
            return Expired(status=status, released=remainder, released_at=released_at)

    def all(self) -> list[Callable[..., Any]]:
        return [self.load_entitlement, self.expire_entitlement]
