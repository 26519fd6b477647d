"""Wallet top-ups on invoices: the line that asks for one, and the ledger credit when its invoice is paid.

A top-up rides on an invoice of the subscription: Invoice 0 (`minimumAccountBalance` / `prefundAmount`,
shown as `payment.breakdown.walletCharge`) or a top-up invoice of its own (`POST /v0/customers/{id}/topups`,
negative sequence numbers -1, -2, …). Either way it is one `fee` line named "Wallet top-up", untaxed,
without a price, whose idempotency key is `topup:<invoice id>`, so the invoice's totals stay sums of its
lines. When the invoice is paid, `credit_topup` posts the funding transaction (external funding → the
customer's main wallet) with the same key, in the caller's transaction: the PAID write and the credit
commit together, and a repeated payment signal credits nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import ledger as ledger_db
from db.billing import Charge, among
from db.models import Invoice, LedgerAccount, LineItem
from domain import ledger
from domain.funding import TOPUP_DISPLAY_NAME
from domain.money import to_nanos


def topup_key(invoice_id: str) -> str:
    """The idempotency key of an invoice's top-up line and of the ledger credit it becomes."""
    return f"topup:{invoice_id}"


def topup_charge(invoice_id: str, amount: Decimal, start: datetime, end: datetime) -> Charge:
    """The charge write_invoice turns into the top-up line (last on the invoice)."""
    return Charge(
        kind="fee",
        price=None,
        display_name=TOPUP_DISPLAY_NAME,
        quantity=Decimal(1),
        unit_price=amount,
        amount=amount,
        period_start=start,
        period_end=end,
        payment_term="in_advance",
        key=topup_key(invoice_id),
        taxable=False,
    )


async def wallet_balance(
    session: AsyncSession, merchant_id: str, environment: str, customer_id: str, currency: str
) -> int:
    """The customer's main wallet balance in `currency`, in nanodollars (0 before it exists)."""
    balances = await ledger_db.balances(session, merchant_id, environment, customer_id, currency)
    return balances.get((currency, "customer_main"), 0)


async def wallet_charges(session: AsyncSession, invoice_ids: Iterable[str]) -> dict[str, Decimal]:
    """Each invoice's wallet top-up (its top-up line's total); invoices without one are left out."""
    ids = list(invoice_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(LineItem.invoice_id, func.sum(LineItem.total))
        .where(
            among(LineItem.invoice_id, ids),
            LineItem.type == "fee",  # a manual line's key is the merchant's: only generated lines count
            LineItem.idempotency_key.like("topup:%"),
        )
        .group_by(LineItem.invoice_id)
    )
    return {invoice_id: total for invoice_id, total in rows.all() if invoice_id is not None}


async def credit_topup(session: AsyncSession, invoice: Invoice) -> ledger_db.Posted | None:
    """Credit the paid `invoice`'s top-up to the customer's wallet, once (key `topup:<invoice id>`); None
    when the invoice has no top-up. Does not commit."""
    amount = (await wallet_charges(session, [invoice.id])).get(invoice.id)
    if amount is None or amount <= 0:
        return None
    transaction = ledger.funding(invoice.merchant_id, invoice.customer_id, invoice.currency, to_nanos(amount))
    return await ledger_db.post(
        session,
        invoice.merchant_id,
        invoice.environment,
        transaction,
        idempotency_key=topup_key(invoice.id),
        reference_id=invoice.id,
        description=f"{TOPUP_DISPLAY_NAME} paid with invoice {invoice.invoice_number or invoice.id}",
    )


async def wallet_id(
    session: AsyncSession, merchant_id: str, environment: str, customer_id: str, currency: str
) -> str | None:
    """The id (`acc_…`) of the customer's main wallet in `currency`, once it exists."""
    return await session.scalar(
        select(LedgerAccount.id).where(
            LedgerAccount.merchant_id == merchant_id,
            LedgerAccount.environment == environment,
            LedgerAccount.currency == currency,
            LedgerAccount.kind == "customer_main",
            LedgerAccount.owner_id == customer_id,
        )
    )
