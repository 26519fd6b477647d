from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from domain.source_rules import (
    APPLICABLE,
    CONDITION_TYPES,
    MAX_RULES_PER_SOURCE,
    OPERATORS,
    Evaluation,
    InvoiceFacts,
    RuleView,
    condition_errors,
    evaluate,
)
from domain.stripe_keys import key_mode, last4

PAID = dt.datetime(2026, 3, 15, 22, 30, tzinfo=dt.UTC)
FACTS = InvoiceFacts(
    amount=Decimal("150.00"), paid_at=PAID, customer_name="Acme Corp", customer_email="Billing@Trusted.com"
)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def c(kind: str, operator: str, value: object) -> dict[str, Any]:
    return {"type": kind, "operator": operator, "value": value}


def test_constants() -> None:
    assert MAX_RULES_PER_SOURCE == 10
    assert CONDITION_TYPES == ("date", "customerName", "customerEmail", "amount")
    assert OPERATORS == ("equals", "contains", "between", "greaterThan", "lessThan", "domain")
    assert set(APPLICABLE) == set(OPERATORS)


VALID = [
    c("amount", "equals", 100),
    c("amount", "equals", "100.50"),
    c("amount", "equals", 0),
    c("amount", "greaterThan", 99.99),
    c("amount", "lessThan", "1000"),
    c("amount", "between", {"from": 10, "to": "10"}),
    c("amount", "between", {"from": "0", "to": 5.5}),
    c("date", "equals", "2026-03-15"),
    c("date", "greaterThan", "2026-03-15T10:00:00Z"),
    c("date", "lessThan", "2026-03-15T10:00:00+02:00"),
    c("date", "between", {"from": "2026-03-01", "to": "2026-03-01"}),
    c("date", "between", {"from": "2026-03-01T10:00:00", "to": "2026-03-01"}),
    c("customerName", "equals", "Acme"),
    c("customerName", "contains", "acme"),
    c("customerEmail", "equals", "a@b.com"),
    c("customerEmail", "contains", "@b.co"),
    c("customerEmail", "domain", "@trusted.com"),
    c("customerEmail", "domain", "trusted.com"),
]


@pytest.mark.parametrize("condition", VALID)
def test_valid_conditions(condition: dict[str, Any]) -> None:
    assert condition_errors([condition]) == []


# (condition, field, a piece of the message)
INVALID: list[tuple[object, str, str]] = [
    ("amount", "conditions[0]", 'must be an object {"type", "operator", "value"}'),
    ({"operator": "equals", "value": 1}, "conditions[0].type", "is required"),
    ({"type": "amount", "value": 1}, "conditions[0].operator", "is required"),
    ({"type": "amount", "operator": "equals"}, "conditions[0].value", "is required"),
    ({**c("amount", "equals", 1), "field": "x"}, "conditions[0].field", "is not a condition field"),
    (c("customerId", "equals", "cus_1"), "conditions[0].type", "must be one of date, customerName"),
    (c("amount", "notEquals", 1), "conditions[0].operator", "must be one of equals, contains"),
    (c("amount", "contains", "1"), "conditions[0].operator", "contains does not apply to amount"),
    (
        c("amount", "domain", "x.com"),
        "conditions[0].operator",
        "use equals, between, greaterThan or lessThan",
    ),
    (c("date", "contains", "2026"), "conditions[0].operator", "contains does not apply to date"),
    (c("customerName", "domain", "x.com"), "conditions[0].operator", "use equals or contains"),
    (c("customerName", "greaterThan", "a"), "conditions[0].operator", "greaterThan does not apply"),
    (c("customerEmail", "between", {"from": "a", "to": "b"}), "conditions[0].operator", "between does not"),
    (c("customerEmail", "lessThan", "a"), "conditions[0].operator", "use equals, contains or domain"),
    (c("amount", "equals", -1), "conditions[0].value", "must be 0 or more"),
    (c("amount", "equals", "-0.5"), "conditions[0].value", "must be 0 or more"),
    (c("amount", "equals", "ten"), "conditions[0].value", "an amount in major currency units"),
    (c("amount", "equals", "1e3"), "conditions[0].value", "an amount in major currency units"),
    (c("amount", "equals", True), "conditions[0].value", "an amount in major currency units"),
    (c("amount", "equals", None), "conditions[0].value", "an amount in major currency units"),
    (c("amount", "equals", float("nan")), "conditions[0].value", "an amount in major currency units"),
    (c("amount", "equals", "1.0000000001"), "conditions[0].value", "an amount"),
    (c("amount", "equals", {"from": 1, "to": 2}), "conditions[0].value", "only for the between operator"),
    (c("amount", "between", 5), "conditions[0].value", 'between needs a range: {"from": …, "to": …}'),
    (c("amount", "between", {"from": 5}), "conditions[0].value", "between needs a range"),
    (c("amount", "between", {"from": 5, "to": 6, "x": 1}), "conditions[0].value", "between needs a range"),
    (c("amount", "between", {"from": 10, "to": 5}), "conditions[0].value", "must not be greater than to"),
    (c("amount", "between", {"from": "x", "to": 5}), "conditions[0].value", "an amount"),
    (c("date", "equals", "2026-13-01"), "conditions[0].value", 'a date like "2026-01-15"'),
    (c("date", "equals", 20260101), "conditions[0].value", 'a date like "2026-01-15"'),
    (c("date", "equals", ""), "conditions[0].value", "a date like"),
    (c("date", "between", {"from": "2026-03-02", "to": "2026-03-01"}), "conditions[0].value", "not be after"),
    (
        c("date", "between", {"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T09:00:00Z"}),
        "conditions[0].value",
        "must not be after to",
    ),
    (c("customerName", "equals", ""), "conditions[0].value", "must be non-empty text"),
    (c("customerName", "contains", "   "), "conditions[0].value", "must be non-empty text"),
    (c("customerName", "equals", 5), "conditions[0].value", "must be non-empty text"),
    (c("customerEmail", "domain", "@"), "conditions[0].value", "an email domain"),
    (c("customerEmail", "domain", "a@b.com"), "conditions[0].value", 'an email domain like "@trusted.com"'),
    (c("customerEmail", "domain", "trusted"), "conditions[0].value", "an email domain"),
    (c("customerEmail", "domain", "@.com"), "conditions[0].value", "an email domain"),
    (c("customerEmail", "domain", "tr usted.com"), "conditions[0].value", "an email domain"),
]


@pytest.mark.parametrize(("condition", "field", "message"), INVALID)
def test_invalid_condition(condition: object, field: str, message: str) -> None:
    errors = condition_errors([condition])
    assert [f for f, _ in errors] == [field], errors
    assert message in errors[0][1]


def test_condition_count_and_list() -> None:
    assert condition_errors([]) == [("conditions", "a rule has 1 to 10 conditions; got 0")]
    assert condition_errors([c("amount", "equals", 1)] * 10) == []
    assert condition_errors([c("amount", "equals", 1)] * 11) == [
        ("conditions", "a rule has 1 to 10 conditions; got 11")
    ]
    assert condition_errors("amount") == [("conditions", "must be a list of conditions")]  # type: ignore[arg-type]


def test_errors_name_each_bad_condition() -> None:
    errors = condition_errors(
        [c("amount", "equals", 1), c("amount", "contains", 1), c("date", "equals", "x")]
    )
    assert [f for f, _ in errors] == ["conditions[1].operator", "conditions[2].value"]


def test_the_message_does_not_need_the_key_order() -> None:
    errors = condition_errors([{"value": 1, "type": "nope", "operator": "nope", "x": 1}])
    assert [f for f, _ in errors] == ["conditions[0].x", "conditions[0].type", "conditions[0].operator"]


# (condition, facts changes, matches?)
MATCHES: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    # amount
    (c("amount", "equals", 150), {}, True),
    (c("amount", "equals", "150.0"), {}, True),
    (c("amount", "equals", 150.01), {}, False),
    (c("amount", "greaterThan", 149.99), {}, True),
    (c("amount", "greaterThan", 150), {}, False),
    (c("amount", "lessThan", "150.01"), {}, True),
    (c("amount", "lessThan", 150), {}, False),
    (c("amount", "between", {"from": 150, "to": 200}), {}, True),
    (c("amount", "between", {"from": 100, "to": "150"}), {}, True),
    (c("amount", "between", {"from": 100, "to": "149.99"}), {}, False),
    (c("amount", "between", {"from": "150.01", "to": 160}), {}, False),
    (c("amount", "equals", 0.1), {"amount": Decimal("0.1")}, True),
    # date: the invoice was paid 2026-03-15 22:30 UTC
    (c("date", "equals", "2026-03-15"), {}, True),
    (c("date", "equals", "2026-03-15T01:00:00Z"), {}, True),
    (c("date", "equals", "2026-03-16"), {}, False),
    (c("date", "equals", "2026-03-16T02:00:00+02:00"), {}, False),  # the 16th in UTC
    (c("date", "equals", "2026-03-16T01:59:00+02:00"), {}, True),  # 23:59 on the 15th in UTC: same day
    (c("date", "greaterThan", "2026-03-14"), {}, True),
    (c("date", "greaterThan", "2026-03-15"), {}, False),  # a day: strictly after the whole day
    (c("date", "greaterThan", "2026-03-15T22:29:59Z"), {}, True),
    (c("date", "greaterThan", "2026-03-15T22:30:00Z"), {}, False),
    (c("date", "lessThan", "2026-03-16"), {}, True),
    (c("date", "lessThan", "2026-03-15"), {}, False),
    (c("date", "lessThan", "2026-03-15T22:30:00Z"), {}, False),
    (c("date", "lessThan", "2026-03-15T22:30:01"), {}, True),  # naive means UTC
    (c("date", "between", {"from": "2026-03-15", "to": "2026-03-15"}), {}, True),
    (c("date", "between", {"from": "2026-03-01", "to": "2026-03-14"}), {}, False),
    (c("date", "between", {"from": "2026-03-16", "to": "2026-03-20"}), {}, False),
    (c("date", "between", {"from": "2026-03-15T22:30:00Z", "to": "2026-03-15T22:30:00Z"}), {}, True),
    (
        c("date", "equals", "2026-03-15"),
        {"paid_at": dt.datetime(2026, 3, 16, 1, tzinfo=dt.timezone(dt.timedelta(hours=3)))},
        True,
    ),  # paid 22:00 on the 15th in UTC
    # customerName
    (c("customerName", "equals", "acme corp"), {}, True),
    (c("customerName", "equals", "Acme"), {}, False),
    (c("customerName", "contains", "ME C"), {}, True),
    (c("customerName", "contains", "Inc"), {}, False),
    (c("customerName", "equals", "Acme"), {"customer_name": None}, False),
    (c("customerName", "contains", "a"), {"customer_name": ""}, False),
    # customerEmail
    (c("customerEmail", "equals", "billing@trusted.com"), {}, True),
    (c("customerEmail", "equals", "billing@trusted.co"), {}, False),
    (c("customerEmail", "contains", "TRUSTED"), {}, True),
    (c("customerEmail", "domain", "@trusted.com"), {}, True),
    (c("customerEmail", "domain", "TRUSTED.COM"), {}, True),
    (c("customerEmail", "domain", "@trusted.com"), {"customer_email": "x@untrusted.com"}, False),
    (c("customerEmail", "domain", "trusted.com"), {"customer_email": "x@untrusted.com"}, False),
    (c("customerEmail", "domain", "@trusted.com"), {"customer_email": "x@mail.trusted.com"}, True),
    (c("customerEmail", "domain", "@trusted.com"), {"customer_email": "x@trusted.com.evil.io"}, False),
    (c("customerEmail", "domain", "@trusted.com"), {"customer_email": "trusted.com"}, False),
    (c("customerEmail", "domain", "@trusted.com"), {"customer_email": None}, False),
    (c("customerEmail", "contains", "a"), {"customer_email": None}, False),
]


@pytest.mark.parametrize(("condition", "changes", "expected"), MATCHES)
def test_one_condition(condition: dict[str, Any], changes: dict[str, Any], expected: bool) -> None:
    facts = InvoiceFacts(**{**FACTS.__dict__, **changes})
    rule = RuleView(id="rule_1", order=0, created_at=T0, enabled=True, conditions=[condition])
    assert evaluate([rule], facts) == Evaluation(
        matched="rule_1" if expected else None, evaluated=("rule_1",)
    )


def rule(
    rule_id: str, order: int, *conditions: dict[str, Any], enabled: bool = True, at: int = 0
) -> RuleView:
    return RuleView(
        id=rule_id,
        order=order,
        created_at=T0 + dt.timedelta(minutes=at),
        enabled=enabled,
        conditions=conditions,
    )


YES = c("amount", "greaterThan", 100)
NO = c("amount", "lessThan", 100)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([], Evaluation(None, ())),
        ([rule("a", 0, YES, YES)], Evaluation("a", ("a",))),
        ([rule("a", 0, YES, NO)], Evaluation(None, ("a",))),  # all conditions must match
        ([rule("a", 0, NO), rule("b", 1, YES), rule("c", 2, YES)], Evaluation("b", ("a", "b"))),
        ([rule("c", 5, YES), rule("b", 3, NO), rule("a", 9, YES)], Evaluation("c", ("b", "c"))),  # by order
        ([rule("late", 1, YES, at=5), rule("early", 1, YES, at=1)], Evaluation("early", ("early",))),  # ties
        (
            [rule("off", 0, YES, enabled=False), rule("on", 1, YES)],
            Evaluation("on", ("on",)),
        ),  # disabled skipped
        ([rule("off", 0, YES, enabled=False)], Evaluation(None, ())),
        ([rule("bad", 0, c("amount", "contains", 1)), rule("ok", 1, YES)], Evaluation("ok", ("bad", "ok"))),
        ([rule("empty", 0)], Evaluation(None, ("empty",))),
    ],
)
def test_rule_order(rules: list[RuleView], expected: Evaluation) -> None:
    assert evaluate(rules, FACTS) == expected


@pytest.mark.parametrize(
    ("key", "mode"),
    [("sk_test_abc123", "test"), ("sk_live_ABC", "live"), ("rk_test_x1", "test"), ("rk_live_Z9", "live")],
)
def test_key_mode(key: str, mode: str) -> None:
    assert key_mode(key) == mode


@pytest.mark.parametrize(
    "key",
    [
        "",
        "sk_test_",
        "pk_test_Q7x",
        "sk_prod_Q7x",
        "sk_test_Q7x\n",
        " sk_test_Q7x",
        "sk_test_Q7-x",
        "whsec_Q7x",
    ],
)
def test_key_mode_refuses_without_echoing(key: str) -> None:
    with pytest.raises(ValueError, match="is not a Stripe secret key") as raised:
        key_mode(key)
    assert "Q7" not in str(raised.value)


def test_last4() -> None:
    assert last4("sk_test_abcd1234") == "1234"
