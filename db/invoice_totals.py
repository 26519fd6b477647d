"""An invoice's aggregates: live while its period can still change (D11), the stored columns once frozen."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from db.billing import load_context, manual_lines, period_charges, price_lines
from db.models import Invoice, Subscription

# Usage and manual lines can still land on these; from CALCULATING on the stored columns are final.
LIVE_STATUSES = frozenset({"ACTIVE", "CLOSING", "CLOSED"})


@dataclass(frozen=True)
class Totals:
    subtotal: Decimal
    total_tax: Decimal
    grand_total: Decimal
    item_count: int


def stored_totals(invoice: Invoice) -> Totals:
    return Totals(invoice.subtotal, invoice.total_tax, invoice.grand_total, invoice.item_count)


async def live_totals(session: AsyncSession, invoice: Invoice) -> Totals | None:
    """The invoice's aggregates computed now, as the period calculation would, from the meter events and
    manual lines so far; nothing is written. None for Invoice 0, which is never open."""
    if invoice.sequence_number == 0:
        return None
    subscription = await session.get_one(Subscription, invoice.subscription_id)
    ctx = await load_context(session, subscription)
    charges = await period_charges(session, ctx, invoice)
    totals = price_lines(ctx, invoice, charges, await manual_lines(session, invoice))
    return Totals(totals.subtotal, totals.total_tax, totals.grand_total, len(totals.lines))


async def current_totals(session: AsyncSession, invoice: Invoice) -> Totals:
    """What the API shows: live for an open invoice when available, the frozen columns otherwise."""
    if invoice.status in LIVE_STATUSES:
        live = await live_totals(session, invoice)
        if live is not None:
            return live
    return stored_totals(invoice)
