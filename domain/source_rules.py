"""Auto-approval rules of a source (behavior §9.4, D17): validating conditions and evaluating them against an
imported invoice. Pure: the API validates with `condition_errors`, the import activity calls `evaluate`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.money import MoneyFormatError, parse_decimal

MAX_RULES_PER_SOURCE = 10
MAX_CONDITIONS_PER_RULE = 10
CONDITION_TYPES = ("date", "customerName", "customerEmail", "amount")
OPERATORS = ("equals", "contains", "between", "greaterThan", "lessThan", "domain")

# Which operator applies to which condition type (behavior §9.4).
APPLICABLE: Mapping[str, tuple[str, ...]] = {
    "equals": CONDITION_TYPES,
    "contains": ("customerName", "customerEmail"),
    "domain": ("customerEmail",),
    "greaterThan": ("amount", "date"),
    "lessThan": ("amount", "date"),
    "between": ("amount", "date"),
}
_CONDITION_KEYS = frozenset({"type", "operator", "value"})
_DATE_HINT = 'a date like "2026-01-15" or a date and time like "2026-01-15T10:00:00Z"'
_AMOUNT_HINT = 'an amount in major currency units, as a number or a decimal string like "100.50"'


class _BadValue(ValueError):
    """A condition value of the wrong shape; the message says what to send instead."""


# --- parsing values -------------------------------------------------------------------------------------


def _amount(value: object) -> Decimal:
    # JSON numbers arrive as int or float; their shortest repr is the text the caller wrote, so the Decimal
    # is exact (no float arithmetic anywhere).
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _BadValue(f"must be {_AMOUNT_HINT}")
    text = value if isinstance(value, str) else format(Decimal(repr(value)), "f")
    try:
        amount = parse_decimal(text.strip())
    except MoneyFormatError:
        raise _BadValue(f"must be {_AMOUNT_HINT}; got {value!r}") from None
    if amount < 0:
        raise _BadValue(f"must be 0 or more (amounts are what the customer was paid); got {value!r}")
    return amount


def _date(value: object) -> dt.date | dt.datetime:
    """A calendar day (compared by UTC day) or an instant (naive means UTC)."""
    if not isinstance(value, str) or not value.strip():
        raise _BadValue(f"must be {_DATE_HINT}")
    text = value.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _BadValue(f"must be {_DATE_HINT}; got {value!r}") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _BadValue("must be non-empty text")
    return value.strip()


def _domain(value: object) -> str:
    text = _text(value).removeprefix("@").lower()
    if not text or "@" in text or any(c.isspace() for c in text) or text.startswith(".") or "." not in text:
        raise _BadValue(f'must be an email domain like "@trusted.com" or "trusted.com"; got {value!r}')
    return text


def _scalar(kind: str, operator: str, value: object) -> object:
    if operator == "domain":
        return _domain(value)
    if kind == "amount":
        return _amount(value)
    if kind == "date":
        return _date(value)
    return _text(value)


def _lower_instant(bound: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(bound, dt.datetime):
        return bound
    return dt.datetime.combine(bound, dt.time.min, dt.UTC)


def _upper_instant(bound: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(bound, dt.datetime):
        return bound
    return dt.datetime.combine(bound, dt.time.max, dt.UTC)


def _parse(condition: Mapping[str, Any]) -> tuple[str, str, object]:
    """(type, operator, parsed value); raises _BadValue with a message for the condition's `value`."""
    kind, operator, value = condition["type"], condition["operator"], condition["value"]
    if operator != "between":
        if isinstance(value, Mapping):
            raise _BadValue(f'a {{"from", "to"}} range is only for the between operator, not {operator}')
        return kind, operator, _scalar(kind, operator, value)
    if not isinstance(value, Mapping) or set(value) != {"from", "to"}:
        raise _BadValue('between needs a range: {"from": …, "to": …}')
    low, high = _scalar(kind, operator, value["from"]), _scalar(kind, operator, value["to"])
    if kind == "date":
        assert isinstance(low, (dt.date, dt.datetime)) and isinstance(high, (dt.date, dt.datetime))
        if _lower_instant(low) > _upper_instant(high):
            raise _BadValue(f"from ({value['from']}) must not be after to ({value['to']})")
    elif low > high:  # type: ignore[operator]  # both Decimal: amount is the only other kind between allows
        raise _BadValue(f"from ({value['from']}) must not be greater than to ({value['to']})")
    return kind, operator, (low, high)


# --- validation ------------------------------------------------------------------------------------------


def condition_errors(conditions: Sequence[object]) -> list[tuple[str, str]]:
    """Every problem of a rule's conditions as (field, message); empty when they are valid."""
    if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Sequence):
        return [("conditions", "must be a list of conditions")]
    if not 1 <= len(conditions) <= MAX_CONDITIONS_PER_RULE:
        return [
            ("conditions", f"a rule has 1 to {MAX_CONDITIONS_PER_RULE} conditions; got {len(conditions)}")
        ]
    errors: list[tuple[str, str]] = []
    for index, condition in enumerate(conditions):
        errors.extend(_one_condition_errors(f"conditions[{index}]", condition))
    return errors


def _one_condition_errors(field: str, condition: object) -> list[tuple[str, str]]:
    if not isinstance(condition, Mapping):
        return [(field, 'must be an object {"type", "operator", "value"}')]
    errors = [
        (f"{field}.{key}", "is not a condition field; a condition has type, operator and value")
        for key in sorted(set(condition) - _CONDITION_KEYS, key=str)
    ]
    errors.extend(
        (f"{field}.{key}", "is required") for key in ("type", "operator", "value") if key not in condition
    )
    kind, operator = condition.get("type"), condition.get("operator")
    if "type" in condition and kind not in CONDITION_TYPES:
        errors.append((f"{field}.type", f"must be one of {', '.join(CONDITION_TYPES)}; got {kind!r}"))
    if "operator" in condition and operator not in OPERATORS:
        errors.append((f"{field}.operator", f"must be one of {', '.join(OPERATORS)}; got {operator!r}"))
    if errors:
        return errors
    assert isinstance(operator, str) and isinstance(kind, str)
    if kind not in APPLICABLE[operator]:
        return [(f"{field}.operator", f"{operator} does not apply to {kind}; use {_operators_for(kind)}")]
    try:
        _parse(condition)
    except _BadValue as bad:
        return [(f"{field}.value", str(bad))]
    return []


def _operators_for(kind: str) -> str:
    names = [operator for operator in OPERATORS if kind in APPLICABLE[operator]]
    return ", ".join(names[:-1]) + " or " + names[-1]


# --- evaluation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceFacts:
    """What a rule can look at in an imported invoice: amount paid in major units, when, and who paid."""

    amount: Decimal
    paid_at: dt.datetime
    customer_name: str | None
    customer_email: str | None


@dataclass(frozen=True)
class RuleView:
    id: str
    order: int
    created_at: dt.datetime
    enabled: bool
    conditions: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Evaluation:
    matched: str | None
    evaluated: tuple[str, ...]  # ids of the rules evaluated, in order, up to and including the match


def evaluate(rules: Sequence[RuleView], facts: InvoiceFacts) -> Evaluation:
    """D17: enabled rules by ascending order, ties by creation time; all conditions must match; first wins."""
    evaluated: list[str] = []
    for rule in sorted((r for r in rules if r.enabled), key=lambda r: (r.order, r.created_at, r.id)):
        evaluated.append(rule.id)
        if rule.conditions and all(_matches(condition, facts) for condition in rule.conditions):
            return Evaluation(matched=rule.id, evaluated=tuple(evaluated))
    return Evaluation(matched=None, evaluated=tuple(evaluated))


def _matches(condition: Mapping[str, Any], facts: InvoiceFacts) -> bool:
    # A stored condition that no longer parses (it was validated on write) matches nothing rather than
    # failing an import.
    if _one_condition_errors("condition", condition):
        return False
    kind, operator, value = _parse(condition)
    if kind == "amount":
        return _compare(operator, facts.amount, value)
    if kind == "date":
        return _date_matches(operator, facts.paid_at.astimezone(dt.UTC), value)
    actual = facts.customer_name if kind == "customerName" else facts.customer_email
    if actual is None or not actual.strip():
        return False
    assert isinstance(value, str)
    return _text_matches(operator, actual.strip().casefold(), value.casefold())


def _compare(operator: str, actual: Decimal, value: object) -> bool:
    if operator == "between":
        assert isinstance(value, tuple)
        low, high = value
        return bool(low <= actual <= high)
    assert isinstance(value, Decimal)
    return {"equals": actual == value, "greaterThan": actual > value, "lessThan": actual < value}[operator]


def _date_matches(operator: str, paid_at: dt.datetime, value: object) -> bool:
    if operator == "between":
        assert isinstance(value, tuple)
        low, high = value
        return _lower_instant(low) <= paid_at <= _upper_instant(high)
    assert isinstance(value, (dt.date, dt.datetime))
    if operator == "equals":
        day = value.date() if isinstance(value, dt.datetime) else value
        return paid_at.date() == day
    if operator == "greaterThan":
        return paid_at > _upper_instant(value)
    return paid_at < _lower_instant(value)


def _text_matches(operator: str, actual: str, value: str) -> bool:
    if operator == "equals":
        return actual == value
    if operator == "contains":
        return value in actual
    # domain: the part after the @ is the domain itself or one of its subdomains; "@trusted.com" never matches
    # "x@untrusted.com".
    _, at, host = actual.rpartition("@")
    return bool(at) and (host == value or host.endswith("." + value))
