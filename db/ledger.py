"""The wallet ledger's rows: accounts with a maintained balance, balanced transactions, and their entries.

`post` writes one transaction inside the caller's database transaction: it locks the accounts it moves
(in a fixed order, so concurrent posts never deadlock), asks `domain.ledger.apply` for the new balances
(InsufficientFunds if a customer account would go below zero) and writes the entries and balances. The
caller commits together with whatever the money is for (a usage event, a reservation), or rolls back both.
`audit` is the proof that every balance equals the sum of its entries and every transaction sums to zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LedgerAccount, LedgerEntry, LedgerTransaction
from domain import ledger
from domain.ids import new_id


@dataclass(frozen=True, slots=True)
class Posted:
    transaction_id: str
    created: bool  # False: the idempotency key had been posted before, and nothing moved this time
    balances: dict[ledger.AccountRef, int]  # after the transaction, of the accounts it moved


async def accounts(
    session: AsyncSession,
    merchant_id: str,
    environment: str,
    currency: str,
    refs: Iterable[ledger.AccountRef],
    *,
    lock: bool = False,
) -> dict[ledger.AccountRef, LedgerAccount]:
    """The accounts of `refs`, created (at balance 0) where missing; `lock` takes their rows FOR UPDATE
    in id order."""
    wanted = sorted(set(refs))
    if not wanted:
        return {}
    await session.execute(
        insert(LedgerAccount)
        .values(
            [
                {
                    "id": new_id("ledger_account"),
                    "merchant_id": merchant_id,
                    "environment": environment,
                    "currency": currency,
                    "kind": ref.kind,
                    "owner_id": ref.owner,
                    "balance": 0,
                }
                for ref in wanted
            ]
        )
        .on_conflict_do_nothing(constraint="uq_ledger_accounts_owner")
    )
    query = (
        select(LedgerAccount)
        .where(
            LedgerAccount.merchant_id == merchant_id,
            LedgerAccount.environment == environment,
            LedgerAccount.currency == currency,
            tuple_(LedgerAccount.kind, LedgerAccount.owner_id).in_([(r.kind, r.owner) for r in wanted]),
        )
        .order_by(LedgerAccount.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    rows = (await session.scalars(query)).all()
    return {ledger.AccountRef(row.kind, row.owner_id): row for row in rows}


async def post(
    session: AsyncSession,
    merchant_id: str,
    environment: str,
    transaction: ledger.Transaction,
    *,
    idempotency_key: str,
    reference_id: str | None = None,
    description: str | None = None,
) -> Posted:
    """Write `transaction` once per (merchant, environment, idempotency_key); raises
    domain.ledger.InsufficientFunds, having written nothing but missing zero-balance accounts, when a
    customer account cannot pay."""
    # The account locks come first: a concurrent post of the same key waits here, then sees the first one.
    rows = await accounts(
        session, merchant_id, environment, transaction.currency, transaction.accounts, lock=True
    )
    before = {ref: row.balance for ref, row in rows.items()}
    existing = await session.scalar(
        select(LedgerTransaction.id).where(
            LedgerTransaction.merchant_id == merchant_id,
            LedgerTransaction.environment == environment,
            LedgerTransaction.idempotency_key == idempotency_key,
        )
    )
    if existing is not None:
        return Posted(existing, False, before)
    after = ledger.apply(before, transaction)  # InsufficientFunds before anything is written
    transaction_id = new_id("ledger_transaction")
    session.add(
        LedgerTransaction(
            id=transaction_id,
            merchant_id=merchant_id,
            environment=environment,
            kind=transaction.kind,
            currency=transaction.currency,
            idempotency_key=idempotency_key,
            reference_id=reference_id,
            description=description,
        )
    )
    await session.flush()
    session.add_all(
        LedgerEntry(transaction_id=transaction_id, account_id=rows[e.account].id, amount=e.amount)
        for e in transaction.entries
    )
    for ref, row in rows.items():
        row.balance = after[ref]
    await session.flush()
    return Posted(transaction_id, True, {ref: after[ref] for ref in rows})


async def balances(
    session: AsyncSession, merchant_id: str, environment: str, owner_id: str, currency: str | None = None
) -> dict[tuple[str, str], int]:
    """{(currency, kind): balance} of one owner's accounts (a customer's wallet and reserved funds)."""
    query = select(LedgerAccount.currency, LedgerAccount.kind, LedgerAccount.balance).where(
        LedgerAccount.merchant_id == merchant_id,
        LedgerAccount.environment == environment,
        LedgerAccount.owner_id == owner_id,
    )
    if currency is not None:
        query = query.where(LedgerAccount.currency == currency)
    return {(c, k): b for c, k, b in (await session.execute(query)).all()}


async def audit(session: AsyncSession, merchant_id: str | None = None) -> list[str]:
    """Everything wrong with the ledger (empty when sound): unbalanced transactions, balances that differ
    from the sum of their entries, overdrawn customer accounts."""
    problems: list[str] = []
    entries = select(LedgerEntry.transaction_id, LedgerEntry.amount).join(LedgerTransaction)
    if merchant_id is not None:
        entries = entries.where(LedgerTransaction.merchant_id == merchant_id)
    rows: Sequence[tuple[str, int]] = [(t, a) for t, a in (await session.execute(entries)).all()]
    for transaction_id, total in ledger.unbalanced(rows).items():
        problems.append(f"transaction {transaction_id} entries sum to {total}, not 0")
    sums = (
        select(
            LedgerAccount.id,
            LedgerAccount.kind,
            LedgerAccount.balance,
            func.coalesce(func.sum(LedgerEntry.amount), 0),
        )
        .outerjoin(LedgerEntry, LedgerEntry.account_id == LedgerAccount.id)
        .group_by(LedgerAccount.id)
    )
    if merchant_id is not None:
        sums = sums.where(LedgerAccount.merchant_id == merchant_id)
    for account_id, kind, balance, total in (await session.execute(sums)).all():
        if balance != total:
            problems.append(f"account {account_id} balance {balance} but its entries sum to {total}")
        if kind in ledger.NON_NEGATIVE and balance < 0:
            problems.append(f"customer account {account_id} is overdrawn: {balance}")
    return problems


# ---- many postings in one database transaction (the usage group-commit writer, helper "usage") ----------


@dataclass(frozen=True, slots=True)
class Posting:
    """One transaction to post with `post_batch`; `transaction_id` is chosen by the caller (it is stored on
    the usage event in the same commit) and `idempotency_key` must be new."""

    merchant_id: str
    environment: str
    transaction: ledger.Transaction
    transaction_id: str
    idempotency_key: str
    reference_id: str | None = None
    description: str | None = None


AccountKey = tuple[str, str, str, str, str]  # merchant, environment, currency, kind, owner

_LOCK_ACCOUNTS = """
SELECT a.id, a.merchant_id, a.environment, a.currency, a.kind, a.owner_id, a.balance
FROM ledger_accounts a
JOIN unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[])
     AS u(merchant_id, environment, currency, kind, owner_id)
  ON a.merchant_id = u.merchant_id AND a.environment = u.environment AND a.currency = u.currency
     AND a.kind = u.kind AND a.owner_id = u.owner_id
ORDER BY a.id
FOR UPDATE OF a
"""
_CREATE_ACCOUNTS = """
INSERT INTO ledger_accounts (id, merchant_id, environment, currency, kind, owner_id, balance)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[],
                     $6::varchar[], $7::bigint[])
ON CONFLICT ON CONSTRAINT uq_ledger_accounts_owner DO NOTHING
"""
_INSERT_TRANSACTIONS = """
INSERT INTO ledger_transactions
    (id, merchant_id, environment, kind, currency, idempotency_key, reference_id, description)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[],
                     $6::varchar[], $7::varchar[], $8::text[])
"""
_INSERT_ENTRIES = """
INSERT INTO ledger_entries (transaction_id, account_id, amount)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::bigint[])
"""
_SET_BALANCES = """
UPDATE ledger_accounts a SET balance = u.balance, updated_at = now()
FROM unnest($1::varchar[], $2::bigint[]) AS u(id, balance)
WHERE a.id = u.id
"""


def _columns(keys: Sequence[AccountKey]) -> list[list[str]]:
    return [list(column) for column in zip(*keys, strict=True)] if keys else [[], [], [], [], []]


async def _lock_accounts(driver: Any, keys: Sequence[AccountKey]) -> dict[AccountKey, tuple[str, int]]:
    rows = await driver.fetch(_LOCK_ACCOUNTS, *_columns(keys))
    return {(r[1], r[2], r[3], r[4], r[5]): (r[0], int(r[6])) for r in rows}


async def post_batch(driver: Any, postings: Sequence[Posting]) -> list[str | ledger.InsufficientFunds]:
    """Post `postings` in order inside the caller's open transaction on the asyncpg connection `driver`:
    each account they touch is locked once (FOR UPDATE, in id order, like `post`), every transaction is
    applied in Python with domain.ledger.apply against the running balances, and the transactions, entries
    and balances of those that can pay are written with one statement each.

    Returns, per posting, its transaction id, or the InsufficientFunds that refused it (nothing of it
    written; the postings after it see the balances without it). The caller commits. A repeated
    idempotency key fails the insert (unique violation), and the caller's transaction with it.
    """
    wanted = sorted(
        {
            (p.merchant_id, p.environment, p.transaction.currency, e.account.kind, e.account.owner)
            for p in postings
            for e in p.transaction.entries
        }
    )
    locked = await _lock_accounts(driver, wanted)
    missing = [k for k in wanted if k not in locked]
    if missing:
        columns = _columns(missing)
        ids = [new_id("ledger_account") for _ in missing]
        await driver.execute(_CREATE_ACCOUNTS, ids, *columns, [0] * len(missing))
        locked |= await _lock_accounts(driver, missing)
    balances = {key: balance for key, (_, balance) in locked.items()}
    results: list[str | ledger.InsufficientFunds] = []
    written: list[tuple[Posting, list[AccountKey]]] = []
    for posting in postings:
        txn = posting.transaction
        keys = [
            (posting.merchant_id, posting.environment, txn.currency, e.account.kind, e.account.owner)
            for e in txn.entries
        ]
        before = {e.account: balances[k] for e, k in zip(txn.entries, keys, strict=True)}
        try:
            after = ledger.apply(before, txn)
        except ledger.InsufficientFunds as exc:
            results.append(exc)
            continue
        for e, k in zip(txn.entries, keys, strict=True):
            balances[k] = after[e.account]
        results.append(posting.transaction_id)
        written.append((posting, keys))
    if not written:
        return results
    await driver.execute(
        _INSERT_TRANSACTIONS,
        [p.transaction_id for p, _ in written],
        [p.merchant_id for p, _ in written],
        [p.environment for p, _ in written],
        [p.transaction.kind for p, _ in written],
        [p.transaction.currency for p, _ in written],
        [p.idempotency_key for p, _ in written],
        [p.reference_id for p, _ in written],
        [p.description for p, _ in written],
    )
    entry_txns, entry_accounts, entry_amounts = [], [], []
    touched: set[AccountKey] = set()
    for posting, keys in written:
        for entry, key in zip(posting.transaction.entries, keys, strict=True):
            entry_txns.append(posting.transaction_id)
            entry_accounts.append(locked[key][0])
            entry_amounts.append(entry.amount)
            touched.add(key)
    await driver.execute(_INSERT_ENTRIES, entry_txns, entry_accounts, entry_amounts)
    moved = sorted(touched)
    await driver.execute(_SET_BALANCES, [locked[k][0] for k in moved], [balances[k] for k in moved])
    return results
