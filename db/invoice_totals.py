"""An invoice's aggregates and lines: live while its period can still change (D11), stored once frozen.

A live invoice is priced exactly as its period calculation will price it (db.billing's period_charges and
price_lines), from the meter events and manual lines so far; nothing is written. A page of invoices is
priced together: one query per kind of row and one aggregation round trip for every metered price on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.billing import among, charge_line, load_contexts, manual_lines_many, period_charges_many, price_lines
from db.models import Customer, Invoice, LineItem, Subscription
from domain.invoice import PricedLine
from domain.status import INVOICE_LIVE

# Usage and manual lines can still land on these; from CALCULATING on the stored columns are final.
LIVE_STATUSES: frozenset[str] = INVOICE_LIVE


@dataclass(frozen=True)
class Totals:
    subtotal: Decimal
    total_tax: Decimal
    grand_total: Decimal
    item_count: int


@dataclass(frozen=True)
class LiveInvoice:
    totals: Totals
    # Transient rows (never added to a session) shaped as the period calculation will write them.
    lines: list[LineItem]


def stored_totals(invoice: Invoice) -> Totals:
    return Totals(invoice.subtotal, invoice.total_tax, invoice.grand_total, invoice.item_count)


def is_live(invoice: Invoice) -> bool:
    """Invoice 0 is never open: it is written whole when the subscription is created."""
    return invoice.status in LIVE_STATUSES and invoice.sequence_number > 0


async def live_invoices(
    session: AsyncSession, invoices: Sequence[Invoice], *, with_lines: bool = True
) -> dict[str, LiveInvoice]:
    """The live invoices among `invoices`, priced now, by invoice id (their lines only `with_lines`)."""
    live = [invoice for invoice in invoices if is_live(invoice)]
    if not live:
        return {}
    rows = await session.execute(
        select(Subscription, Customer)
        .join(Customer, Customer.id == Subscription.customer_id)
        .where(among(Subscription.id, {invoice.subscription_id for invoice in live}))
    )
    subscriptions: dict[str, Subscription] = {}
    customers: dict[str, Customer] = {}
    for subscription, customer in rows.all():
        subscriptions[subscription.id], customers[customer.id] = subscription, customer
    contexts = await load_contexts(
        session, [subscriptions[invoice.subscription_id] for invoice in live], customers
    )
    pairs = list(zip(contexts, live, strict=True))
    charges = await period_charges_many(session, pairs)
    manual = await manual_lines_many(session, live)
    views = {}
    for (ctx, invoice), billed in zip(pairs, charges, strict=True):
        priced = price_lines(ctx, invoice, billed, manual[invoice.id])
        totals = Totals(priced.subtotal, priced.total_tax, priced.grand_total, len(priced.lines))
        if not with_lines:
            views[invoice.id] = LiveInvoice(totals, [])
            continue
        generated = zip(billed, priced.lines[: len(billed)], strict=True)
        lines = [
            charge_line(invoice, i, c, line, invoice.grace_period_end)
            for i, (c, line) in enumerate(generated)
        ]
        for item, line in zip(manual[invoice.id], priced.lines[len(billed) :], strict=True):
            lines.append(_manual(item, len(lines), line))
        views[invoice.id] = LiveInvoice(totals, lines)
    return views


def _manual(item: LineItem, position: int, line: PricedLine) -> LineItem:
    """A manual line as the invoice will show it once priced (taxed like every line), left untouched."""
    copy = LineItem(**{attr.key: getattr(item, attr.key) for attr in inspect(LineItem).column_attrs})
    copy.position = position
    copy.subtotal, copy.tax_rate, copy.tax_total, copy.total = (
        line.subtotal,
        line.tax_rate,
        line.tax,
        line.total,
    )
    return copy


async def current_totals_many(session: AsyncSession, invoices: Sequence[Invoice]) -> list[Totals]:
    """What the API shows for each invoice: live for an open one, the frozen columns otherwise."""
    live = await live_invoices(session, invoices, with_lines=False)
    return [live[i.id].totals if i.id in live else stored_totals(i) for i in invoices]


async def current_totals(session: AsyncSession, invoice: Invoice) -> Totals:
    (totals,) = await current_totals_many(session, [invoice])
    return totals
