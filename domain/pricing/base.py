"""What every price model shares: the Charge it produces, its errors, the pricing ⇄ aggregation seam
(RecordRule, PeriodUsage) that db/ compiles to SQL, and the checks its properties are validated with.

Nothing here rounds: amounts stay exact until the invoice rounds each line (D13, domain.invoice).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from domain.money import EXACT, MoneyFormatError, format_amount, parse_decimal


class PriceOutOfBounds(ValueError):
    """A price reported on one record lies outside the price's bounds (dynamic: [minPrice, maxPrice])."""


class PricePropertiesError(ValueError):
    """Stored price properties that cannot be priced (missing key, not a decimal string, unknown model)."""


@dataclass(frozen=True, slots=True)
class Charge:
    """A priced period (or record) of one price: `amount` is exact; `unit_price` is what the line shows per
    unit of `quantity`."""

    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class RecordRule:
    """How a per-record price model prices one meter event; db/ compiles it to SQL, domain/ applies it in
    Python for single records. amount(record) = clamp(value × price, amount_min, amount_max), where
    price = factor when price_path is None, else the number at price_path held to [price_min, price_max]
    (missing or not a number → price_min). A None bound is no bound."""

    factor: Decimal | None = None
    price_path: str | None = None
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None

    def price(self, reported: Decimal | None = None) -> Decimal:
        """The price one record is charged at, given the price it reported (if the rule reads one)."""
        if self.price_path is None:
            return self.factor if self.factor is not None else Decimal(0)
        price = reported if reported is not None else self.price_min
        if price is None:
            raise PricePropertiesError("a record without a price needs the rule's price_min")
        return _bounded(price, self.price_min, self.price_max)

    def amount(self, value: Decimal, reported: Decimal | None = None) -> Decimal:
        """amount(record), exactly as the SQL engine computes it."""
        return _bounded(EXACT.multiply(value, self.price(reported)), self.amount_min, self.amount_max)


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    """What the aggregation engine reports for one metered price over one period."""

    quantity: Decimal  # the billable metric's aggregation (SUM, COUNT, AVG, …) over the period
    record_values: Decimal = Decimal(0)  # Σ record values (read only when the model has a RecordRule)
    record_amount: Decimal = Decimal(0)  # Σ amount(record) under the model's RecordRule
    record_price: Decimal | None = None  # the one price every record shares; None when they differ or none


def _bounded(value: Decimal, low: Decimal | None, high: Decimal | None) -> Decimal:
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return value


def clamp(value: Decimal, low: Decimal, high: Decimal) -> Decimal:
    """`value` held to [low, high]."""
    if low > high:
        raise ValueError(
            f"lower bound {format_amount(low)} is greater than upper bound {format_amount(high)}"
        )
    return min(max(value, low), high)


@dataclass(frozen=True, slots=True)
class Rate:
    """What units cost, as a page shows it: `price` per `per` units. A `share` is a fraction of each money
    amount (0.029: 2.9 %); `average` when the units of a period cost different amounts."""

    price: Decimal
    per: Decimal = Decimal(1)
    share: bool = False
    average: bool = False


class Problems:
    """Field errors collected across every rule, so one response lists all of them."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, message: str, code: str = "invalid") -> None:
        self.items.append({"field": field, "message": message, "code": code})


class PriceModel(ABC):
    """One price model: how its properties are checked and shown, and how it prices a period or a record.

    A model priced per record (percentage, dynamic) has a RecordRule; the aggregation engine sums records
    under it and `price_period` reads those sums. A model priced from the period quantity has none.
    """

    name: ClassVar[str]
    # What else a price of this model may be (the API's rules; see api/schemas/prices.py).
    fee_capable: ClassVar[bool] = False  # may price a fee (fee prices have exactly one model)
    discountable: ClassVar[bool] = False  # grantDiscountEnabled may be true
    prices_money: ClassVar[bool] = False  # charges a share of money amounts: its metric's unit is a currency

    @abstractmethod
    def check(self, props: Mapping[str, Any], out: Problems, path: str = "properties") -> dict[str, Any]:
        """The properties to store, as the caller's strings (unrelated keys dropped); problems go to `out`
        with the API's field messages."""

    def view(self, props: Mapping[str, Any]) -> dict[str, Any]:
        """Stored properties as the API shows them (a model may add read-only compatibility fields)."""
        return dict(props)

    def record_rule(self, props: Mapping[str, Any]) -> RecordRule | None:
        return None

    def rate(self, props: Mapping[str, Any], charge: Charge) -> Rate:
        """What a priced period's units cost, for a person (the portal's estimate)."""
        exact = EXACT.multiply(charge.quantity, charge.unit_price) == charge.amount
        return Rate(charge.unit_price, average=not exact)

    @abstractmethod
    def price_period(self, props: Mapping[str, Any], usage: PeriodUsage) -> Charge:
        """A period of usage, priced."""

    def price_record(
        self, props: Mapping[str, Any], quantity: Decimal, price: Decimal | None = None
    ) -> Charge:
        """One record on its own (a legacy usage event, an approved source event): a quantity and, for
        models that read one, the price it reports."""
        return self.price_period(props, PeriodUsage(quantity=quantity))


class RecordPricedModel(PriceModel):
    """A model whose every record is priced by its RecordRule, the period being the sum of its records."""

    @abstractmethod
    def record_rule(self, props: Mapping[str, Any]) -> RecordRule: ...

    @abstractmethod
    def shown_price(self, props: Mapping[str, Any], usage: PeriodUsage) -> Decimal:
        """The unit price a period's line shows."""

    def price_period(self, props: Mapping[str, Any], usage: PeriodUsage) -> Charge:
        return Charge(usage.record_values, self.shown_price(props, usage), usage.record_amount)

    def price_record(
        self, props: Mapping[str, Any], quantity: Decimal, price: Decimal | None = None
    ) -> Charge:
        rule = self.record_rule(props)
        amount = rule.amount(quantity, price)
        return Charge(quantity, rule.price(price), amount)


# ---- reading stored properties ---------------------------------------------------------------------------


def decimal_prop(props: Mapping[str, Any], key: str, label: str | None = None) -> Decimal:
    """A stored decimal property; PricePropertiesError when it is missing or not a decimal string."""
    value = props.get(key)
    name = label or key
    if value is None:
        raise PricePropertiesError(f"price property {name!r} is missing")
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise PricePropertiesError(f"price property {name!r} must be a decimal string, got {value!r}")
    try:
        return _parse_stored(value)
    except MoneyFormatError as exc:
        raise PricePropertiesError(f"price property {name!r}: {exc}") from exc


# Stored properties are few distinct strings read once per invoice and price (a /v2/invoices page prices
# every invoice again); Decimals are immutable, so one parse of each serves them all.
_parse_stored = functools.lru_cache(maxsize=4096)(parse_decimal)


# ---- checking properties sent to the API -----------------------------------------------------------------

_JSON_TYPES = (
    (bool, "boolean"), (int, "number"), (float, "number"), (str, "string"), (dict, "object"), (list, "array")
)  # fmt: skip


def json_type(value: object) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), "value")


def check_amount(
    props: Mapping[str, Any], key: str, path: str, model: str, out: Problems, *, signed: bool = False
) -> Decimal | None:
    """A required decimal-string property; None (and a problem) when it is missing or malformed."""
    field = f"{path}.{key}"
    value = props.get(key)
    if value is None:
        out.add(field, f"is required for the {model} model", "missing")
        return None
    if not isinstance(value, str):
        out.add(
            field,
            f'must be a decimal written as a string, such as "0.05", not a JSON {json_type(value)}',
            "string_type",
        )
        return None
    try:
        amount = parse_decimal(value)
    except MoneyFormatError as exc:
        out.add(field, str(exc))
        return None
    if amount < 0 and not signed:
        out.add(field, "must not be negative")
        return None
    return amount


def check_ordered(low: Decimal | None, high: Decimal | None, field: str, other: str, out: Problems) -> None:
    if low is not None and high is not None and low > high:
        out.add(field, f"must not be greater than {other}")
