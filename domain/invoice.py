"""Invoice assembly (D13): each line's exact amount rounded once to the currency's minor unit, tax computed
on the rounded amount, and invoice totals as sums of the rounded lines.

Both tax behaviours round the amount the merchant priced first, then derive tax from that rounded figure, so
anyone can recompute every line from what the invoice shows:
- exclusive: subtotal = round(amount), tax = round(subtotal × rate), total = subtotal + tax;
- inclusive: total = round(amount) (the gross), tax = round(total − total / (1 + rate)),
  subtotal = total − tax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal

from domain.money import round_money
from domain.tax import TAX_BEHAVIORS, fraction, split

_EXACT = Context(prec=80)


@dataclass(frozen=True, slots=True)
class LineInput:
    key: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal  # exact, unrounded
    tax_rate_percent: Decimal
    tax_behavior: str  # exclusive | inclusive


@dataclass(frozen=True, slots=True)
class PricedLine:
    key: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal  # the exact amount priced, kept for audit
    tax_rate: Decimal  # a fraction: 0.10 for 10 %
    tax_behavior: str
    subtotal: Decimal  # net, rounded
    tax: Decimal  # rounded
    total: Decimal  # subtotal + tax


@dataclass(frozen=True, slots=True)
class InvoiceTotals:
    lines: list[PricedLine]
    subtotal: Decimal
    total_tax: Decimal
    grand_total: Decimal
    currency: str  # the lines' currency, so verify() can re-round them


def price_line(line: LineInput, currency: str) -> PricedLine:
    """One line rounded to `currency`'s minor unit, with its tax."""
    if line.tax_behavior not in TAX_BEHAVIORS:
        raise ValueError(
            f"line {line.key!r}: unknown tax behavior {line.tax_behavior!r}; expected exclusive or inclusive"
        )
    rounded = round_money(line.amount, currency)
    _, exact_tax = split(rounded, line.tax_rate_percent, line.tax_behavior)
    tax = round_money(exact_tax, currency)
    if line.tax_behavior == "exclusive":
        subtotal, total = rounded, _EXACT.add(rounded, tax)
    else:
        subtotal, total = _EXACT.subtract(rounded, tax), rounded
    return PricedLine(
        key=line.key,
        description=line.description,
        quantity=line.quantity,
        unit_price=line.unit_price,
        amount=line.amount,
        tax_rate=fraction(line.tax_rate_percent),
        tax_behavior=line.tax_behavior,
        subtotal=round_money(subtotal, currency),
        tax=tax,
        total=round_money(total, currency),
    )


def assemble(lines: Sequence[LineInput], currency: str) -> InvoiceTotals:
    """Price every line and total them; totals are sums of the rounded lines, never a re-rounded sum."""
    priced = [price_line(line, currency) for line in lines]
    subtotal, total_tax = _totals(priced, currency)
    return InvoiceTotals(
        lines=priced,
        subtotal=subtotal,
        total_tax=total_tax,
        grand_total=_EXACT.add(subtotal, total_tax),
        currency=currency,
    )


def _totals(lines: Sequence[PricedLine], currency: str) -> tuple[Decimal, Decimal]:
    # Starting from a rounded zero keeps the currency's scale on an empty invoice (0.00, not 0).
    subtotal = total_tax = round_money(Decimal(0), currency)
    for line in lines:
        subtotal = _EXACT.add(subtotal, line.subtotal)
        total_tax = _EXACT.add(total_tax, line.tax)
    return subtotal, total_tax


def verify(totals: InvoiceTotals) -> bool:
    """True when every line is rounded to the currency, adds up, and matches a fresh pricing of its exact
    amount, and the invoice totals are the sums of the lines."""
    for line in totals.lines:
        again = price_line(
            LineInput(
                key=line.key,
                description=line.description,
                quantity=line.quantity,
                unit_price=line.unit_price,
                amount=line.amount,
                tax_rate_percent=line.tax_rate.scaleb(2, context=_EXACT),
                tax_behavior=line.tax_behavior,
            ),
            totals.currency,
        )
        if (line.subtotal, line.tax, line.total) != (again.subtotal, again.tax, again.total):
            return False
        if line.total != line.subtotal + line.tax:
            return False
    subtotal, total_tax = _totals(totals.lines, totals.currency)
    return (totals.subtotal, totals.total_tax, totals.grand_total) == (
        subtotal,
        total_tax,
        _EXACT.add(subtotal, total_tax),
    )
