"""Money: exact Decimals parsed from strings, currency minor units, and the one place that rounds."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

NANOS_PER_UNIT = 10**9
MAX_FRACTION_DIGITS = 9  # storage is NUMERIC(38, 9): nanodollar precision

# ISO 4217 minor units that are not 2. Everything else uses 2.
_MINOR_UNITS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

_DECIMAL_RE = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


class MoneyFormatError(ValueError):
    """A string that is not an exact decimal amount we accept."""


def parse_decimal(value: str, *, max_fraction_digits: int = MAX_FRACTION_DIGITS) -> Decimal:
    """Parse a plain decimal string ("10.50", "0.000012"); no exponents, no floats, bounded precision."""
    if not isinstance(value, str) or not _DECIMAL_RE.match(value):
        raise MoneyFormatError(f'{value!r} is not a decimal number written as a string, like "10.50"')
    fraction = value.partition(".")[2]
    if len(fraction) > max_fraction_digits:
        raise MoneyFormatError(f"{value!r} has more than {max_fraction_digits} decimal places")
    return Decimal(value)


def is_currency_code(code: str) -> bool:
    return bool(_CURRENCY_RE.match(code))


def minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    return _MINOR_UNITS.get(currency.upper(), 2)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit: the only rounding of money in Accrue."""
    quantum = Decimal(1).scaleb(-minor_units(currency))
    return amount.quantize(quantum, rounding=ROUND_HALF_UP)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Integer minor units (cents) of an amount, rounded half-up, for card processors."""
    return int(round_money(amount, currency).scaleb(minor_units(currency)))


def to_nanos(amount: Decimal) -> int:
    """Nanodollars (10^-9 units), the atomic unit of wallets and usage billing; exact or it raises."""
    nanos = amount * NANOS_PER_UNIT
    if nanos != nanos.to_integral_value():
        raise MoneyFormatError(f"{amount} has more than {MAX_FRACTION_DIGITS} decimal places")
    return int(nanos)


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-MAX_FRACTION_DIGITS)


def format_amount(amount: Decimal) -> str:
    """A decimal as a plain string, never in exponent form."""
    return format(amount, "f")
