"""domain.ledger: table-driven rules, and hypothesis over sequences of ledger operations: every transaction
balances, no customer balance goes negative, and every balance equals the sum of its entries."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import ledger

M, C = "org_m", "cus_c"
USD = "USD"


@pytest.mark.parametrize(
    ("amount", "rate", "split"),
    [
        (1_000, Decimal(0), (1_000, 0)),
        (1_000, Decimal("0.1"), (900, 100)),
        (5, Decimal("0.1"), (4, 1)),  # 0.5 nano rounds half-up to 1
        (4, Decimal("0.1"), (4, 0)),  # 0.4 nano rounds down
        (1_000, Decimal(1), (0, 1_000)),
        (333, Decimal("0.333"), (222, 111)),  # 110.889 → 111
    ],
)
def test_split_fee_always_adds_up(amount: int, rate: Decimal, split: tuple[int, int]) -> None:
    assert ledger.split_fee(amount, rate) == split
    assert sum(split) == amount


@pytest.mark.parametrize("rate", [Decimal("-0.01"), Decimal("1.01")])
def test_fee_rate_outside_zero_to_one_is_refused(rate: Decimal) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        ledger.split_fee(100, rate)


@pytest.mark.parametrize(
    "build",
    [
        lambda: ledger.funding(M, C, USD, 0),
        lambda: ledger.usage(M, C, USD, -1, Decimal(0)),
        lambda: ledger.reserve(C, USD, 0),
        lambda: ledger.release(C, USD, -5),
    ],
)
def test_non_positive_amounts_are_refused(build: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        build()  # type: ignore[operator]


def test_unbalanced_and_duplicate_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        ledger.Transaction(
            "funding", USD, (ledger.Entry(ledger.main(C), 5), ledger.Entry(ledger.external(M), -4))
        )
    with pytest.raises(ValueError, match="one entry per account"):
        ledger.Transaction(
            "funding", USD, (ledger.Entry(ledger.main(C), 5), ledger.Entry(ledger.main(C), -5))
        )
    with pytest.raises(TypeError):
        ledger.Transaction(
            "funding", USD, (ledger.Entry(ledger.main(C), 0.5), ledger.Entry(ledger.external(M), -0.5))
        )  # type: ignore[arg-type]


def test_a_fee_of_zero_leaves_no_fee_entry() -> None:
    charge = ledger.usage(M, C, USD, 100, Decimal(0))
    assert [e.account.kind for e in charge.entries] == ["customer_main", "merchant_revenue"]


def test_apply_refuses_an_overdraft_and_names_the_shortfall() -> None:
    balances = ledger.apply({}, ledger.funding(M, C, USD, 1_500_000_000))
    with pytest.raises(ledger.InsufficientFunds) as raised:
        ledger.apply(balances, ledger.usage(M, C, USD, 2_000_000_000, Decimal(0)))
    assert raised.value.shortfall == 500_000_000
    assert str(raised.value).startswith(
        "insufficient funds: this needs 2 USD but the customer's wallet balance is 1.5 USD"
    )
    assert balances[ledger.main(C)] == 1_500_000_000  # unchanged


def test_refund_returns_a_reserved_charge_to_the_main_wallet() -> None:
    charge = ledger.usage(M, C, USD, 1_000, Decimal("0.25"), from_reserved=True)
    back = ledger.refund(charge)
    assert {(e.account.kind, e.amount) for e in back.entries} == {
        ("merchant_revenue", -750),
        ("platform_fee", -250),
        ("customer_main", 1_000),
    }
    with pytest.raises(ValueError):
        ledger.refund(back)


amounts = st.integers(min_value=1, max_value=10**12)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("fund"), amounts),
        st.tuples(st.just("use"), amounts),
        st.tuples(st.just("reserve"), amounts),
        st.tuples(st.just("use_reserved"), amounts),
        st.tuples(st.just("release"), amounts),
        st.tuples(st.just("refund"), st.integers(min_value=0, max_value=50)),
    ),
    max_size=60,
)


def _operation(op: str, amount: int, rate: Decimal) -> ledger.Transaction:
    if op == "fund":
        return ledger.funding(M, C, USD, amount)
    if op == "reserve":
        return ledger.reserve(C, USD, amount)
    if op == "release":
        return ledger.release(C, USD, amount)
    return ledger.usage(M, C, USD, amount, rate, from_reserved=op == "use_reserved")


@settings(max_examples=300, deadline=None)
@given(operations, st.sampled_from([Decimal(0), Decimal("0.05"), Decimal("0.333")]))
def test_any_sequence_keeps_the_ledger_sound(ops: list[tuple[str, int]], rate: Decimal) -> None:
    balances: dict[ledger.AccountRef, int] = {}
    journal: list[tuple[str, int, ledger.AccountRef]] = []
    charges: list[ledger.Transaction] = []
    for n, (op, amount) in enumerate(ops):
        if op == "refund":
            if not charges:
                continue
            txn = ledger.refund(charges.pop(amount % len(charges)))
        else:
            txn = _operation(op, amount, rate)
        try:
            balances = ledger.apply(balances, txn)
        except ledger.InsufficientFunds as refused:
            assert refused.shortfall > 0
            continue
        if txn.kind == "usage":
            charges.append(txn)
        journal.extend((f"t{n}", e.amount, e.account) for e in txn.entries)
        assert all(balances.get(ledger.AccountRef(k, C), 0) >= 0 for k in ledger.CUSTOMER_KINDS)
    assert ledger.unbalanced((t, a) for t, a, _ in journal) == {}
    for account, balance in balances.items():
        assert balance == sum(a for _, a, acc in journal if acc == account)
