"""domain/funding.py: Invoice 0's wallet charge for a minimum balance, and the bounds of a top-up."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.funding import TopupOutOfBounds, check_minimum_balance, check_topup, minimum_balance_charge


@pytest.mark.parametrize(
    ("minimum", "balance", "currency", "charge"),
    [
        ("20.00", "0", "USD", "20.00"),
        ("20.00", "15.00", "USD", "5.00"),
        ("20.00", "19.50", "USD", "1.00"),  # below the processor minimum: raised to it
        ("20.00", "19.999999999", "USD", "1.00"),
        ("20.00", "20.00", "USD", "0.00"),
        ("20.00", "25.00", "USD", "0.00"),
        ("20.00", "14.995", "USD", "5.01"),  # a balance finer than cents: the charge rounds half-up
        ("20.00", "14.9951", "USD", "5.00"),
        ("0", "0", "USD", "0.00"),
        ("1500", "0", "JPY", "1500"),
        ("0.5", "0", "USD", "1.00"),
    ],
)
def test_minimum_balance_charge(minimum: str, balance: str, currency: str, charge: str) -> None:
    got = minimum_balance_charge(Decimal(minimum), Decimal(balance), currency)
    assert str(got) == charge


@pytest.mark.parametrize("amount", ["1.00", "1", "25.5", "5000.00"])
def test_topups_in_bounds(amount: str) -> None:
    assert check_topup(Decimal(amount), "USD") == Decimal(amount)


@pytest.mark.parametrize(
    ("amount", "says"),
    [("0.99", "between"), ("0", "between"), ("-1", "between"), ("5000.01", "between"), ("1.001", "places")],
)
def test_topups_out_of_bounds(amount: str, says: str) -> None:
    with pytest.raises(TopupOutOfBounds, match=says):
        check_topup(Decimal(amount), "USD")


def test_minimum_balance_bounds() -> None:
    assert check_minimum_balance(Decimal("0"), "USD") == 0
    assert check_minimum_balance(Decimal("5000.00"), "USD") == Decimal("5000")
    with pytest.raises(TopupOutOfBounds, match=r"at most 5000\.00"):
        check_minimum_balance(Decimal("5000.01"), "USD")
    with pytest.raises(TopupOutOfBounds, match="decimal places"):
        check_minimum_balance(Decimal("1.5"), "JPY")
