from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from domain.pricing import (
    Charge,
    PriceOutOfBounds,
    PricePropertiesError,
    charge,
    clamp,
    dynamic,
    percentage,
    standard,
    volume,
)

D = Decimal
MAX_NUMERIC = "9" * 29 + "." + "9" * 9  # NUMERIC(38, 9) at its limit
# Its square, exactly: (10^38 − 1)^2 at 18 decimal places. The default 28-digit context would round it.
MAX_SQUARED = D(f"{(10**38 - 1) ** 2}E-18")


@pytest.mark.parametrize(
    ("quantity", "unit_price", "expected"),
    [
        ("0", "5", "0"),
        ("3", "0", "0"),
        ("1", "10", "10"),
        ("1000000", "0.000012", "12"),  # a million tokens at $0.000012
        ("1500", "0.001", "1.5"),
        ("1", "0.000000001", "0.000000001"),
        ("2.5", "4", "10"),
        ("0.333333333", "3", "0.999999999"),
        ("-2", "1.25", "-2.5"),  # a credit stays exact and negative
        ("123456789.123456789", "0.000000001", "0.123456789123456789"),
    ],
)
def test_standard(quantity: str, unit_price: str, expected: str) -> None:
    assert standard(D(quantity), D(unit_price)) == D(expected)


def test_standard_is_exact_beyond_the_default_context() -> None:
    assert standard(D(MAX_NUMERIC), D(MAX_NUMERIC)) == MAX_SQUARED


CARD = (D("0.029"), D("0.30"), D("100"))  # 2.9 % with $0.30 minimum and $100 maximum (behaviour §3.4)


@pytest.mark.parametrize(
    ("values", "share", "low", "high", "expected"),
    [
        # the documented worked examples
        (["10"], *CARD, "0.30"),
        (["1000"], *CARD, "29.00"),
        (["10000"], *CARD, "100.00"),
        # per record, then summed (D5): not clamp(sum)
        (["10", "1000", "10000"], *CARD, "129.30"),
        (["5", "5"], *CARD, "0.60"),
        ([], *CARD, "0"),
        (["0"], *CARD, "0.30"),  # a zero sale still pays the minimum
        (["20"], *CARD, "0.58"),
        (["10.345"], *CARD, "0.300005"),  # unrounded: 0.300005 just above the minimum
        (["3448.275862068"], *CARD, "99.999999999972"),  # just under the maximum
        # exactly on the bounds
        (["2000"], "0.05", "0", "100", "100"),
        (["6"], "0.05", "0.30", "100", "0.30"),
        # no bounds in effect
        (["10", "3000"], "0.05", "0", "1000000", "150.5"),
        (["0.000001"], "0.05", "0", "1", "0.00000005"),
        # min = max: a flat charge per record
        (["1", "1000", "0"], "0.05", "0.5", "0.5", "1.5"),
        # zero percentage: only the minimum
        (["1000", "2000"], "0", "0.25", "10", "0.5"),
        (["1000", "2000"], "0", "0", "10", "0"),
    ],
)
def test_percentage(values: list[str], share: Any, low: Any, high: Any, expected: str) -> None:
    result = percentage([D(v) for v in values], D(share), D(low), D(high))
    assert result == D(expected)


@pytest.mark.parametrize(
    ("quantity", "default", "gradient", "low", "high", "unit_price", "amount"),
    [
        # negative gradient: cheaper per unit as volume grows, floored at min
        ("0", "1", "-0.001", "0.1", "1", "1", "0"),
        ("100", "1", "-0.001", "0.1", "1", "0.9", "90"),
        ("500.5", "1", "-0.001", "0.1", "1", "0.4995", "249.99975"),
        ("900", "1", "-0.001", "0.1", "1", "0.1", "90"),
        ("1000", "1", "-0.001", "0.1", "1", "0.1", "100"),
        ("1000000", "1", "-0.001", "0.1", "1", "0.1", "100000"),
        # positive gradient, capped at max
        ("50", "1", "0.01", "0.5", "2", "1.5", "75"),
        ("100", "1", "0.01", "0.5", "2", "2", "200"),
        ("200", "1", "0.01", "0.5", "2", "2", "400"),
        # default outside [min, max]: clamped on either side
        ("10", "0", "0", "0.2", "1", "0.2", "2"),
        ("10", "5", "0", "0.2", "1", "1", "10"),
        # min = max: a fixed unit price
        ("7", "1", "-0.5", "0.3", "0.3", "0.3", "2.1"),
        # tiny unit prices stay exact
        ("1000000", "0.000012", "-0.000000000001", "0.000002", "0.000012", "0.000011", "11"),
        ("3", "0.000000001", "0", "0", "1", "0.000000001", "0.000000003"),
    ],
)
def test_volume(
    quantity: str, default: str, gradient: str, low: str, high: str, unit_price: str, amount: str
) -> None:
    assert volume(D(quantity), D(default), D(gradient), D(low), D(high)) == (D(unit_price), D(amount))


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([], "0"),
        ([("10", "0.5")], "5"),
        ([("10", "0.5"), ("2", "0.75")], "6.5"),
        ([("3", "0.1"), ("4", "1")], "4.3"),  # both bounds are allowed
        ([("0", "0.9")], "0"),
        ([("1000000", "0.1")], "100000"),
        ([("0.5", "0.333333333")], "0.1666666665"),
    ],
)
def test_dynamic(records: list[tuple[str, str]], expected: str) -> None:
    assert dynamic([(D(q), D(p)) for q, p in records], D("0.1"), D("1")) == D(expected)


def test_dynamic_tiny_prices() -> None:
    low, high = D("0.000001"), D("0.00002")
    assert dynamic([(D(1000000), D("0.000012"))], low, high) == 12


@pytest.mark.parametrize(
    ("records", "bad"),
    [
        ([("1", "1.01")], "1.01"),
        ([("1", "0.09")], "0.09"),
        ([("1", "0.5"), ("1", "-1")], "-1"),
        ([("0", "2")], "2"),  # even with no quantity, a bad price is an error
        ([("1", "1.000000001")], "1.000000001"),
    ],
)
def test_dynamic_price_outside_bounds(records: list[tuple[str, str]], bad: str) -> None:
    with pytest.raises(PriceOutOfBounds) as raised:
        dynamic([(D(q), D(p)) for q, p in records], D("0.1"), D("1"))
    message = str(raised.value)
    assert f"price {bad} " in message
    assert "minPrice 0.1" in message and "maxPrice 1" in message
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [("5", "1", "10", "5"), ("0", "1", "10", "1"), ("11", "1", "10", "10"), ("3", "3", "3", "3"),
     ("-1", "-2", "0", "-1"), ("1", "1", "10", "1"), ("10", "1", "10", "10")],
)  # fmt: skip
def test_clamp(value: str, low: str, high: str, expected: str) -> None:
    assert clamp(D(value), D(low), D(high)) == D(expected)


def test_clamp_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="lower bound 2 is greater than upper bound 1"):
        clamp(D(1), D(2), D(1))


VOLUME_PROPS = {
    "default": "1",
    "parameters": {"function": "linear", "gradient": "-0.001", "min": "0.1", "max": "1"},
}


@pytest.mark.parametrize(
    ("model", "properties", "quantity", "values", "records", "expected"),
    [
        ("standard", {"unitPrice": "0.001"}, "1500", [], [], ("1500", "0.001", "1.5")),
        ("standard", {"unitPrice": "0.000012"}, "1000000", [], [], ("1000000", "0.000012", "12")),
        ("standard", {"unitPrice": "10"}, "0", [], [], ("0", "10", "0")),
        # percentage: quantity is the summed value, unit price the percentage; `quantity` is not used
        (
            "percentage",
            {"percentage": "0.05", "minCharge": "0", "maxCharge": "100"},
            "99",
            ["10", "3000"],
            [],
            ("3010", "0.05", "100.5"),
        ),
        (
            "percentage",
            {"percentage": "0.029", "minCharge": "0.30", "maxCharge": "100"},
            "0",
            ["10", "1000", "10000"],
            [],
            ("11010", "0.029", "129.30"),
        ),
        (
            "percentage",
            {"percentage": "0.05", "minCharge": "1", "maxCharge": "2"},
            "0",
            [],
            [],
            ("0", "0.05", "0"),
        ),
        ("volume", VOLUME_PROPS, "100", [], [], ("100", "0.9", "90")),
        ("volume", VOLUME_PROPS, "5000", [], [], ("5000", "0.1", "500")),
        # parameters.function defaults to linear, the only function
        (
            "volume",
            {"default": "2", "parameters": {"gradient": "0", "min": "0", "max": "5"}},
            "3",
            [],
            [],
            ("3", "2", "6"),
        ),
        # dynamic: one shared price shows as is; mixed prices as the weighted mean to 9 places
        (
            "dynamic",
            {"minPrice": "0.1", "maxPrice": "1"},
            "0",
            [],
            [("10", "0.5"), ("2", "0.5")],
            ("12", "0.5", "6"),
        ),
        (
            "dynamic",
            {"minPrice": "0.1", "maxPrice": "1"},
            "0",
            [],
            [("10", "0.5"), ("2", "0.75")],
            ("12", "0.541666667", "6.5"),
        ),
        (
            "dynamic",
            {"minPrice": "0.1", "maxPrice": "1"},
            "0",
            [],
            [("1", "0.2"), ("3", "0.6")],
            ("4", "0.5", "2"),
        ),
        ("dynamic", {"minPrice": "0.1", "maxPrice": "1"}, "5", [], [], ("0", "0", "0")),
        (
            "dynamic",
            {"minPrice": "0.1", "maxPrice": "1"},
            "0",
            [],
            [("0", "0.2"), ("0", "0.3")],
            ("0", "0", "0"),
        ),
    ],
)
def test_charge(
    model: str,
    properties: dict[str, Any],
    quantity: str,
    values: list[str],
    records: list[tuple[str, str]],
    expected: tuple[str, str, str],
) -> None:
    result = charge(
        model, properties, D(quantity), [D(v) for v in values], [(D(q), D(p)) for q, p in records]
    )
    assert result == Charge(*(D(x) for x in expected))


def test_charge_defaults_and_decimal_properties() -> None:
    assert charge("standard", {"unitPrice": D("2")}, D(3)) == Charge(D(3), D(2), D(6))
    assert charge("percentage", {"percentage": "0.1", "minCharge": "0", "maxCharge": "1"}) == Charge(
        D(0), D("0.1"), D(0)
    )


def test_charge_dynamic_price_outside_bounds() -> None:
    with pytest.raises(PriceOutOfBounds, match="price 2 is outside"):
        charge("dynamic", {"minPrice": "0.1", "maxPrice": "1"}, D(1), [], [(D(1), D(2))])


@pytest.mark.parametrize(
    ("model", "properties", "message"),
    [
        ("standard", {}, "'unitPrice' is missing"),
        ("standard", {"unitPrice": 0.5}, "'unitPrice' must be a decimal string"),
        ("standard", {"unitPrice": 1}, "'unitPrice' must be a decimal string"),
        ("standard", {"unitPrice": "1e3"}, "'unitPrice': '1e3' is not a decimal number"),
        ("percentage", {"percentage": "0.05", "minCharge": "0"}, "'maxCharge' is missing"),
        ("volume", {"default": "1"}, "'parameters' object"),
        ("volume", {"default": "1", "parameters": "linear"}, "'parameters' object"),
        (
            "volume",
            {
                "default": "1",
                "parameters": {"function": "exponential", "gradient": "1", "min": "0", "max": "1"},
            },
            "'exponential' is not supported",
        ),
        (
            "volume",
            {"default": "1", "parameters": {"gradient": "1", "min": "0"}},
            "'parameters.max' is missing",
        ),
        ("volume", {"parameters": VOLUME_PROPS["parameters"]}, "'default' is missing"),
        ("dynamic", {"minPrice": "0.1"}, "'maxPrice' is missing"),
        ("tiered", {"unitPrice": "1"}, "unknown price model 'tiered'"),
        ("Standard", {"unitPrice": "1"}, "unknown price model 'Standard'"),
    ],
)
def test_charge_rejects_bad_properties(model: str, properties: dict[str, Any], message: str) -> None:
    with pytest.raises(PricePropertiesError, match=message.replace("(", r"\(")) as raised:
        charge(model, properties, D(1), [D(1)], [(D(1), D("0.5"))])
    assert isinstance(raised.value, ValueError)
