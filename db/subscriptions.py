"""A subscription's rows: the API inserts the subscription; Invoice 0, its checkout (D10) and everything
later are written by the subscription's workflow (activities/subscription.py) with the helpers here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.billing import tax_rate
from db.funding import wallet_charges
from db.models import Customer, Invoice, LedgerAccount, PaymentSession, Plan, Subscription
from domain.ids import new_id
from domain.periods import truncate_to_hour


@dataclass(frozen=True)
class NewSubscription:
    merchant_id: str
    environment: str
    customer: Customer
    plan: Plan
    name: str
    started_at: datetime
    ending_at: datetime | None
    auto_charge: bool
    tax_exempt: bool
    minimum_account_balance: Decimal | None
    redirect_urls: dict[str, Any] | None
    session_expiry_minutes: int
    test_clock_id: str | None
    renewal_reminder_enabled: bool | None
    renewal_reminder_days: int | None


def invoice_number(subscription_id: str, sequence_number: int) -> str:
    return f"INV-{subscription_id.removeprefix('sub_')[:10].upper()}-{sequence_number:04d}"


@dataclass(frozen=True)
class ViewRows:
    """What a subscription's representation shows besides its row."""

    invoice0: Invoice | None
    payment: PaymentSession | None
    plan: Plan
    customer: Customer
    tax_rate: Decimal
    wallet: Wallet | None = None  # the customer's wallet in the subscription's currency, once it exists
    wallet_charge: Decimal = Decimal(0)  # Invoice 0's top-up (db/funding.py)


@dataclass(frozen=True)
class Wallet:
    """A customer's wallet in one currency: the main account's id (`walletId`) and balances (nanodollars)."""

    id: str
    currency: str
    balance: int
    reserved: int


async def wallets(
    session: AsyncSession, merchant_id: str, environment: str, customer_id: str, currency: str | None = None
) -> list[Wallet]:
    """The customer's wallets (one per currency with a main account), by currency."""
    query = select(LedgerAccount.currency, LedgerAccount.kind, LedgerAccount.id, LedgerAccount.balance).where(
        LedgerAccount.merchant_id == merchant_id,
        LedgerAccount.environment == environment,
        LedgerAccount.owner_id == customer_id,
        LedgerAccount.kind.in_(("customer_main", "customer_reserved")),
    )
    if currency is not None:
        query = query.where(LedgerAccount.currency == currency)
    accounts = {(c, k): (i, b) for c, k, i, b in (await session.execute(query)).all()}
    return [
        Wallet(account_id, c, balance, accounts.get((c, "customer_reserved"), ("", 0))[1])
        for (c, kind), (account_id, balance) in sorted(accounts.items())
        if kind == "customer_main"
    ]


async def wallets_of(
    session: AsyncSession, merchant_id: str, environment: str, customer_ids: list[str]
) -> dict[str, list[Wallet]]:
    """The wallets of many customers (a /v0/customers page) in one query, by customer and currency."""
    found: dict[str, list[Wallet]] = {c: [] for c in customer_ids}
    if not customer_ids:
        return found
    rows = await session.execute(
        select(
            LedgerAccount.owner_id,
            LedgerAccount.currency,
            LedgerAccount.kind,
            LedgerAccount.id,
            LedgerAccount.balance,
        ).where(
            LedgerAccount.merchant_id == merchant_id,
            LedgerAccount.environment == environment,
            LedgerAccount.owner_id.in_(customer_ids),
            LedgerAccount.kind.in_(("customer_main", "customer_reserved")),
        )
    )
    accounts = {(o, c, k): (i, b) for o, c, k, i, b in rows.all()}
    for (owner, currency, kind), (account_id, balance) in sorted(accounts.items()):
        if kind == "customer_main":
            reserved = accounts.get((owner, currency, "customer_reserved"), ("", 0))[1]
            found[owner].append(Wallet(account_id, currency, balance, reserved))
    return found


async def view_rows(session: AsyncSession, sub: Subscription) -> ViewRows:
    invoice0 = await session.scalar(
        select(Invoice).where(Invoice.subscription_id == sub.id, Invoice.sequence_number == 0)
    )
    payment = (
        await session.get(PaymentSession, invoice0.payment_session_id)
        if invoice0 is not None and invoice0.payment_session_id
        else None
    )
    customer = await session.get_one(Customer, sub.customer_id)
    plan = await session.get_one(Plan, sub.plan_id)
    found = await wallets(session, sub.merchant_id, sub.environment, sub.customer_id, sub.currency)
    charge = Decimal(0)
    if invoice0 is not None and sub.minimum_account_balance:
        charge = (await wallet_charges(session, [invoice0.id])).get(invoice0.id, Decimal(0))
    return ViewRows(
        invoice0,
        payment,
        plan,
        customer,
        tax_rate(sub, plan, customer, None, None),
        wallet=found[0] if found else None,
        wallet_charge=charge,
    )


def open_checkout(session: AsyncSession, sub: Subscription, invoice: Invoice, expires_at: datetime) -> None:
    """The sandbox provider's checkout for an issued invoice's grand total, linked from the invoice."""
    payment = PaymentSession(
        id=new_id("payment_session"),
        merchant_id=sub.merchant_id,
        environment=sub.environment,
        subscription_id=sub.id,
        invoice_id=invoice.id,
        status="open",
        amount=invoice.grand_total,
        currency=invoice.currency,
        expires_at=expires_at,
        redirect_urls=sub.redirect_urls,
    )
    session.add(payment)
    invoice.payment_session_id = payment.id


async def insert(session: AsyncSession, new: NewSubscription) -> Subscription:
    """Insert the subscription row (pending_payment until its workflow writes Invoice 0); not committed.
    Flushed, so a concurrent create for the same customer and plan fails here on the live index."""
    sub = Subscription(
        id=new_id("subscription"),
        merchant_id=new.merchant_id,
        environment=new.environment,
        customer_id=new.customer.id,
        plan_id=new.plan.id,
        name=new.name,
        status="pending_payment",
        started_at=new.started_at,
        ending_at=new.ending_at,
        billing_anchor=truncate_to_hour(new.started_at),
        billing_cadence=new.plan.billing_cadence,
        currency=new.plan.currency,
        auto_charge=new.auto_charge,
        tax_exempt=new.tax_exempt,
        minimum_account_balance=new.minimum_account_balance,
        redirect_urls=new.redirect_urls,
        session_expiry_minutes=new.session_expiry_minutes,
        test_clock_id=new.test_clock_id,
        renewal_reminder_enabled=new.renewal_reminder_enabled,
        renewal_reminder_days=new.renewal_reminder_days,
        current_period=0,
    )
    session.add(sub)
    await session.flush()
    return sub
