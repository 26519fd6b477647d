from __future__ import annotations

import random
import string

import pytest

from domain.ids import ALPHABET, DEFAULT_LENGTH, PREFIXES, has_prefix, new_id

EXPECTED_PREFIXES = [
    ("organization", "org"),
    ("user", "usr"),
    ("api_key", "key"),
    ("product", "prod"),
    ("billable_metric", "bm"),
    ("fee", "fee"),
    ("price", "price"),
    ("price_feature", "pf"),
    ("plan", "plan"),
    ("feature", "feat"),
    ("customer", "cus"),
    ("subscription", "sub"),
    ("invoice", "inv"),
    ("line_item", "li"),
    ("event", "evt"),
    ("usage_event", "usg"),
    ("test_clock", "tc"),
    ("payment_session", "ps"),
    ("outbox_event", "msg"),
    ("webhook_app", "app"),
    ("webhook_endpoint", "ep"),
    ("webhook_attempt", "atmpt"),
    ("source", "src"),
    ("source_event", "sev"),
    ("source_installation", "sin"),
    ("source_rule", "rule"),
    ("authorization_link", "auth"),
    ("ledger_account", "acc"),
    ("ledger_transaction", "txn"),
    ("entitlement", "com"),
    ("dispute", "disp"),
    ("payment", "pay"),
]


@pytest.mark.parametrize(("kind", "prefix"), EXPECTED_PREFIXES)
def test_prefix_and_length(kind: str, prefix: str) -> None:
    value = new_id(kind)
    head, _, body = value.partition("_")
    assert head == prefix
    assert len(body) == (16 if kind == "test_clock" else DEFAULT_LENGTH)
    assert set(body) <= set(ALPHABET)


def test_every_kind_is_covered() -> None:
    assert dict(EXPECTED_PREFIXES) == PREFIXES


def test_prefixes_are_distinct() -> None:
    assert len(set(PREFIXES.values())) == len(PREFIXES)


def test_test_clock_ids_are_exactly_16_characters_after_the_prefix() -> None:
    for _ in range(200):
        value = new_id("test_clock")
        assert value.startswith("tc_")
        assert len(value) == len("tc_") + 16


def test_alphabet_is_base62() -> None:
    assert ALPHABET == string.digits + string.ascii_uppercase + string.ascii_lowercase
    assert len(set(ALPHABET)) == 62


def test_ten_thousand_ids_are_unique_and_use_the_whole_alphabet() -> None:
    ids = [new_id("customer") for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    # 240k random characters: every one of the 62 appears unless the generator is biased.
    assert set("".join(i[len("cus_") :] for i in ids)) == set(ALPHABET)


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(KeyError):
        new_id("widget")


def test_seeded_choice_is_deterministic() -> None:
    first = [new_id("subscription", random.Random(42).choice) for _ in range(3)]
    second = [new_id("subscription", random.Random(42).choice) for _ in range(3)]
    assert first == second
    assert len(set(first)) == 1  # a fresh generator with the same seed repeats itself
    shared = random.Random(42)
    assert len({new_id("subscription", shared.choice) for _ in range(100)}) == 100
    assert new_id("subscription", random.Random(43).choice) != first[0]


def test_choice_receives_the_alphabet() -> None:
    seen: list[str] = []

    def choice(alphabet: str) -> str:
        seen.append(alphabet)
        return "Z"

    assert new_id("test_clock", choice) == "tc_" + "Z" * 16
    assert seen == [ALPHABET] * 16


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("cus_abcDEF123", "customer", True),
        ("cus_x", "customer", True),
        ("sub_abcDEF123", "customer", False),
        ("cus_", "customer", False),
        ("cus", "customer", False),
        ("_abc", "customer", False),
        ("CUS_abc", "customer", False),
        ("cus_abc-def", "customer", False),
        ("cus_abc_def", "customer", False),
        ("cus_abc ", "customer", False),
        ("cus_abc\n", "customer", False),
        (" cus_abc", "customer", False),
        ("cuss_abc", "customer", False),
        ("prod_abc", "product", True),
        ("price_abc", "price", True),
        ("pf_abc", "price", False),
        ("tc_0123456789abcdef", "test_clock", True),
        ("", "customer", False),
    ],
)
def test_has_prefix(value: str, kind: str, expected: bool) -> None:
    assert has_prefix(value, kind) is expected


@pytest.mark.parametrize(("kind", "prefix"), EXPECTED_PREFIXES)
def test_new_ids_have_their_own_prefix_only(kind: str, prefix: str) -> None:
    value = new_id(kind)
    assert has_prefix(value, kind)
    others = [k for k, p in PREFIXES.items() if p != prefix]
    assert not any(has_prefix(value, other) for other in others)
