"""The wallet ledger's rules: double-entry transactions in nanodollars (decision D13, D14, behavior §8).

Every transaction is a set of entries that sum to zero; an account's balance is the sum of its entries. The
customer's accounts (main wallet, reserved funds) never go below zero: a debit that would take them there is
refused with the shortfall. Money enters through the external funding account, whose balance is the negative
of all funds ever brought in, and leaves the customer towards the merchant's revenue and the platform's fee.

Pure: the db layer locks the balance rows, asks `apply` for the new balances, and writes what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from domain.money import format_amount, from_nanos, round_nanos

AccountKind = Literal[
    "customer_main", "customer_reserved", "merchant_revenue", "platform_fee", "external_funding"
]
CUSTOMER_KINDS: frozenset[str] = frozenset({"customer_main", "customer_reserved"})
MERCHANT_KINDS: frozenset[str] = frozenset({"merchant_revenue", "platform_fee", "external_funding"})
# Balances a debit may never take below zero: the customer's own money (behavior §8: hard spending limits).
NON_NEGATIVE: frozenset[str] = CUSTOMER_KINDS

TransactionKind = Literal[
    "funding",  # money in: a paid top-up (external funding → customer main)
    "usage",  # an instant usage charge (customer main or reserved → merchant revenue + platform fee)
    "reserve",  # an entitlement's reservation (customer main → customer reserved)
    "release",  # the unused remainder of a reservation (customer reserved → customer main)
    "refund",  # a refunded usage charge or accepted dispute (merchant revenue + platform fee → customer main)
]


@dataclass(frozen=True, slots=True, order=True)
class AccountRef:
    """One ledger account of a merchant's environment in one currency: `owner` is the customer id for
    customer kinds and the merchant's organization id for merchant kinds."""

    kind: str
    owner: str

    def __post_init__(self) -> None:
        if self.kind not in CUSTOMER_KINDS | MERCHANT_KINDS:
            raise ValueError(f"unknown account kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class Entry:
    account: AccountRef
    amount: int  # nanodollars added to the account's balance (negative: taken from it)


@dataclass(frozen=True, slots=True)
class Transaction:
    kind: str
    currency: str
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError("a transaction needs at least two entries")
        for entry in self.entries:
            if type(entry.amount) is not int:
                raise TypeError("ledger amounts are integer nanodollars")
            if entry.amount == 0:
                raise ValueError("a ledger entry moves a non-zero amount")
        if sum(e.amount for e in self.entries) != 0:
            raise ValueError(
                f"unbalanced {self.kind} transaction: entries sum to {sum(e.amount for e in self.entries)}"
            )
        accounts = [e.account for e in self.entries]
        if len(set(accounts)) != len(accounts):
            raise ValueError("a transaction has at most one entry per account")

    @property
    def accounts(self) -> tuple[AccountRef, ...]:
        return tuple(sorted(e.account for e in self.entries))


class InsufficientFunds(Exception):
    """A debit would take a customer's account below zero; nothing was applied."""

    def __init__(self, account: AccountRef, available: int, needed: int, currency: str) -> None:
        self.account, self.available, self.needed, self.currency = account, available, needed, currency
        self.shortfall = needed - available
        where = "reserved funds" if account.kind == "customer_reserved" else "wallet balance"
        super().__init__(
            f"insufficient funds: this needs {_show(needed)} {currency} but the customer's {where} is "
            f"{_show(available)} {currency} (short by {_show(self.shortfall)} {currency}); top up the wallet "
            "or charge less"
        )


def _show(nanos: int) -> str:
    return format_amount(from_nanos(nanos).normalize() if nanos else Decimal(0))


def _entries(*pairs: tuple[AccountRef, int]) -> tuple[Entry, ...]:
    return tuple(Entry(account, amount) for account, amount in pairs if amount != 0)


def _positive(amount: int, what: str) -> None:
    if type(amount) is not int or amount <= 0:
        raise ValueError(f"{what} must be a positive integer of nanodollars")


def main(customer_id: str) -> AccountRef:
    return AccountRef("customer_main", customer_id)


def reserved(customer_id: str) -> AccountRef:
    return AccountRef("customer_reserved", customer_id)


def revenue(merchant_id: str) -> AccountRef:
    return AccountRef("merchant_revenue", merchant_id)


def fees(merchant_id: str) -> AccountRef:
    return AccountRef("platform_fee", merchant_id)


def external(merchant_id: str) -> AccountRef:
    return AccountRef("external_funding", merchant_id)


def split_fee(amount: int, fee_rate: Decimal) -> tuple[int, int]:
    """(merchant's share, platform fee) of a charge; the fee is `amount × fee_rate` rounded half-up to the
    nanodollar, so the two always add up to `amount`."""
    if not Decimal(0) <= fee_rate <= Decimal(1):
        raise ValueError("the platform fee rate is a fraction between 0 and 1")
    fee = round_nanos(Decimal(amount) * fee_rate)
    return amount - fee, fee


def funding(merchant_id: str, customer_id: str, currency: str, amount: int) -> Transaction:
    _positive(amount, "a top-up")
    return Transaction(
        "funding", currency, _entries((external(merchant_id), -amount), (main(customer_id), amount))
    )


def usage(
    merchant_id: str,
    customer_id: str,
    currency: str,
    amount: int,
    fee_rate: Decimal,
    *,
    from_reserved: bool = False,
) -> Transaction:
    """An instant charge: from the customer's wallet (or its reserved funds) to the merchant, less the
    platform fee."""
    _positive(amount, "a usage charge")
    merchant_share, fee = split_fee(amount, fee_rate)
    source = reserved(customer_id) if from_reserved else main(customer_id)
    return Transaction(
        "usage",
        currency,
        _entries((source, -amount), (revenue(merchant_id), merchant_share), (fees(merchant_id), fee)),
    )


def refund(charge: Transaction) -> Transaction:
    """Give a usage charge back: the merchant and the fee return their shares to the customer's main wallet
    (also for a charge taken from reserved funds: the reservation may be gone by now)."""
    if charge.kind != "usage":
        raise ValueError("only usage charges are refunded")
    back = [Entry(e.account, -e.amount) for e in charge.entries if e.account.kind not in CUSTOMER_KINDS]
    total = sum(e.amount for e in charge.entries if e.account.kind not in CUSTOMER_KINDS)
    customer = next(e.account.owner for e in charge.entries if e.account.kind in CUSTOMER_KINDS)
    return Transaction("refund", charge.currency, (*back, Entry(main(customer), total)))


def reserve(customer_id: str, currency: str, amount: int) -> Transaction:
    _positive(amount, "a reservation")
    return Transaction(
        "reserve", currency, _entries((main(customer_id), -amount), (reserved(customer_id), amount))
    )


def release(customer_id: str, currency: str, amount: int) -> Transaction:
    _positive(amount, "a release")
    return Transaction(
        "release", currency, _entries((reserved(customer_id), -amount), (main(customer_id), amount))
    )


def apply(balances: Mapping[AccountRef, int], transaction: Transaction) -> dict[AccountRef, int]:
    """The balances after `transaction` (missing accounts start at 0), or InsufficientFunds when a customer
    account would go below zero. `balances` is not changed."""
    after = dict(balances)
    for entry in transaction.entries:
        after[entry.account] = after.get(entry.account, 0) + entry.amount
    for entry in transaction.entries:
        if entry.account.kind in NON_NEGATIVE and after[entry.account] < 0:
            available = balances.get(entry.account, 0)
            raise InsufficientFunds(entry.account, available, -entry.amount, transaction.currency)
    return after


def unbalanced(entries: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Transaction ids whose entries do not sum to zero, with their sums (for the ledger audit)."""
    sums: dict[str, int] = {}
    for transaction_id, amount in entries:
        sums[transaction_id] = sums.get(transaction_id, 0) + amount
    return {t: s for t, s in sums.items() if s != 0}
