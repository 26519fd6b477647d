from __future__ import annotations

from decimal import Decimal, localcontext

import pytest

from domain.money import round_money
from domain.tax import effective_rate, fraction, split

D = Decimal
RATES = {"bm_1": D("7"), "fee_1": D("6"), "plan_1": D("5"), "default": D("4")}


@pytest.mark.parametrize(
    ("tax_exempt", "rates", "metric_id", "fee_id", "expected"),
    [
        # exemption beats everything, even a customer's specific rate
        (True, RATES, "bm_1", None, "0"),
        (True, None, None, None, "0"),
        (True, {}, None, "fee_1", "0"),
        # the line's metric, or its fee
        (False, RATES, "bm_1", None, "7"),
        (False, RATES, None, "fee_1", "6"),
        # no rate for the line's metric/fee: the plan's, then the customer's default
        (False, RATES, "bm_other", None, "5"),
        (False, RATES, None, "fee_other", "5"),
        (False, RATES, None, None, "5"),
        (False, {"default": D("4")}, "bm_1", None, "4"),
        (False, {"default": D("4"), "bm_2": D("9")}, None, "fee_1", "4"),
        # nothing from the customer: the plan's default rate
        (False, None, "bm_1", None, "8.875"),
        (False, {}, "bm_1", "fee_1", "8.875"),
        (False, {"plan_other": D("3")}, None, None, "8.875"),
        # an explicit 0 % from the customer is a rate, not a missing one
        (False, {"bm_1": D("0"), "default": D("4")}, "bm_1", None, "0"),
        (False, {"plan_1": D("0"), "default": D("4")}, "bm_1", None, "0"),
        (False, {"default": D("0")}, None, None, "0"),
    ],
)
def test_effective_rate_precedence(
    tax_exempt: bool,
    rates: dict[str, Decimal] | None,
    metric_id: str | None,
    fee_id: str | None,
    expected: str,
) -> None:
    rate = effective_rate(
        tax_exempt=tax_exempt,
        customer_rates=rates,
        metric_id=metric_id,
        fee_id=fee_id,
        plan_id="plan_1",
        plan_default_rate=D("8.875"),
    )
    assert rate == D(expected)


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        ("10", "0.10"),
        ("8.875", "0.08875"),
        ("0", "0"),
        ("100", "1"),
        ("0.0001", "0.000001"),
        ("19.6", "0.196"),
    ],
)
def test_fraction(percent: str, expected: str) -> None:
    assert fraction(D(percent)) == D(expected)
    assert str(fraction(D("10"))) == "0.10"


@pytest.mark.parametrize(
    ("amount", "percent", "net", "tax"),
    [
        ("10.00", "10", "10.00", "1"),
        ("10.00", "8.875", "10.00", "0.8875"),
        ("0", "20", "0", "0"),
        ("123.45", "0", "123.45", "0"),
        ("0.000012", "20", "0.000012", "0.0000024"),
        ("-5", "10", "-5", "-0.5"),
        ("9" * 29 + ".999999999", "8.875", "9" * 29 + ".999999999", "8874" + "9" * 24 + ".99999999991125"),
    ],
)
def test_split_exclusive(amount: str, percent: str, net: str, tax: str) -> None:
    assert split(D(amount), D(percent), "exclusive") == (D(net), D(tax))


@pytest.mark.parametrize(
    ("amount", "percent", "net_rounded", "tax_rounded"),
    [
        ("10.00", "8.875", "9.18", "0.82"),
        ("11.00", "10", "10.00", "1.00"),  # terminating: 10 + 1
        ("100", "20", "83.33", "16.67"),
        ("1", "100", "0.50", "0.50"),
        ("0.01", "8.875", "0.01", "0.00"),
        ("0", "10", "0.00", "0.00"),
        ("50", "0", "50.00", "0.00"),
        ("-11", "10", "-10.00", "-1.00"),
        (
            "9" * 29 + ".999999999",
            "250",
            "28571428571428571428571428571.43",
            "71428571428571428571428571428.57",
        ),
    ],
)
def test_split_inclusive(amount: str, percent: str, net_rounded: str, tax_rounded: str) -> None:
    net, tax = split(D(amount), D(percent), "inclusive")
    with localcontext(prec=300):  # the check itself must not round
        # exact: the two parts give back the amount to the last digit
        assert net + tax == D(amount)
        # and net really is amount / (1 + rate), to far below any minor unit
        assert abs(net * (1 + fraction(D(percent))) - D(amount)) < D("1e-40")
    assert (round_money(net, "USD"), round_money(tax, "USD")) == (D(net_rounded), D(tax_rounded))


def test_split_inclusive_terminating_is_exact() -> None:
    assert split(D("11.00"), D("10"), "inclusive") == (D(10), D(1))


@pytest.mark.parametrize("behavior", ["Exclusive", "", "gross", "net"])
def test_split_unknown_behavior(behavior: str) -> None:
    with pytest.raises(ValueError, match="unknown tax behavior"):
        split(D(10), D(10), behavior)


@pytest.mark.parametrize("percent", ["-1", "NaN", "Infinity"])
def test_split_rejects_bad_rates(percent: str) -> None:
    with pytest.raises(ValueError, match="tax rate must be a percent of 0 or more"):
        split(D(10), D(percent), "exclusive")
