"""PaymentWorkflow's side effects: loading the payment, recording the provider's outcome, expiring it.

Idempotent by business key: every write locks the payment row (FOR UPDATE) and checks its status against
domain.status.PAYMENT first, so a duplicate signal, a retried activity or a completion racing the expiry
changes the row (and writes its webhook) at most once. Webhooks go through the outbox in the same
transaction: payment.completed.v0 and payment.expired.v0, whose `data` is GET /v0/payments/{id}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from api.schemas.one_off_payments import PaymentOut
from db import outbox
from db import payments as rows
from db.models import Payment
from db.session import session_factory
from domain import status as machine
from integrations.payments.base import PaymentProvider, PaymentStatus, ProviderError, ProviderUnavailable
from workflows.payment_messages import (
    CheckProvider,
    ExpirePayment,
    LoadPayment,
    Outcome,
    PaymentActivityDefs,
    PaymentState,
    ProviderCheck,
    Recorded,
    RecordOutcome,
)

# The provider a stored payment was made with, for its environment (partial(integrations.payments.
# provider_named, settings)); None: every payment is the sandbox's, which has nothing to ask.
ProviderNamed = Callable[[str, str], PaymentProvider]
# What the provider's status means for the payment (what the reconcile signals, as a webhook would).
OUTCOMES: dict[PaymentStatus, Outcome] = {
    PaymentStatus.SUCCEEDED: "completed",
    PaymentStatus.PROCESSING: "processing",
    PaymentStatus.FAILED: "declined",
}


def _not_found(payment_id: str) -> ApplicationError:
    return ApplicationError(f"payment {payment_id} not found", type="NotFound", non_retryable=True)


def payment_data(row: Payment) -> dict[str, Any]:
    """GET /v0/payments/{id} of the payment as this transaction leaves it (the webhook's `data`)."""
    return PaymentOut.of(row).model_dump(mode="json", by_alias=True)


class PaymentActivities(PaymentActivityDefs):
    def __init__(self, engine: AsyncEngine, provider_named: ProviderNamed | None = None) -> None:
        self.sessions = session_factory(engine)
        self.provider_named = provider_named

    async def _locked(self, session: AsyncSession, payment_id: str) -> Payment:
        row = await rows.lock(session, payment_id)
        if row is None:
            raise _not_found(payment_id)
        return row

    @activity.defn
    async def load_payment(self, request: LoadPayment) -> PaymentState:
        async with self.sessions() as session:
            row = await session.get(Payment, request.payment_id)
            if row is None:
                raise _not_found(request.payment_id)
            return PaymentState(
                payment_id=row.id,
                merchant_id=row.merchant_id,
                environment=row.environment,
                customer_id=row.customer_id,
                expires_at=row.expires_at,
                status=row.status,
                provider=row.provider,
            )

    @activity.defn
    async def record_payment_outcome(self, request: RecordOutcome) -> Recorded:
        """completed: an open payment is completed (payment.completed.v0); declined: an open one is pending
        again, payable until it expires; processing: a pending one waits for the provider. Anything else
        (a duplicate, an outcome after the payment settled) reports the status and changes nothing."""
        async with self.sessions() as session:
            row = await self._locked(session, request.payment_id)
            if row.status not in machine.PAYMENT_OPEN:
                activity.logger.info("payment %s is %s: %s ignored", row.id, row.status, request.outcome)
                return Recorded(status=row.status)
            if request.outcome == "processing" and row.status == "processing":
                return Recorded(status=row.status)
            if request.provider_reference:
                row.provider_reference = request.provider_reference
            if request.outcome == "completed":
                rows.transition(row, "completed", request.at)
                outbox.record(
                    session, row.merchant_id, row.environment, "payment.completed.v0", payment_data(row)
                )
            elif request.outcome == "declined":
                if row.status == "processing":
                    rows.transition(row, "pending", request.at)
                row.declined_at = request.at
            else:
                rows.transition(row, "processing", request.at)
            status = row.status
            await session.commit()
            activity.logger.info(
                "payment %s: %s recorded, now %s", request.payment_id, request.outcome, status
            )
            return Recorded(status=status, changed=True)

    @activity.defn
    async def expire_payment(self, request: ExpirePayment) -> Recorded:
        """Expire the payment (stamped at expiresAt, payment.expired.v0) when `at` has reached expiresAt and
        it is still open; otherwise report its status."""
        async with self.sessions() as session:
            row = await self._locked(session, request.payment_id)
            if row.status not in machine.PAYMENT_OPEN or request.at < row.expires_at:
                return Recorded(status=row.status)
            rows.transition(row, "expired", row.expires_at)
            outbox.record(session, row.merchant_id, row.environment, "payment.expired.v0", payment_data(row))
            await session.commit()
            activity.logger.info("payment %s expired unpaid", request.payment_id)
            return Recorded(status="expired", changed=True)

    @activity.defn
    async def check_payment_provider(self, request: CheckProvider) -> ProviderCheck:
        """What the provider says of an open payment (the lost-webhook reconcile)."""
        async with self.sessions() as session:
            row = await session.get(Payment, request.payment_id)
            if row is None:
                raise _not_found(request.payment_id)
        if (
            self.provider_named is None
            or row.provider == "sandbox"
            or row.provider_reference is None
            or row.status not in machine.PAYMENT_OPEN
        ):
            return ProviderCheck()
        provider = self.provider_named(row.provider, row.environment)
        try:
            state = await provider.retrieve(row.provider_reference)
        except ProviderUnavailable as exc:
            raise ApplicationError(f"payment {row.id}: {exc}", type="ProviderUnavailable") from None
        except ProviderError as exc:
            activity.logger.warning("payment %s: the provider refused the lookup: %s", row.id, exc)
            return ProviderCheck()
        return ProviderCheck(outcome=OUTCOMES.get(state.status))

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.load_payment,
            self.record_payment_outcome,
            self.expire_payment,
            self.check_payment_provider,
        ]
