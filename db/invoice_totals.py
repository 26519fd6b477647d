"""An invoice's aggregates: live while its period can still change (D11), the stored columns once frozen."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Invoice

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
    """The invoice's aggregates computed now from its lines and the period's meter events, or None when
    they cannot be computed live (then the stored columns are shown).

    Placeholder until the period calculation exists: always None.
    """
    return None


async def current_totals(session: AsyncSession, invoice: Invoice) -> Totals:
    """What the API shows: live for an open invoice when available, the frozen columns otherwise."""
    if invoice.status in LIVE_STATUSES:
        live = await live_totals(session, invoice)
        if live is not None:
            return live
    return stored_totals(invoice)
