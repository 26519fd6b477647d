from __future__ import annotations

from decimal import Decimal

import pytest

from domain.money import (
    MoneyFormatError,
    format_amount,
    from_nanos,
    is_currency_code,
    minor_units,
    parse_decimal,
    round_money,
    to_minor_units,
    to_nanos,
)

D = Decimal
LARGEST = "9" * 29 + "." + "9" * 9  # NUMERIC(38, 9) at its limit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", D("0")),
        ("0.0", D("0.0")),
        ("10", D("10")),
        ("10.50", D("10.50")),
        ("0.000012", D("0.000012")),
        ("0.000000001", D("0.000000001")),
        ("123456789.123456789", D("123456789.123456789")),
        ("-5", D("-5")),
        ("-0.5", D("-0.5")),
        ("1.000000000", D("1")),
        (LARGEST, D(LARGEST)),
        ("-" + LARGEST, D("-" + LARGEST)),
    ],
)
def test_parse_decimal_accepts(text: str, expected: Decimal) -> None:
    value = parse_decimal(text)
    assert value == expected
    # Kept exactly as written: the scale is part of the value ("10.50" stays two places).
    assert format_amount(value) == text


@pytest.mark.parametrize("text", ["-0", "-0.0", "-0.000000000"])
def test_parse_decimal_negative_zero_is_plain_zero(text: str) -> None:
    value = parse_decimal(text)
    assert value == 0
    assert not value.is_signed()
    assert not format_amount(value).startswith("-")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1e3", "is not a decimal number"),
        ("1E3", "is not a decimal number"),
        ("1.5e-2", "is not a decimal number"),
        ("0E-9", "is not a decimal number"),
        ("01", "is not a decimal number"),
        ("00.5", "is not a decimal number"),
        ("007", "is not a decimal number"),
        ("-01", "is not a decimal number"),
        (".5", "is not a decimal number"),
        ("5.", "is not a decimal number"),
        ("+5", "is not a decimal number"),
        ("--5", "is not a decimal number"),
        ("", "is not a decimal number"),
        ("-", "is not a decimal number"),
        (" 1", "is not a decimal number"),
        ("1 ", "is not a decimal number"),
        ("1\n", "is not a decimal number"),
        ("\t1", "is not a decimal number"),
        ("1 000", "is not a decimal number"),
        ("1,5", "is not a decimal number"),
        ("1_000", "is not a decimal number"),
        ("NaN", "is not a decimal number"),
        ("Infinity", "is not a decimal number"),
        ("-inf", "is not a decimal number"),
        ("0x10", "is not a decimal number"),
        ("١٢", "is not a decimal number"),  # Arabic-Indic digits, which Decimal() would accept
        ("１２", "is not a decimal number"),  # fullwidth digits
        ("$10", "is not a decimal number"),
        ("10 USD", "is not a decimal number"),
        (10, "is not a decimal number"),
        (0, "is not a decimal number"),
        (10.5, "is not a decimal number"),
        (True, "is not a decimal number"),
        (None, "is not a decimal number"),
        (D("10.5"), "is not a decimal number"),
        (b"10", "is not a decimal number"),
        ("0.0000000001", "more than 9 decimal places"),
        ("1.1234567890", "more than 9 decimal places"),
        ("1.0000000000", "more than 9 decimal places"),
        ("1" * 30, "more than 29 integer digits"),
        ("-" + "1" * 30 + ".5", "more than 29 integer digits"),
    ],
)
def test_parse_decimal_rejects(value: object, message: str) -> None:
    with pytest.raises(MoneyFormatError, match=message):
        parse_decimal(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "places", "ok"),
    [("1.23", 2, True), ("1.234", 2, False), ("5", 0, True), ("5.0", 0, False), ("0.1234", 4, True)],
)
def test_parse_decimal_max_fraction_digits(text: str, places: int, ok: bool) -> None:
    if ok:
        assert parse_decimal(text, max_fraction_digits=places) == D(text)
    else:
        with pytest.raises(MoneyFormatError, match=f"more than {places} decimal places"):
            parse_decimal(text, max_fraction_digits=places)


@pytest.mark.parametrize(
    ("code", "ok"),
    [("USD", True), ("EUR", True), ("XYZ", True), ("usd", False), ("US", False), ("USDT", False),
     ("US1", False), ("", False), ("USD\n", False), (" USD", False), (None, False)],
)  # fmt: skip
def test_is_currency_code(code: str, ok: bool) -> None:
    assert is_currency_code(code) is ok


@pytest.mark.parametrize(
    ("currency", "places"),
    [("USD", 2), ("EUR", 2), ("GBP", 2), ("usd", 2), ("JPY", 0), ("KRW", 0), ("jpy", 0), ("VND", 0),
     ("KWD", 3), ("BHD", 3), ("OMR", 3), ("TND", 3), ("XXX", 2), ("ABC", 2)],
)  # fmt: skip
def test_minor_units(currency: str, places: int) -> None:
    assert minor_units(currency) == places


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1.005", "USD", "1.01"),
        ("1.004999999", "USD", "1.00"),
        ("1.015", "USD", "1.02"),  # half-up, not banker's (half-even would give 1.02 here too)
        ("1.025", "USD", "1.03"),  # half-even would give 1.02
        ("2.5", "JPY", "3"),
        ("3.5", "JPY", "4"),
        ("0.5", "JPY", "1"),  # half-even would give 0
        ("0.4999", "KRW", "0"),
        ("1.0005", "KWD", "1.001"),
        ("1.0004", "BHD", "1.000"),
        ("0.005", "EUR", "0.01"),
        ("0.004999999", "EUR", "0.00"),
        ("10", "USD", "10.00"),
        ("10", "KWD", "10.000"),
        ("10.50", "JPY", "11"),
        ("0.000000001", "USD", "0.00"),
        ("0.125", "ZZZ", "0.13"),  # unknown currency: 2 places
        # Negatives round half away from zero.
        ("-1.005", "USD", "-1.01"),
        ("-1.004", "USD", "-1.00"),
        ("-0.5", "JPY", "-1"),
        ("-2.5", "JPY", "-3"),
        ("-1.0005", "KWD", "-1.001"),
        # A negative amount that rounds to zero is zero, never "-0.00".
        ("-0.001", "USD", "0.00"),
        ("-0.4", "JPY", "0"),
        (LARGEST, "USD", "1" + "0" * 29 + ".00"),  # beyond 28 digits: no InvalidOperation, no rounding
        ("12345678901234567890123456789.125", "USD", "12345678901234567890123456789.13"),
    ],
)
def test_round_money_half_up(amount: str, currency: str, expected: str) -> None:
    result = round_money(D(amount), currency)
    assert format_amount(result) == expected
    assert result == D(expected)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("10.50", "USD", 1050),
        ("1.005", "USD", 101),
        ("-1.005", "USD", -101),
        ("0.004", "USD", 0),
        ("-0.004", "USD", 0),
        ("1000", "JPY", 1000),
        ("999.5", "JPY", 1000),
        ("1.2345", "KWD", 1235),
        ("0", "EUR", 0),
        ("12345678901234567890123456789.99", "USD", 1234567890123456789012345678999),
    ],
)
def test_to_minor_units(amount: str, currency: str, minor: int) -> None:
    result = to_minor_units(D(amount), currency)
    assert result == minor
    assert type(result) is int


@pytest.mark.parametrize(
    ("amount", "nanos"),
    [
        ("0", 0),
        ("1", 1_000_000_000),
        ("0.000000001", 1),
        ("-0.000000001", -1),
        ("10.50", 10_500_000_000),
        ("123456789.123456789", 123_456_789_123_456_789),
        ("1.0000000000000", 1_000_000_000),  # trailing zeros beyond 9 places are still exact
        (LARGEST, int("9" * 38)),
        ("12345678901234567890.123456789", 12345678901234567890123456789),  # > 28 digits
    ],
)
def test_nanos_round_trip_exactly(amount: str, nanos: int) -> None:
    assert to_nanos(D(amount)) == nanos
    back = from_nanos(nanos)
    assert back == D(amount)
    assert back.as_tuple().exponent == -9
    assert "E" not in format_amount(back)


@pytest.mark.parametrize(
    "amount", ["0.0000000001", "1.1234567891", "-0.0000000005", "1E-10", "NaN", "Infinity", "-Infinity"]
)
def test_to_nanos_rejects_amounts_it_cannot_hold_exactly(amount: str) -> None:
    with pytest.raises(MoneyFormatError):
        to_nanos(D(amount))


@pytest.mark.parametrize("value", [1.5, "1", D("1"), None])
def test_from_nanos_requires_an_int(value: object) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        from_nanos(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (D("1E+3"), "1000"),
        (D("1E-9"), "0.000000001"),
        (D("1E-12"), "0.000000000001"),
        (D("0E-9"), "0.000000000"),
        (D("-0E-9"), "0.000000000"),
        (D("-0.00"), "0.00"),
        (D("-0"), "0"),
        (D("12.3400"), "12.3400"),
        (D("-7.5"), "-7.5"),
        (D("1.5E+30"), "1500000000000000000000000000000"),
        (from_nanos(1), "0.000000001"),
        (from_nanos(0), "0.000000000"),
        (D(LARGEST), LARGEST),
    ],
)
def test_format_amount_never_uses_exponent_form(amount: Decimal, text: str) -> None:
    assert format_amount(amount) == text
