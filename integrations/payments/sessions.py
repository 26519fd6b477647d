"""Invoice payment sessions (`payment_sessions`, `ps_…`) at their provider: the glue the subscription
workflow's activities and the hosted checkout page share.

The one module of integrations/ that reads and writes rows, because two callers in different layers need
exactly the same steps: the activities that issue an invoice (Invoice 0, period invoices) open its payment
with the provider right after the session's commit, and the hosted page opens it for a session nobody
opened yet (a top-up invoice written by the API, a session issued while Stripe was unreachable).

`open_payment` never holds a row lock across a provider call: it reads, commits nothing, calls the
provider (idempotent by `<ps id>:create`), then writes the reference in a short transaction of its own that
keeps the first reference if two callers raced (the same PaymentIntent either way: same idempotency key).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Customer, Invoice, Organization, PaymentSession, ProviderCustomer, Subscription
from domain.status import INVOICE_PAYABLE, PAYMENT_SESSION_PAYABLE
from integrations.payments import SandboxProvider, provider_name_for, provider_named
from integrations.payments.base import (
    PaymentOwner,
    PaymentProvider,
    PaymentRequest,
    PaymentState,
    PaymentStatus,
    ProviderError,
    ProviderName,
)

if TYPE_CHECKING:
    from settings import Settings

log = logging.getLogger(__name__)

# After a day unpaid, an open PaymentIntent is looked at no more than hourly (an unpaid period invoice's
# checkout stays open 30 days).
SLOW_AFTER = timedelta(days=1)
SLOW_INTERVAL = timedelta(hours=1)


class ProviderChoice:
    """What the callers need from the settings: which provider a new payment uses, the provider a stored
    one was made with, the reconcile interval. Without settings every payment goes through the sandbox
    (what build_worker's callers that pass none get: exactly the behaviour before providers)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings
        self.reconcile_interval = (
            settings.payment_reconcile_interval if settings is not None else timedelta(minutes=10)
        )

    @property
    def only_sandbox(self) -> bool:
        """No merchant can be on another provider: callers skip every lookup (the sandbox's hot paths)."""
        settings = self.settings
        return settings is None or (
            settings.payment_provider == "sandbox"
            and settings.live_provider == "sandbox"
            and "stripe" not in settings.payment_provider_overrides.values()
        )

    def name_for(self, merchant_id: str, environment: str) -> ProviderName:
        if self.settings is None:
            return "sandbox"
        return provider_name_for(self.settings, merchant_id, environment)

    def named(self, name: str, environment: str) -> PaymentProvider:
        if self.settings is None or name == "sandbox":
            return SandboxProvider()
        return provider_named(self.settings, name, environment)

    def check_in(self, now: datetime, opened_at: datetime) -> timedelta:
        """How soon to ask the provider again about a payment opened at `opened_at`."""
        interval = self.reconcile_interval
        if now - opened_at >= SLOW_AFTER:
            interval = max(interval, SLOW_INTERVAL)
        return interval


@dataclass(frozen=True)
class Opened:
    provider: ProviderName
    reference: str | None  # None: the sandbox (nothing at a provider) or the provider failed (see error)
    error: str | None = None


def page_url(base_url: str, payment_session_id: str) -> str:
    return f"{base_url.rstrip('/')}/checkout/{payment_session_id}"


async def _request(
    session: AsyncSession, payment: PaymentSession, base_url: str, provider: ProviderName
) -> PaymentRequest:
    invoice = await session.get_one(Invoice, payment.invoice_id)
    sub = await session.get_one(Subscription, payment.subscription_id)
    customer = await session.get_one(Customer, sub.customer_id)
    consumer = await session.get(Organization, customer.consumer_id)
    merchant = await session.get(Organization, payment.merchant_id)
    known = await session.scalar(
        select(ProviderCustomer.provider_customer).where(
            ProviderCustomer.merchant_id == payment.merchant_id,
            ProviderCustomer.environment == payment.environment,
            ProviderCustomer.customer_id == customer.id,
            ProviderCustomer.provider == provider,
        )
    )
    urls = payment.redirect_urls or {}
    number = invoice.invoice_number or invoice.id
    return PaymentRequest(
        our_id=payment.id,
        merchant_id=payment.merchant_id,
        environment=payment.environment,
        amount=payment.amount,
        currency=payment.currency,
        owner=PaymentOwner(kind="subscription", id=sub.id),
        description=f"{merchant.name if merchant else 'Accrue'}: invoice {number}",
        page_url=page_url(base_url, payment.id),
        invoice_id=invoice.id,
        customer_id=customer.id,
        customer_email=consumer.email if consumer else None,
        customer_name=consumer.name if consumer else None,
        provider_customer=known,
        # autoCharge keeps Invoice 0's card for the period invoices' off-session charges.
        save_payment_method=sub.auto_charge and invoice.sequence_number == 0,
        success_url=urls.get("onSuccess"),
        failure_url=urls.get("onFailure"),
    )


async def open_payment(
    sessions: async_sessionmaker[AsyncSession], choice: ProviderChoice, payment_session_id: str, base_url: str
) -> Opened:
    """The session's payment at the provider its merchant and environment use, created once. A sandbox
    session is left exactly as it was (its page is the sandbox checkout). Provider errors are returned,
    not raised: the session stays payable and the page or the owner's timer opens it later."""
    async with sessions() as session:
        payment = await session.get(PaymentSession, payment_session_id)
        if payment is None:
            return Opened("sandbox", None, "no such payment session")
        if payment.provider_reference is not None:
            return Opened(payment.provider, payment.provider_reference)  # type: ignore[arg-type]
        name = choice.name_for(payment.merchant_id, payment.environment)
        if name == "sandbox" or payment.status not in PAYMENT_SESSION_PAYABLE:
            return Opened(name, None)
        request = await _request(session, payment, base_url, name)
        environment = payment.environment
    provider = choice.named(name, environment)
    try:
        created = await provider.create_payment(request)
    except ProviderError as exc:
        log.warning("payment session %s: the %s provider did not open it: %s", payment_session_id, name, exc)
        return Opened(name, None, str(exc))
    async with sessions() as session:
        await session.execute(
            update(PaymentSession)
            .where(PaymentSession.id == payment_session_id, PaymentSession.provider_reference.is_(None))
            .values(provider=name, provider_reference=created.reference)
        )
        if created.provider_customer and request.customer_id:
            await remember_customer(
                session,
                request.merchant_id,
                request.environment,
                request.customer_id,
                name,
                created.provider_customer,
            )
        await session.commit()
        stored = await session.get(PaymentSession, payment_session_id, populate_existing=True)
        reference = stored.provider_reference if stored is not None else created.reference
    return Opened(name, reference)


async def remember_customer(
    session: AsyncSession,
    merchant_id: str,
    environment: str,
    customer_id: str,
    provider: str,
    provider_customer: str,
    payment_method: str | None = None,
) -> None:
    """Upsert the customer's provider customer (and, when given, the saved payment method). No commit."""
    values = {
        "merchant_id": merchant_id,
        "environment": environment,
        "customer_id": customer_id,
        "provider": provider,
        "provider_customer": provider_customer,
    }
    changes: dict[str, object] = {"provider_customer": provider_customer}
    if payment_method is not None:
        values["payment_method"] = payment_method
        changes["payment_method"] = payment_method
    statement = insert(ProviderCustomer).values(**values)
    await session.execute(
        statement.on_conflict_do_update(constraint="uq_provider_customers_customer", set_=changes)
    )


@dataclass(frozen=True)
class Reconciled:
    payment_session_id: str
    invoice_id: str
    succeeded: bool  # False: the last attempt was declined
    payment_method: str | None = None  # the provider's saved method (autoCharge keeps it)
    provider_customer: str | None = None


async def reconcile_subscription(
    sessions: async_sessionmaker[AsyncSession],
    choice: ProviderChoice,
    subscription_id: str,
    base_url: str,
    now: datetime,
) -> tuple[list[Reconciled], timedelta | None]:
    """Ask the provider about every payable session of the subscription at a provider: the outcomes to
    record (a success, or a decline not recorded yet), and how soon to look again (None: nothing left
    open at a provider). A session whose payment was never opened (the provider failed) is opened now."""
    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(PaymentSession)
                .join(Invoice, Invoice.id == PaymentSession.invoice_id)
                .where(
                    PaymentSession.subscription_id == subscription_id,
                    PaymentSession.status.in_(PAYMENT_SESSION_PAYABLE),
                    Invoice.status.in_(INVOICE_PAYABLE),
                    PaymentSession.expires_at > now,
                )
                .order_by(PaymentSession.created_at, PaymentSession.id)
            )
        )
    outcomes: list[Reconciled] = []
    next_check: timedelta | None = None
    for row in rows:
        reference, provider_name = row.provider_reference, row.provider
        if reference is None:
            opened = await open_payment(sessions, choice, row.id, base_url)
            if opened.provider == "sandbox":
                continue
            if opened.reference is None:  # the provider failed again: try again next time
                next_check = _earliest(next_check, choice.check_in(now, row.created_at))
                continue
            reference, provider_name = opened.reference, opened.provider
        if provider_name == "sandbox":
            continue
        try:
            state: PaymentState = await choice.named(provider_name, row.environment).retrieve(reference)
        except ProviderError as exc:
            log.warning(
                "payment session %s: could not ask %s about %s: %s", row.id, provider_name, reference, exc
            )
            next_check = _earliest(next_check, choice.check_in(now, row.created_at))
            continue
        if state.status == PaymentStatus.SUCCEEDED:
            outcomes.append(
                Reconciled(row.id, row.invoice_id, True, state.payment_method, state.provider_customer)
            )
        elif state.status == PaymentStatus.CANCELED:
            continue
        else:
            if state.status == PaymentStatus.FAILED and row.status == "open":
                outcomes.append(Reconciled(row.id, row.invoice_id, succeeded=False))
            next_check = _earliest(next_check, choice.check_in(now, row.created_at))
    return outcomes, next_check


def _earliest(a: timedelta | None, b: timedelta | None) -> timedelta | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
