"""Price models (behaviour §3.4, D5–D7): what a period's usage of one price costs, as an exact Decimal.

Nothing here rounds: amounts are kept exact until the invoice rounds each line (D13, domain.invoice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation
from typing import Any

from domain.money import MAX_FRACTION_DIGITS, MoneyFormatError, format_amount, parse_decimal

MODELS = ("standard", "percentage", "volume", "dynamic")

# Products of two NUMERIC(38, 9) values need up to 76 digits; the default context keeps 28 and would
# round silently. Inexact is trapped so that anything beyond even this bound raises instead.
_EXACT = Context(prec=80, traps=[InvalidOperation, Inexact])
_DIVIDE = Context(prec=80)
_NANO = Decimal(1).scaleb(-MAX_FRACTION_DIGITS)


class PriceOutOfBounds(ValueError):
    """A dynamic price reported on a usage record lies outside the price's [minPrice, maxPrice] (D7)."""


class PricePropertiesError(ValueError):
    """Stored price properties that cannot be priced (missing key, not a decimal string)."""


@dataclass(frozen=True, slots=True)
class Charge:
    """A priced period of one price: `amount` is exact; `unit_price` is what the line shows per unit."""

    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


def clamp(value: Decimal, low: Decimal, high: Decimal) -> Decimal:
    """`value` held to [low, high]."""
    if low > high:
        raise ValueError(
            f"lower bound {format_amount(low)} is greater than upper bound {format_amount(high)}"
        )
    return min(max(value, low), high)


def _sum(values: Sequence[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = _EXACT.add(total, value)
    return total


def standard(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """Every unit costs the same: quantity × unitPrice."""
    return _EXACT.multiply(quantity, unit_price)


def percentage(
    record_values: Sequence[Decimal], percentage: Decimal, min_charge: Decimal, max_charge: Decimal
) -> Decimal:
    """A share of each record's money value, held per record to [minCharge, maxCharge], summed (D5).

    `percentage` is a fraction: 0.029 charges 2.9 %. Every record is charged at least minCharge, as a card
    processor charges its fixed minimum on each transaction.
    """
    return _sum([clamp(_EXACT.multiply(v, percentage), min_charge, max_charge) for v in record_values])


def volume(
    quantity: Decimal, default: Decimal, gradient: Decimal, min_price: Decimal, max_price: Decimal
) -> tuple[Decimal, Decimal]:
    """`(unit_price, amount)`: one unit price for the whole period, linear in its volume and held to
    [min, max], applied to every unit (D6). A negative gradient makes large volumes cheaper per unit."""
    unit_price = clamp(_EXACT.add(default, _EXACT.multiply(gradient, quantity)), min_price, max_price)
    return unit_price, _EXACT.multiply(quantity, unit_price)


def dynamic(records: Sequence[tuple[Decimal, Decimal]], min_price: Decimal, max_price: Decimal) -> Decimal:
    """Σ quantity × price over `(quantity, price)` records, each price reported by the caller (D7)."""
    for _, price in records:
        check_dynamic_price(price, min_price, max_price)
    return _sum([_EXACT.multiply(quantity, price) for quantity, price in records])


def check_dynamic_price(price: Decimal, min_price: Decimal, max_price: Decimal) -> None:
    """Raise PriceOutOfBounds unless minPrice ≤ price ≤ maxPrice; usable to validate a request up front."""
    if not min_price <= price <= max_price:
        raise PriceOutOfBounds(
            f"price {format_amount(price)} is outside the price's bounds: it must be between "
            f"minPrice {format_amount(min_price)} and maxPrice {format_amount(max_price)}"
        )


def charge(
    model: str,
    properties: Mapping[str, Any],
    quantity: Decimal = Decimal(0),
    record_values: Sequence[Decimal] = (),
    dynamic_records: Sequence[tuple[Decimal, Decimal]] = (),
) -> Charge:
    """Price one period of a price from its stored `properties` (decimal strings, as the API stores them).

    standard and volume price the aggregated `quantity`; percentage prices each of `record_values` (the
    Charge's quantity is their sum and its unit price the percentage); dynamic prices `dynamic_records`.
    """
    if model == "standard":
        unit_price = _prop(properties, "unitPrice")
        return Charge(quantity, unit_price, standard(quantity, unit_price))
    if model == "percentage":
        share = _prop(properties, "percentage")
        amount = percentage(
            record_values, share, _prop(properties, "minCharge"), _prop(properties, "maxCharge")
        )
        return Charge(_sum(record_values), share, amount)
    if model == "volume":
        params = properties.get("parameters")
        if not isinstance(params, Mapping):
            raise PricePropertiesError("volume price properties need a 'parameters' object")
        function = params.get("function", "linear")
        if function != "linear":
            raise PricePropertiesError(f"volume function {function!r} is not supported; only 'linear' is")
        unit_price, amount = volume(
            quantity,
            _prop(properties, "default"),
            _prop(params, "gradient", "parameters.gradient"),
            _prop(params, "min", "parameters.min"),
            _prop(params, "max", "parameters.max"),
        )
        return Charge(quantity, unit_price, amount)
    if model == "dynamic":
        amount = dynamic(dynamic_records, _prop(properties, "minPrice"), _prop(properties, "maxPrice"))
        units = _sum([q for q, _ in dynamic_records])
        return Charge(units, _average_price(dynamic_records, units, amount), amount)
    raise PricePropertiesError(f"unknown price model {model!r}; expected one of {', '.join(MODELS)}")


def _average_price(records: Sequence[tuple[Decimal, Decimal]], units: Decimal, amount: Decimal) -> Decimal:
    """The unit price a dynamic line shows: the one price when every record shares it, else the
    quantity-weighted mean to nanodollar precision (display only; the amount stays exact)."""
    prices = {price for _, price in records}
    if len(prices) == 1:
        return prices.pop()
    if not records or units == 0:
        return Decimal(0)
    mean = _DIVIDE.divide(amount, units)
    stored = mean.quantize(_NANO, rounding=ROUND_HALF_UP, context=_DIVIDE)
    return mean if stored == mean else stored


def _prop(properties: Mapping[str, Any], key: str, label: str | None = None) -> Decimal:
    value = properties.get(key)
    name = label or key
    if value is None:
        raise PricePropertiesError(f"price property {name!r} is missing")
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise PricePropertiesError(f"price property {name!r} must be a decimal string, got {value!r}")
    try:
        return parse_decimal(value)
    except MoneyFormatError as exc:
        raise PricePropertiesError(f"price property {name!r}: {exc}") from exc
