"""Tax rates and splits (behaviour §12.6). Rates here are percents (10 = 10 %), as customers and plans
store them; invoice lines carry fractions (domain.invoice)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Context, Decimal, Inexact, InvalidOperation

from domain.money import format_amount

TAX_BEHAVIORS = ("exclusive", "inclusive")

_EXACT = Context(prec=80, traps=[InvalidOperation, Inexact])
# Dividing out an inclusive rate rarely terminates; 80 digits is far below anything an invoice shows.
_DIVIDE = Context(prec=80)
# Wide enough that amount − net is exact for any NUMERIC(38, 9) amount and an 80-digit net.
_WIDE = Context(prec=200, traps=[InvalidOperation, Inexact])


def effective_rate(
    *,
    tax_exempt: bool,
    customer_rates: Mapping[str, Decimal] | None,
    metric_id: str | None,
    fee_id: str | None,
    plan_id: str,
    plan_default_rate: Decimal,
) -> Decimal:
    """The percent that applies to one line: an exempt subscription pays none; otherwise the customer's
    most specific rate (the line's metric or fee, then the plan, then their "default"), else the plan's."""
    if tax_exempt:
        return Decimal(0)
    rates = customer_rates or {}
    for key in (metric_id, fee_id, plan_id, "default"):
        if key is not None and key in rates:
            return rates[key]
    return plan_default_rate


def fraction(rate_percent: Decimal) -> Decimal:
    """10 → 0.10: the form invoice lines carry."""
    return rate_percent.scaleb(-2, context=_EXACT)


def split(amount: Decimal, rate_percent: Decimal, behavior: str) -> tuple[Decimal, Decimal]:
    """`(net, tax)` of `amount`, unrounded.

    exclusive: the amount is net and tax comes on top. inclusive: the amount already holds the tax, so
    net = amount / (1 + rate) and tax is the rest, making net + tax == amount exactly.
    """
    _check_rate(rate_percent)
    rate = fraction(rate_percent)
    if behavior == "exclusive":
        return amount, _EXACT.multiply(amount, rate)
    if behavior == "inclusive":
        net = _DIVIDE.divide(amount, _EXACT.add(Decimal(1), rate))
        return net, _WIDE.subtract(amount, net)
    raise ValueError(f"unknown tax behavior {behavior!r}; expected exclusive or inclusive")


def _check_rate(rate_percent: Decimal) -> None:
    if not rate_percent.is_finite() or rate_percent < 0:
        raise ValueError(f"tax rate must be a percent of 0 or more, got {format_amount(rate_percent)}")
