"""Wallet top-ups (behavior §4.5, §8): how much Invoice 0 adds for `minimumAccountBalance`, and the bounds
of a top-up the customer pays through the checkout.

Pure: the caller reads the wallet's balance and writes the line; the ledger credit happens when the
invoice is paid (db/funding.py).
"""

from __future__ import annotations

from decimal import Decimal

from domain.money import format_money, minor_units, round_money

# The card processor's smallest charge: a positive top-up below it is raised to it (§4.5).
MIN_TOPUP = Decimal("1.00")
# The largest single top-up (§4.5, later docs: "max $5,000").
MAX_TOPUP = Decimal("5000.00")
TOPUP_DISPLAY_NAME = "Wallet top-up"


class TopupOutOfBounds(ValueError):
    """A top-up amount the checkout cannot take; str() says why, for a 400."""


def minimum_balance_charge(minimum: Decimal, balance: Decimal, currency: str) -> Decimal:
    """The wallet charge of Invoice 0: `max(0, minimum − balance)`, rounded half-up to the currency's minor
    unit (the balance has nanodollar precision); any positive charge below MIN_TOPUP (even a nanodollar short)
    is raised to it. 0 means no top-up."""
    short = minimum - balance
    if short <= 0:
        return round_money(Decimal(0), currency)
    return max(round_money(short, currency), MIN_TOPUP)


def check_topup(amount: Decimal, currency: str) -> Decimal:
    """A top-up the customer asked for: MIN_TOPUP to MAX_TOPUP, in whole minor units of the currency."""
    if round_money(amount, currency) != amount:
        raise TopupOutOfBounds(f"must have at most {minor_units(currency)} decimal places for {currency}")
    if not MIN_TOPUP <= amount <= MAX_TOPUP:
        raise TopupOutOfBounds(
            f"must be between {format_money(MIN_TOPUP, currency)} and {format_money(MAX_TOPUP, currency)}"
        )
    return amount


def check_minimum_balance(minimum: Decimal, currency: str) -> Decimal:
    """A subscription's `minimumAccountBalance`: 0 (disabled) up to MAX_TOPUP, in whole minor units, so the
    top-up it asks for is one the checkout can take."""
    if round_money(minimum, currency) != minimum:
        raise TopupOutOfBounds(f"must have at most {minor_units(currency)} decimal places for {currency}")
    if minimum > MAX_TOPUP:
        raise TopupOutOfBounds(f"must be at most {format_money(MAX_TOPUP, currency)} (the largest top-up)")
    return minimum
