from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal, localcontext
from typing import Any

import pytest

from domain.invoice import InvoiceTotals, LineInput, PricedLine, assemble, price_line, verify
from domain.money import minor_units, round_money
from domain.tax import fraction, split

D = Decimal


def line(amount: str, percent: str = "0", behavior: str = "exclusive", key: str = "l1") -> LineInput:
    return LineInput(
        key=key,
        description=f"line {key}",
        quantity=D(1),
        unit_price=D(amount),
        amount=D(amount),
        tax_rate_percent=D(percent),
        tax_behavior=behavior,
    )


@pytest.mark.parametrize(
    ("currency", "amount", "percent", "behavior", "subtotal", "tax", "total"),
    [
        # USD, exclusive: round the amount, then tax on the rounded subtotal
        ("USD", "10.00", "8.875", "exclusive", "10.00", "0.89", "10.89"),
        ("USD", "1.05", "10", "exclusive", "1.05", "0.11", "1.16"),  # 0.105 rounds half up
        ("USD", "2.675", "0", "exclusive", "2.68", "0.00", "2.68"),
        ("USD", "0.004", "10", "exclusive", "0.00", "0.00", "0.00"),
        ("USD", "0.005", "10", "exclusive", "0.01", "0.00", "0.01"),
        ("USD", "12", "20", "exclusive", "12.00", "2.40", "14.40"),  # 1e6 tokens × 0.000012
        ("USD", "0.000012", "20", "exclusive", "0.00", "0.00", "0.00"),
        ("USD", "129.30", "0", "exclusive", "129.30", "0.00", "129.30"),
        # tax on the rounded 1.01, not on 1.006: 0.505 → 0.51 (the exact 0.503 would give 0.50)
        ("USD", "1.006", "50", "exclusive", "1.01", "0.51", "1.52"),
        ("USD", "-5.005", "10", "exclusive", "-5.01", "-0.50", "-5.51"),  # discounts round away from zero
        ("USD", "-0.004", "10", "exclusive", "0.00", "0.00", "0.00"),
        # USD, inclusive: the gross is rounded and kept; tax is carved out of it
        ("USD", "10.00", "8.875", "inclusive", "9.18", "0.82", "10.00"),
        ("USD", "9.999", "8.875", "inclusive", "9.18", "0.82", "10.00"),
        ("USD", "100", "20", "inclusive", "83.33", "16.67", "100.00"),
        ("USD", "11", "10", "inclusive", "10.00", "1.00", "11.00"),
        ("USD", "1.00", "100", "inclusive", "0.50", "0.50", "1.00"),
        ("USD", "0.01", "8.875", "inclusive", "0.01", "0.00", "0.01"),
        ("USD", "0.05", "10", "inclusive", "0.05", "0.00", "0.05"),  # 0.004545… of tax rounds to 0
        ("USD", "0.06", "10", "inclusive", "0.05", "0.01", "0.06"),  # 0.005454… rounds to 0.01
        ("USD", "50", "0", "inclusive", "50.00", "0.00", "50.00"),
        ("USD", "-11", "10", "inclusive", "-10.00", "-1.00", "-11.00"),
        # JPY has no minor unit
        ("JPY", "1234.5", "10", "exclusive", "1235", "124", "1359"),
        ("JPY", "12", "8", "exclusive", "12", "1", "13"),
        ("JPY", "0.4", "10", "exclusive", "0", "0", "0"),
        ("JPY", "1000", "10", "inclusive", "909", "91", "1000"),
        ("JPY", "1000.5", "10", "inclusive", "910", "91", "1001"),
        # KWD has three decimal places
        ("KWD", "1.2345", "5", "exclusive", "1.235", "0.062", "1.297"),
        ("KWD", "10", "5", "inclusive", "9.524", "0.476", "10.000"),
        ("KWD", "0.0004", "5", "exclusive", "0.000", "0.000", "0.000"),
        ("KWD", "0.0005", "5", "exclusive", "0.001", "0.000", "0.001"),
    ],
)
def test_price_line(
    currency: str, amount: str, percent: str, behavior: str, subtotal: str, tax: str, total: str
) -> None:
    priced = price_line(line(amount, percent, behavior), currency)
    # Compared as text: the scale must be the currency's (10.00, 1359, 10.000).
    assert (str(priced.subtotal), str(priced.tax), str(priced.total)) == (subtotal, tax, total)
    assert priced.tax_rate == fraction(D(percent))
    assert priced.amount == D(amount)
    assert priced.subtotal + priced.tax == priced.total


@pytest.mark.parametrize(
    ("percent", "expected"), [("10", "0.10"), ("8.875", "0.08875"), ("0", "0"), ("100", "1")]
)
def test_line_tax_rate_is_a_fraction(percent: str, expected: str) -> None:
    assert price_line(line("1", percent), "USD").tax_rate == D(expected)


def test_price_line_keeps_the_input_fields() -> None:
    source = LineInput("k", "Tokens", D(1000000), D("0.000012"), D(12), D(10), "exclusive")
    priced = price_line(source, "USD")
    assert (priced.key, priced.description, priced.quantity, priced.unit_price, priced.tax_behavior) == (
        "k",
        "Tokens",
        D(1000000),
        D("0.000012"),
        "exclusive",
    )


@pytest.mark.parametrize("behavior", ["Exclusive", "", "gross"])
def test_unknown_tax_behavior(behavior: str) -> None:
    with pytest.raises(ValueError, match="line 'l1': unknown tax behavior"):
        assemble([line("1", "10", behavior)], "USD")


def test_totals_are_sums_of_rounded_lines() -> None:
    # Three lines of 0.004: each rounds to 0.00, so the invoice is 0.00 (rounding the sum would give 0.01).
    tiny = assemble([line("0.004", key=str(i)) for i in range(3)], "USD")
    assert (tiny.subtotal, tiny.total_tax, tiny.grand_total) == (D("0.00"), D("0.00"), D("0.00"))
    # Three lines of 1.05 at 10 %: each tax is 0.11, so 0.33 (taxing the 3.15 subtotal would give 0.32).
    taxed = assemble([line("1.05", "10", key=str(i)) for i in range(3)], "USD")
    assert (str(taxed.subtotal), str(taxed.total_tax), str(taxed.grand_total)) == ("3.15", "0.33", "3.48")
    assert verify(tiny) and verify(taxed)


def test_assemble_mixed_invoice() -> None:
    totals = assemble(
        [
            line("12", "20", "exclusive", "tokens"),
            line("10.00", "8.875", "inclusive", "seat"),
            line("-2.005", "20", "exclusive", "discount"),
        ],
        "USD",
    )
    assert [(str(x.subtotal), str(x.tax), str(x.total)) for x in totals.lines] == [
        ("12.00", "2.40", "14.40"),
        ("9.18", "0.82", "10.00"),
        ("-2.01", "-0.40", "-2.41"),
    ]
    assert (str(totals.subtotal), str(totals.total_tax), str(totals.grand_total)) == (
        "19.17",
        "2.82",
        "21.99",
    )
    assert totals.currency == "USD"
    assert [x.key for x in totals.lines] == ["tokens", "seat", "discount"]
    assert verify(totals)


@pytest.mark.parametrize(("currency", "zero"), [("USD", "0.00"), ("JPY", "0"), ("KWD", "0.000")])
def test_empty_invoice(currency: str, zero: str) -> None:
    totals = assemble([], currency)
    assert totals.lines == []
    assert (str(totals.subtotal), str(totals.total_tax), str(totals.grand_total)) == (zero, zero, zero)
    assert verify(totals)


def _tamper_line(totals: InvoiceTotals, **changes: Any) -> InvoiceTotals:
    return replace(totals, lines=[replace(totals.lines[0], **changes), *totals.lines[1:]])


SAMPLE = assemble([line("10.00", "8.875", "inclusive", "a"), line("1.05", "10", "exclusive", "b")], "USD")


@pytest.mark.parametrize(
    "tampered",
    [
        replace(SAMPLE, grand_total=SAMPLE.grand_total + D("0.01")),
        replace(SAMPLE, subtotal=SAMPLE.subtotal - D("0.01")),
        replace(SAMPLE, total_tax=D(0)),
        replace(SAMPLE, lines=SAMPLE.lines[:1]),  # a line dropped, totals left as they were
        replace(SAMPLE, currency="JPY"),  # lines not rounded to yen
        _tamper_line(SAMPLE, tax=D("0.81"), subtotal=D("9.19")),  # adds up, but is not the line's rounding
        _tamper_line(SAMPLE, total=D("10.01")),
        _tamper_line(SAMPLE, amount=D("11.00")),
        _tamper_line(SAMPLE, tax_rate=D("0.1")),
        _tamper_line(SAMPLE, subtotal=D("9.184")),
    ],
)
def test_verify_detects_inconsistent_invoices(tampered: InvoiceTotals) -> None:
    assert verify(SAMPLE)
    assert not verify(tampered)


CURRENCIES = ["USD", "EUR", "JPY", "KWD", "CLP", "BHD"]
PERCENTS = ["0", "5", "7.25", "8.875", "10", "19.6", "20", "25", "100", "0.0001", "33.3333"]


def _random_line(rng: random.Random, key: str) -> LineInput:
    # Mostly positive charges, some credits, spanning tiny usage amounts to large fees at up to 9 places.
    amount = D(rng.randint(-(10**7), 10**11)).scaleb(-rng.choice([0, 1, 2, 3, 4, 6, 9]))
    quantity = D(rng.randint(0, 10**6))
    return LineInput(
        key=key,
        description=key,
        quantity=quantity,
        unit_price=amount,
        amount=amount,
        tax_rate_percent=D(rng.choice(PERCENTS)),
        tax_behavior=rng.choice(["exclusive", "inclusive"]),
    )


def _check_line(source: LineInput, priced: PricedLine, currency: str) -> None:
    places = minor_units(currency)
    half = D(5).scaleb(-(places + 1))
    for value in (priced.subtotal, priced.tax, priced.total):
        assert value.as_tuple().exponent == -places, (currency, value)
    assert priced.subtotal + priced.tax == priced.total
    # The merchant's amount is rounded once, by at most half a minor unit ...
    base = priced.subtotal if source.tax_behavior == "exclusive" else priced.total
    assert abs(base - source.amount) <= half
    # ... and the tax is within half a minor unit of the exact tax on that rounded amount.
    with localcontext(prec=200):
        _, exact_tax = split(base, source.tax_rate_percent, source.tax_behavior)
        assert abs(priced.tax - exact_tax) <= half


@pytest.mark.parametrize("seed", range(6))
def test_generated_invoices_verify(seed: int) -> None:
    rng = random.Random(seed)
    for n in range(50):  # 6 seeds × 50 = 300 invoices
        currency = rng.choice(CURRENCIES)
        sources = [_random_line(rng, f"{n}-{i}") for i in range(rng.randint(0, 12))]
        totals = assemble(sources, currency)
        assert verify(totals)
        assert len(totals.lines) == len(sources)
        for source, priced in zip(sources, totals.lines, strict=True):
            assert priced.key == source.key
            _check_line(source, priced, currency)
        assert totals.subtotal == sum((x.subtotal for x in totals.lines), D(0))
        assert totals.total_tax == sum((x.tax for x in totals.lines), D(0))
        assert totals.grand_total == totals.subtotal + totals.total_tax
        assert totals.grand_total == sum((x.total for x in totals.lines), D(0))
        assert totals.grand_total == round_money(totals.grand_total, currency)
