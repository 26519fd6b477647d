"""Creating a subscription's records: the row, Invoice 0 with the first period's in-advance charges, and the
checkout session that gates activation (D10). Everything later is written by the subscription's workflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db import outbox
from db.billing import fee_charges, load_context, write_invoice
from db.models import Customer, Invoice, PaymentSession, Plan, Subscription
from domain.durations import parse_duration
from domain.ids import new_id
from domain.periods import period_bounds, truncate_to_hour


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


def snapshot(sub: Subscription) -> dict[str, Any]:
    """What the outbox records of a subscription change (the webhook renders the full resource)."""
    return {"object": "subscription", "id": sub.id, "status": sub.status, "customerId": sub.customer_id}


def invoice_snapshot(invoice: Invoice) -> dict[str, Any]:
    return {
        "object": "invoice",
        "id": invoice.id,
        "subscriptionId": invoice.subscription_id,
        "sequenceNumber": invoice.sequence_number,
        "status": invoice.status,
        "grandTotal": str(invoice.grand_total),
    }


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


async def create(session: AsyncSession, new: NewSubscription, now: datetime) -> Subscription:
    """Insert the subscription, Invoice 0 and (when something is due) its payment session; not committed."""
    anchor = truncate_to_hour(new.started_at)
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
        billing_anchor=anchor,
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

    start, end = period_bounds(anchor, parse_duration(sub.billing_cadence), 0)
    invoice0 = Invoice(
        id=new_id("invoice"),
        merchant_id=sub.merchant_id,
        environment=sub.environment,
        subscription_id=sub.id,
        customer_id=sub.customer_id,
        sequence_number=0,
        currency=sub.currency,
        billing_anchor=anchor,
        billing_cadence=sub.billing_cadence,
        period_start=start,
        period_end=end,
        grace_period_end=start,
        status="CALCULATING",
        auto_approve=True,
        metadata_={"transitions": []},
    )
    session.add(invoice0)
    await session.flush()
    ctx = await load_context(session, sub, new.plan, new.customer)
    totals = await write_invoice(
        session, ctx, invoice0, fee_charges(ctx, "in_advance", start, end, first_period=True), now
    )
    invoice0.invoice_number = invoice_number(sub.id, 0)
    invoice0.issued_at = now
    outbox.record(session, sub.merchant_id, sub.environment, "subscription.created.v0", snapshot(sub))
    if totals.grand_total == 0:
        invoice0.status, invoice0.paid_at = "PAID", now
        sub.status, sub.activated_at = "active", now
        outbox.record(
            session, sub.merchant_id, sub.environment, "invoice.paid.v0", invoice_snapshot(invoice0)
        )
    else:
        invoice0.status = "ISSUED"
        open_checkout(session, sub, invoice0, now + timedelta(minutes=sub.session_expiry_minutes))
        outbox.record(
            session, sub.merchant_id, sub.environment, "invoice.issued.v0", invoice_snapshot(invoice0)
        )
    return sub
