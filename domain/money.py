"""Money: exact Decimals parsed from strings, currency minor units, and the one place that rounds."""

from __future__ import annotations

import functools
import re
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation

NANOS_PER_UNIT = 10**9
MAX_FRACTION_DIGITS = 9  # storage is NUMERIC(38, 9): nanodollar precision
MAX_INTEGER_DIGITS = 38 - MAX_FRACTION_DIGITS
# The default context keeps 28 significant digits and would silently round NUMERIC(38, 9) values (or raise
# in quantize); every computation here that can grow digits runs in this one instead.
_EXACT = Context(prec=80)
# Arithmetic on amounts: products of two NUMERIC(38, 9) values need up to 76 digits. Inexact is trapped, so
# anything beyond even this bound raises instead of rounding silently.
EXACT = Context(prec=80, traps=[InvalidOperation, Inexact])
_NANO = Decimal(1).scaleb(-MAX_FRACTION_DIGITS)

# ISO 4217 minor units that are not 2. Everything else uses 2.
_MINOR_UNITS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

_DECIMAL_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")


class MoneyFormatError(ValueError):
    """A string that is not an exact decimal amount we accept."""


def parse_decimal(value: str, *, max_fraction_digits: int = MAX_FRACTION_DIGITS) -> Decimal:
    """Parse a plain decimal string ("10.50", "0.000012"); no exponents, no floats, bounded precision."""
    # fullmatch, not match with `$`, which would let a trailing newline through.
    if not isinstance(value, str) or not _DECIMAL_RE.fullmatch(value):
        raise MoneyFormatError(f'{value!r} is not a decimal number written as a string, like "10.50"')
    integer, _, fraction = value.lstrip("-").partition(".")
    if len(fraction) > max_fraction_digits:
        raise MoneyFormatError(f"{value!r} has more than {max_fraction_digits} decimal places")
    if len(integer) > MAX_INTEGER_DIGITS:
        raise MoneyFormatError(f"{value!r} has more than {MAX_INTEGER_DIGITS} integer digits")
    return _unsigned_zero(Decimal(value))


def is_currency_code(code: str) -> bool:
    return isinstance(code, str) and _CURRENCY_RE.fullmatch(code) is not None


def minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    return _MINOR_UNITS.get(currency.upper(), 2)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit: the only rounding of money in Accrue."""
    return _unsigned_zero(amount.quantize(_quantum(currency), rounding=ROUND_HALF_UP, context=_EXACT))


@functools.lru_cache(maxsize=256)
def _quantum(currency: str) -> Decimal:
    # round_money runs about ten times per invoice of a /v2/invoices page; few currencies are ever used.
    return Decimal(1).scaleb(-minor_units(currency))


def average_unit_price(amount: Decimal, quantity: Decimal) -> Decimal:
    """The unit price a line shows for `amount` over `quantity` units: exact when it fits nanodollar
    precision, else rounded half-up to it (display only: the line's amount stays exact). 0 for no units."""
    if quantity == 0:
        return Decimal(0)
    mean = _EXACT.divide(amount, quantity)
    stored = mean.quantize(_NANO, rounding=ROUND_HALF_UP, context=_EXACT)
    return _unsigned_zero(mean if stored == mean else stored)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Integer minor units (cents) of an amount, rounded half-up, for card processors."""
    return int(round_money(amount, currency).scaleb(minor_units(currency), context=_EXACT))


def from_minor_units(minor: int, currency: str) -> Decimal:
    """The exact major-unit amount of an integer in the currency's minor unit (Stripe's 1999 USD → 19.99)."""
    if type(minor) is not int:
        raise TypeError(f"minor units must be an int, got {type(minor).__name__}")
    return Decimal(minor).scaleb(-minor_units(currency), context=_EXACT)


def to_nanos(amount: Decimal) -> int:
    """Nanodollars (10^-9 units), the atomic unit of wallets and usage billing; exact or it raises."""
    if not amount.is_finite():
        raise MoneyFormatError(f"{amount} is not a finite amount")
    nanos = amount.scaleb(MAX_FRACTION_DIGITS, context=_EXACT)
    if nanos != nanos.to_integral_value():
        raise MoneyFormatError(f"{amount} has more than {MAX_FRACTION_DIGITS} decimal places")
    return int(nanos)


def round_nanos(nanos: Decimal) -> int:
    """A fractional count of nanodollars rounded half-up to a whole one (a platform fee's share)."""
    return int(nanos.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_EXACT))


def to_nanos_rounded(amount: Decimal) -> int:
    """Nanodollars of an amount that may be finer than a nanodollar (a percentage of a charge), rounded
    half-up: usage charges and wallets keep nanodollar precision (D13)."""
    return round_nanos(amount.scaleb(MAX_FRACTION_DIGITS, context=_EXACT))


def from_nanos(nanos: int) -> Decimal:
    """The exact amount of a nanodollar integer, with 9 decimal places."""
    if type(nanos) is not int:
        raise TypeError(f"nanos must be an int, got {type(nanos).__name__}")
    return Decimal(nanos).scaleb(-MAX_FRACTION_DIGITS, context=_EXACT)


def format_money(amount: Decimal, currency: str) -> str:
    """An amount as the API shows money: rounded to the currency's minor unit, as a plain string."""
    return format_amount(round_money(amount, currency))


def format_estimate(amount: Decimal, currency: str, digits: int = 2) -> str:
    """An amount for a person to read, rounded to the currency's minor unit, unless that shows a non-zero
    amount as 0: then to its first `digits` significant digits, at most nanodollar precision
    (0.000036 stays 0.000036 where format_money says 0.00)."""
    rounded = round_money(amount, currency)
    if rounded != 0 or amount == 0:
        return format_amount(rounded)
    places = min(MAX_FRACTION_DIGITS, digits - 1 - amount.adjusted())
    quantum = Decimal(1).scaleb(-places)
    shown = amount.quantize(quantum, rounding=ROUND_HALF_UP, context=_EXACT)
    return format_amount(shown.normalize(_EXACT) if shown != 0 else rounded)


def format_amount(amount: Decimal) -> str:
    """A decimal as a plain string, never in exponent form."""
    return format(_unsigned_zero(amount), "f")


def _unsigned_zero(amount: Decimal) -> Decimal:
    """-0 and -0.00 (from "-0" or from rounding -0.001) become 0 and 0.00: an invoice never shows "-0.00"."""
    return amount.copy_abs() if amount.is_zero() else amount
