from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from domain.money import EXACT
from domain.pricing import (
    FEE_MODEL,
    MODELS,
    Charge,
    PeriodUsage,
    PriceOutOfBounds,
    PricePropertiesError,
    Problems,
    RecordRule,
    model_for,
)
from domain.pricing.base import clamp

D = Decimal
MAX_NUMERIC = "9" * 29 + "." + "9" * 9  # NUMERIC(38, 9) at its limit
# Its square, exactly: (10^38 − 1)^2 at 18 decimal places. The default 28-digit context would round it.
MAX_SQUARED = D(f"{(10**38 - 1) ** 2}E-18")


def period(model: str, props: dict[str, Any], quantity: str) -> Charge:
    return model_for(model).price_period(props, PeriodUsage(quantity=D(quantity)))


def engine(props: dict[str, Any], model: str, records: Sequence[tuple[str, str | None]]) -> PeriodUsage:
    """What the SQL engine reports for `(value, reported price)` records under the model's RecordRule."""
    rule = model_for(model).record_rule(props)
    assert rule is not None
    values = [D(v) for v, _ in records]
    prices = {rule.price(None if p is None else D(p)) for _, p in records}
    return PeriodUsage(
        quantity=sum(values, D(0)),
        record_values=sum(values, D(0)),
        record_amount=sum((rule.amount(D(v), None if p is None else D(p)) for v, p in records), D(0)),
        record_price=prices.pop() if len(prices) == 1 else None,
    )


def charge(*values: str) -> Charge:
    return Charge(*(D(v) for v in values))


# ---- standard -------------------------------------------------------------------------------------------


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
    assert period("standard", {"unitPrice": unit_price}, quantity) == charge(quantity, unit_price, expected)


def test_standard_is_exact_beyond_the_default_context() -> None:
    assert period("standard", {"unitPrice": MAX_NUMERIC}, MAX_NUMERIC).amount == MAX_SQUARED


# ---- percentage (per record, D5) ------------------------------------------------------------------------

CARD = ("0.029", "0.30", "100")  # 2.9 % with $0.30 minimum and $100 maximum (behaviour §3.4)


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
def test_percentage(values: list[str], share: str, low: str, high: str, expected: str) -> None:
    props = {"percentage": share, "minCharge": low, "maxCharge": high}
    usage = engine(props, "percentage", [(v, None) for v in values])
    result = model_for("percentage").price_period(props, usage)
    # The line's quantity is the summed value and its unit price the percentage.
    assert result == Charge(sum((D(v) for v in values), D(0)), D(share), D(expected))


def test_percentage_rule_and_one_record() -> None:
    props = {"percentage": "0.029", "minCharge": "0.30", "maxCharge": "100"}
    model = model_for("percentage")
    assert model.record_rule(props) == RecordRule(
        factor=D("0.029"), amount_min=D("0.30"), amount_max=D("100")
    )
    assert model.price_record(props, D("1000")) == charge("1000", "0.029", "29.000")
    assert model.price_record(props, D("1")) == charge("1", "0.029", "0.30")


# ---- volume, linear (SDK 0.1.34) ------------------------------------------------------------------------


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
        ("1000", "0.000012", "-0.000000001", "0.000002", "0.000012", "0.000011", "0.011"),
        ("3", "0.000000001", "0", "0", "1", "0.000000001", "0.000000003"),
    ],
)
def test_volume_linear(
    quantity: str, default: str, gradient: str, low: str, high: str, unit_price: str, amount: str
) -> None:
    props = {
        "default": default,
        "parameters": {"function": "linear", "gradient": gradient, "min": low, "max": high},
    }
    assert period("volume", props, quantity) == charge(quantity, unit_price, amount)


def test_volume_function_defaults_to_linear() -> None:
    props = {"default": "2", "parameters": {"gradient": "0", "min": "0", "max": "5"}}
    assert period("volume", props, "3") == charge("3", "2", "6")


# ---- ladders: volume bands (SDK 0.6.3) and graduated ----------------------------------------------------

LADDER = {"tiers": [{"upTo": "100", "unitPrice": "5"}, {"upTo": None, "unitPrice": "3"}]}
THREE = {
    "tiers": [
        {"upTo": "100", "unitPrice": "0.10"},
        {"upTo": "1000", "unitPrice": "0.08"},
        {"upTo": None, "unitPrice": "0.05"},
    ]
}
FLAT = {
    "tiers": [
        {"upTo": "10", "unitPrice": "0", "flatPrice": "20"},  # the first 10 units: a flat 20
        {"upTo": "110", "unitPrice": "1"},
        {"upTo": None, "unitPrice": "0.5", "flatPrice": "7"},
    ]
}


@pytest.mark.parametrize(
    ("props", "quantity", "unit_price", "amount"),
    [
        # the ladder: the band holding the period quantity prices every unit
        (LADDER, "100", "5", "500"),
        (LADDER, "101", "3", "303"),
        (LADDER, "0", "5", "0"),
        (LADDER, "1", "5", "5"),
        (LADDER, "99.999999999", "5", "499.999999995"),
        (LADDER, "100.000000001", "3", "300.000000003"),
        (LADDER, "-4", "5", "-20"),  # a credit falls in the first band
        (THREE, "1000", "0.08", "80.00"),
        (THREE, "1001", "0.05", "50.05"),
        (THREE, "100", "0.10", "10.00"),
        (THREE, "101", "0.08", "8.08"),
        (THREE, MAX_NUMERIC, "0.05", EXACT.multiply(D(MAX_NUMERIC), D("0.05"))),
    ],
)
def test_volume_bands(props: dict[str, Any], quantity: str, unit_price: str, amount: Any) -> None:
    assert period("volume", props, quantity) == Charge(D(quantity), D(unit_price), D(amount))


@pytest.mark.parametrize(
    ("props", "quantity", "amount", "unit_price"),
    [
        (LADDER, "0", "0", "5"),  # no units: nothing billed; the line shows the first band's price
        (LADDER, "1", "5", "5"),
        (LADDER, "100", "500", "5"),
        (LADDER, "101", "503", "4.980198020"),  # 100 × 5 + 1 × 3; the shown price rounds, the amount not
        (LADDER, "100.5", "501.5", "4.990049751"),
        (LADDER, "-2", "-10", "5"),
        (THREE, "100", "10.00", "0.1"),
        (THREE, "1000", "82.00", "0.082"),  # 100 × 0.10 + 900 × 0.08
        (THREE, "1001", "82.05", "0.081968032"),
        (THREE, "2000", "132.00", "0.066"),
        # flat prices: added once when any unit falls in their band
        (FLAT, "0", "0", "0"),
        (FLAT, "0.000000001", "20", "20000000000"),
        (FLAT, "1", "20", "20"),
        (FLAT, "10", "20", "2"),
        (FLAT, "10.5", "20.5", "1.952380952"),
        (FLAT, "110", "120", "1.090909091"),
        (FLAT, "110.000000001", "127.0000000005", "1.154545455"),
        (FLAT, "120", "132", "1.1"),
    ],
)
def test_graduated(props: dict[str, Any], quantity: str, amount: str, unit_price: str) -> None:
    assert period("graduated", props, quantity) == charge(quantity, unit_price, amount)


def test_graduated_is_exact_at_the_numeric_limit() -> None:
    amount = period("graduated", LADDER, MAX_NUMERIC).amount
    assert amount == EXACT.add(D(500), EXACT.multiply(EXACT.subtract(D(MAX_NUMERIC), 100), 3))


# ---- package --------------------------------------------------------------------------------------------


def pack(size: str, price: str, rounding: str | None = None) -> dict[str, Any]:
    props = {"packageSize": size, "packagePrice": price}
    return props | {"rounding": rounding} if rounding else props


@pytest.mark.parametrize(
    ("props", "quantity", "packages", "amount"),
    [
        # up (the default): a started package is billed whole
        (pack("1000", "5"), "0", "0", "0"),
        (pack("1000", "5"), "1", "1", "5"),
        (pack("1000", "5"), "999", "1", "5"),
        (pack("1000", "5"), "1000", "1", "5"),
        (pack("1000", "5"), "1000.000000001", "2", "10"),
        (pack("1000", "5"), "1001", "2", "10"),
        (pack("1000", "5"), "2500", "3", "15"),
        (pack("1000", "5", "up"), "2000", "2", "10"),
        # down: only complete packages
        (pack("1000", "5", "down"), "0", "0", "0"),
        (pack("1000", "5", "down"), "999.999999999", "0", "0"),
        (pack("1000", "5", "down"), "1000", "1", "5"),
        (pack("1000", "5", "down"), "1999", "1", "5"),
        (pack("1000", "5", "down"), "2500", "2", "10"),
        # fractional sizes and prices stay exact
        (pack("0.5", "0.000000001", "up"), "1.2", "3", "0.000000003"),
        (pack("3", "10", "up"), "10", "4", "40"),  # 10/3 does not terminate; the count is exact
        (pack("3", "10", "down"), "10", "3", "30"),
        (pack("0.000000001", "1", "down"), "0.000000005", "5", "5"),
        (pack("1", "0.01"), MAX_NUMERIC, "1" + "0" * 29, "1" + "0" * 27),
        # a period of net credits mirrors the same consumption
        (pack("1000", "5", "up"), "-1", "-1", "-5"),
        (pack("1000", "5", "down"), "-1", "0", "0"),
        (pack("1000", "5", "down"), "-2500", "-2", "-10"),
    ],
)
def test_package(props: dict[str, Any], quantity: str, packages: str, amount: str) -> None:
    # The line's quantity is the number of packages, its unit price the package price.
    assert period("package", props, quantity) == charge(packages, props["packagePrice"], amount)


def test_package_zero_is_unsigned() -> None:
    result = period("package", pack("1000", "5", "down"), "-1")
    assert str(result.quantity) == "0" and str(result.amount) == "0"


# ---- dynamic (per record, D7) ---------------------------------------------------------------------------

BOUNDS = {"minPrice": "0.1", "maxPrice": "1"}


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([], ("0", "0", "0")),
        ([("10", "0.5")], ("10", "0.5", "5")),
        ([("10", "0.5"), ("2", "0.5")], ("12", "0.5", "6")),  # one shared price shows as is
        ([("10", "0.5"), ("2", "0.75")], ("12", "0.541666667", "6.5")),  # else the mean to 9 places
        ([("1", "0.2"), ("3", "0.6")], ("4", "0.5", "2")),
        ([("3", "0.1"), ("4", "1")], ("7", "0.614285714", "4.3")),  # both bounds are allowed
        ([("0", "0.2"), ("0", "0.3")], ("0", "0", "0")),
        ([("1000000", "0.1")], ("1000000", "0.1", "100000")),
        ([("0.5", "0.333333333")], ("0.5", "0.333333333", "0.1666666665")),
        # the engine holds a reported price to the bounds; a record without one pays minPrice
        ([("10", "5")], ("10", "1", "10")),
        ([("10", "0.01")], ("10", "0.1", "1")),
        ([("10", None)], ("10", "0.1", "1")),
    ],
)
def test_dynamic_period(records: list[tuple[str, str | None]], expected: tuple[str, str, str]) -> None:
    usage = engine(BOUNDS, "dynamic", records)
    assert model_for("dynamic").price_period(BOUNDS, usage) == charge(*expected)


def test_dynamic_tiny_prices() -> None:
    props = {"minPrice": "0.000001", "maxPrice": "0.00002"}
    assert model_for("dynamic").price_record(props, D(1000000), D("0.000012")).amount == 12


@pytest.mark.parametrize("bad", ["1.01", "0.09", "-1", "1.000000001"])
def test_dynamic_record_price_outside_bounds(bad: str) -> None:
    with pytest.raises(PriceOutOfBounds) as raised:
        model_for("dynamic").price_record(BOUNDS, D(1), D(bad))
    message = str(raised.value)
    assert f"price {bad} " in message
    assert "minPrice 0.1" in message and "maxPrice 1" in message
    assert isinstance(raised.value, ValueError)


def test_dynamic_record_needs_a_price() -> None:
    with pytest.raises(PriceOutOfBounds, match="reports no price"):
        model_for("dynamic").price_record(BOUNDS, D(0))
    # Even with no quantity, a bad price is an error.
    with pytest.raises(PriceOutOfBounds, match="price 2 is outside"):
        model_for("dynamic").price_record(BOUNDS, D(0), D(2))


@pytest.mark.parametrize(("price", "amount"), [("0.1", "0.5"), ("1", "5"), ("0.55", "2.75")])
def test_dynamic_record_inside_bounds(price: str, amount: str) -> None:
    assert model_for("dynamic").price_record(BOUNDS, D(5), D(price)) == charge("5", price, amount)


def test_dynamic_rule() -> None:
    assert model_for("dynamic").record_rule(BOUNDS) == RecordRule(
        price_path="$.price", price_min=D("0.1"), price_max=D("1")
    )


# ---- the seam -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "value", "reported", "expected"),
    [
        (RecordRule(factor=D("0.5")), "4", None, "2"),
        (RecordRule(factor=D("0.5"), amount_min=D("3")), "4", None, "3"),
        (RecordRule(factor=D("0.5"), amount_max=D("1")), "4", None, "1"),
        (RecordRule(price_path="$.p", price_min=D("1"), price_max=D("2")), "3", "1.5", "4.5"),
        (RecordRule(price_path="$.p", price_min=D("1"), price_max=D("2")), "3", "9", "6"),
        (RecordRule(price_path="$.p", price_min=D("1"), price_max=D("2")), "3", None, "3"),
        (RecordRule(price_path="$.p"), "3", "7", "21"),  # no bounds
        (RecordRule(factor=D(MAX_NUMERIC)), MAX_NUMERIC, None, MAX_SQUARED),
    ],
)
def test_record_rule_amount(rule: RecordRule, value: str, reported: str | None, expected: Any) -> None:
    assert rule.amount(D(value), None if reported is None else D(reported)) == D(expected)


QUANTITY_PRICED = {
    "standard": {"unitPrice": "2"},
    "volume": LADDER,
    "graduated": FLAT,
    "package": pack("10", "3"),
}


@pytest.mark.parametrize("name", sorted(QUANTITY_PRICED))
def test_quantity_models_have_no_rule_and_price_a_record_as_a_period(name: str) -> None:
    model, props = model_for(name), QUANTITY_PRICED[name]
    assert model.record_rule(props) is None
    for quantity in ("0", "1", "10", "101", "250.5"):
        assert model.price_record(props, D(quantity)) == period(name, props, quantity)


def test_registry() -> None:
    assert set(MODELS) == {"standard", "percentage", "volume", "dynamic", "graduated", "package"}
    assert all(model.name == name for name, model in MODELS.items())
    assert FEE_MODEL == "standard"
    assert [m.name for m in MODELS.values() if m.prices_money] == ["percentage"]
    assert [m.name for m in MODELS.values() if m.discountable] == ["standard"]


@pytest.mark.parametrize("name", ["tiered", "Standard", ""])
def test_unknown_model(name: str) -> None:
    with pytest.raises(PricePropertiesError, match=f"unknown price model {name!r}"):
        model_for(name)


@pytest.mark.parametrize(
    ("model", "properties", "message"),
    [
        ("standard", {}, "'unitPrice' is missing"),
        ("standard", {"unitPrice": 0.5}, "'unitPrice' must be a decimal string"),
        ("standard", {"unitPrice": 1}, "'unitPrice' must be a decimal string"),
        ("standard", {"unitPrice": "1e3"}, "'unitPrice': '1e3' is not a decimal number"),
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
        ("volume", {"parameters": {"gradient": "1", "min": "0", "max": "1"}}, "'default' is missing"),
        ("volume", {"tiers": []}, "non-empty list"),
        ("graduated", {"tiers": [{"upTo": "5", "unitPrice": "1"}]}, "last band"),
        ("graduated", {"tiers": ["x"]}, "'tiers\\[0\\]' must be an object"),
        ("graduated", {"tiers": [{"upTo": None, "unitPrice": "x"}]}, "'tiers\\[0\\].unitPrice'"),
        ("package", pack("0", "1"), "'packageSize' must be greater than 0"),
        ("package", pack("1", "1", "sideways"), "'rounding' must be 'up' or 'down'"),
        ("package", {"packageSize": "1"}, "'packagePrice' is missing"),
    ],
)
def test_stored_properties_that_cannot_be_priced(
    model: str, properties: dict[str, Any], message: str
) -> None:
    with pytest.raises(PricePropertiesError, match=message) as raised:
        period(model, properties, "1")
    assert isinstance(raised.value, ValueError)


def test_stored_percentage_needs_every_bound() -> None:
    with pytest.raises(PricePropertiesError, match="'maxCharge' is missing"):
        model_for("percentage").record_rule({"percentage": "0.05", "minCharge": "0"})


# ---- checking properties (the API's 400 messages) -------------------------------------------------------


def problems(model: str, props: Any) -> dict[str, str]:
    out = Problems()
    model_for(model).check(props, out)
    return {p["field"]: p["message"] for p in out.items}


@pytest.mark.parametrize(
    ("model", "props", "field", "fragment"),
    [
        ("volume", {}, "properties.tiers", "is required for the volume model: a list of bands"),
        ("volume", {"tiers": []}, "properties.tiers", "must be a list of bands"),
        ("volume", {"tiers": "100@5"}, "properties.tiers", "must be a list of bands"),
        ("volume", {"tiers": LADDER["tiers"], "default": "1"}, "properties.tiers", "not both"),
        (
            "volume",
            {
                "tiers": [
                    {"upTo": "100", "unitPrice": "5", "flatPrice": "1"},
                    {"upTo": None, "unitPrice": "3"},
                ]
            },
            "properties.tiers[0].flatPrice",
            "graduated",
        ),
        ("graduated", {}, "properties.tiers", '"flatPrice"?'),
        ("graduated", {"tiers": [7]}, "properties.tiers[0]", "must be an object"),
        ("graduated", {"tiers": [{"unitPrice": "1"}]}, "properties.tiers[0].upTo", "is required"),
        (
            "graduated",
            {"tiers": [{"upTo": None, "unitPrice": "1"}, {"upTo": None, "unitPrice": "1"}]},
            "properties.tiers[0].upTo",
            "only on the last band",
        ),
        (
            "graduated",
            {"tiers": [{"upTo": "5", "unitPrice": "1"}]},
            "properties.tiers[0].upTo",
            "null on the last",
        ),
        (
            "graduated",
            {
                "tiers": [
                    {"upTo": "10", "unitPrice": "1"},
                    {"upTo": "10", "unitPrice": "1"},
                    {"upTo": None, "unitPrice": "1"},
                ]
            },
            "properties.tiers[1].upTo",
            "greater than the previous band's upTo (10)",
        ),
        (
            "graduated",
            {
                "tiers": [
                    {"upTo": "10", "unitPrice": "1"},
                    {"upTo": "9.5", "unitPrice": "1"},
                    {"upTo": None, "unitPrice": "1"},
                ]
            },
            "properties.tiers[1].upTo",
            "greater than the previous band's upTo (10)",
        ),
        (
            "graduated",
            {"tiers": [{"upTo": "0", "unitPrice": "1"}, {"upTo": None, "unitPrice": "1"}]},
            "properties.tiers[0].upTo",
            "greater than 0",
        ),
        (
            "graduated",
            {"tiers": [{"upTo": 10, "unitPrice": "1"}, {"upTo": None, "unitPrice": "1"}]},
            "properties.tiers[0].upTo",
            "not a JSON number",
        ),
        (
            "graduated",
            {"tiers": [{"upTo": None}]},
            "properties.tiers[0].unitPrice",
            "required for the graduated",
        ),
        (
            "graduated",
            {"tiers": [{"upTo": None, "unitPrice": "-1"}]},
            "properties.tiers[0].unitPrice",
            "negative",
        ),
        (
            "graduated",
            {"tiers": [{"upTo": None, "unitPrice": "1", "flatPrice": "1e2"}]},
            "properties.tiers[0].flatPrice",
            "decimal",
        ),
        ("graduated", {"tiers": [{"upTo": None, "unitPrice": "1"}] * 101}, "properties.tiers", "at most 100"),
        ("package", {}, "properties.packageSize", "required for the package model"),
        ("package", {}, "properties.packagePrice", "required for the package model"),
        ("package", pack("0", "1"), "properties.packageSize", "greater than 0"),
        ("package", pack("-1", "1"), "properties.packageSize", "negative"),
        ("package", pack("10", "0.0000000001"), "properties.packagePrice", "decimal places"),
        ("package", pack("10", "1", "nearest"), "properties.rounding", '"up"'),
        ("package", pack("10", "1") | {"rounding": None}, "properties.rounding", '"down"'),
    ],
)
def test_check_reports_the_field(model: str, props: Any, field: str, fragment: str) -> None:
    found = problems(model, props)
    assert fragment in found.get(field, ""), found


@pytest.mark.parametrize(
    ("model", "props", "stored"),
    [
        ("volume", LADDER | {"unitPrice": "5"}, LADDER),  # the compatibility field is read-only
        ("graduated", FLAT | {"x": 1}, FLAT),
        ("package", pack("1000", "5"), pack("1000", "5", "up")),  # rounding is stored explicitly
        ("package", pack("1000", "5", "down"), pack("1000", "5", "down")),
        (
            "volume",
            {
                "default": "1",
                "parameters": {"function": "linear", "gradient": "0", "min": "0", "max": "1"},
                "tiers": [],
            },
            {"default": "1", "parameters": {"function": "linear", "gradient": "0", "min": "0", "max": "1"}},
        ),
    ],
)
def test_check_stores_what_the_model_needs(model: str, props: dict[str, Any], stored: dict[str, Any]) -> None:
    out = Problems()
    assert model_for(model).check(props, out) == stored
    assert out.items == []


@pytest.mark.parametrize(
    ("model", "props", "unit_price"),
    [
        ("volume", LADDER, "5"),
        ("graduated", FLAT, "0"),
        ("package", pack("1000", "5", "up"), "0.005"),
        ("package", pack("3", "10", "up"), "3.333333333"),
    ],
)
def test_view_adds_the_compatibility_unit_price(model: str, props: dict[str, Any], unit_price: str) -> None:
    assert model_for(model).view(props) == props | {"unitPrice": unit_price}


def test_view_of_a_linear_volume_price_carries_empty_tiers() -> None:
    props = {"default": "1", "parameters": {"function": "linear", "gradient": "0", "min": "0", "max": "1"}}
    assert model_for("volume").view(props) == props | {"tiers": []}


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
