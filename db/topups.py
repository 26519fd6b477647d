"""Top-up invoices (`POST /v0/customers/{id}/topups`): an invoice of the subscription holding only a wallet
top-up line, ISSUED with a checkout of the sandbox provider, exactly like an issued period invoice. The
subscription's workflow records its payment (record_payment), which credits the wallet (db/funding.py).

Numbered -1, -2, … (Invoice 0 and the period invoices keep 0, 1, 2, …), under the subscription's row lock.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.billing import load_context, write_invoice
from db.funding import topup_charge
from db.models import Invoice, PaymentSession, Subscription
from db.subscriptions import open_checkout
from domain import status
from domain.ids import new_id


def topup_number(subscription_id: str, sequence_number: int) -> str:
    return f"INV-{subscription_id.removeprefix('sub_')[:10].upper()}-T{-sequence_number:03d}"


def _transition(invoice: Invoice, wanted: str, at: datetime) -> None:
    status.INVOICE.check(invoice.status, wanted)
    history = list((invoice.metadata_ or {}).get("transitions", []))
    history.append({"from": invoice.status, "to": wanted, "at": at.isoformat()})
    invoice.metadata_ = {**(invoice.metadata_ or {}), "transitions": history}
    invoice.status = wanted


async def write_topup_invoice(
    session: AsyncSession,
    sub: Subscription,
    amount: Decimal,
    now: datetime,
    expires_at: datetime,
    redirect_urls: dict[str, Any] | None,
) -> Invoice:
    """The ISSUED top-up invoice of `amount` and its checkout; `sub` must be locked FOR UPDATE by the
    caller (it numbers the invoice). Not committed."""
    lowest = await session.scalar(
        select(func.min(Invoice.sequence_number)).where(Invoice.subscription_id == sub.id)
    )
    sequence_number = min(lowest or 0, 0) - 1
    invoice = Invoice(
        id=new_id("invoice"),
        merchant_id=sub.merchant_id,
        environment=sub.environment,
        subscription_id=sub.id,
        customer_id=sub.customer_id,
        sequence_number=sequence_number,
        currency=sub.currency,
        billing_anchor=sub.billing_anchor,
        billing_cadence=sub.billing_cadence,
        period_start=now,
        period_end=now,
        grace_period_end=now,
        status="CALCULATING",
        auto_approve=True,
        is_final=False,
        invoice_number=topup_number(sub.id, sequence_number),
        issued_at=now,
        metadata_={"transitions": [], "walletTopup": True},
    )
    session.add(invoice)
    await session.flush()
    ctx = await load_context(session, sub)
    await write_invoice(session, ctx, invoice, [topup_charge(invoice.id, amount, now, now)], now)
    _transition(invoice, "DRAFT", now)
    _transition(invoice, "ISSUED", now)
    open_checkout(session, sub, invoice, expires_at)
    if redirect_urls is not None:  # the top-up's own, instead of the subscription's
        payment = next(
            o for o in session.new if isinstance(o, PaymentSession) and o.id == invoice.payment_session_id
        )
        payment.redirect_urls = redirect_urls
    return invoice
