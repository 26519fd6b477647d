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
    """Everything wrong with the ledger (empty when sound): unbalanced transactions, entries of no
    transaction or account (or of another merchant's account), balances that differ from the sum of their
    entries, overdrawn customer accounts."""
    problems: list[str] = []
    strays = (
        select(LedgerEntry.id)
        .outerjoin(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .outerjoin(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .where(
            (LedgerTransaction.id.is_(None))
            | (LedgerAccount.id.is_(None))
            | (LedgerAccount.merchant_id != LedgerTransaction.merchant_id)
        )
    )
    if merchant_id is not None:
        strays = strays.where(
            (LedgerTransaction.merchant_id == merchant_id) | (LedgerAccount.merchant_id == merchant_id)
        )
    for (entry_id,) in (await session.execute(strays)).all():
        problems.append(f"entry {entry_id} belongs to no transaction or account of its merchant")
    entries = select(LedgerEntry.transaction_id, LedgerEntry.amount).join(
        LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id
    )
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
# The writes of a batch as data-modifying CTEs of one statement (the foreign keys of the entries are checked
# at its end, when the transactions exist); `{n}` numbers the parameters after the caller's own.
_WRITE_CTES = """
ledger_t AS (
    INSERT INTO ledger_transactions
        (id, merchant_id, environment, kind, currency, idempotency_key, reference_id, description)
    SELECT * FROM unnest(${0}::varchar[], ${1}::varchar[], ${2}::varchar[], ${3}::varchar[], ${4}::varchar[],
                         ${5}::varchar[], ${6}::varchar[], ${7}::text[])
),
ledger_e AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    SELECT * FROM unnest(${8}::varchar[], ${9}::varchar[], ${10}::bigint[])
),
ledger_b AS (
    UPDATE ledger_accounts a SET balance = u.balance, updated_at = now()
    FROM unnest(${11}::varchar[], ${12}::bigint[]) AS u(id, balance)
    WHERE a.id = u.id
)"""


@dataclass
class LedgerWrite:
    """What `plan_batch` decided to write: the new transactions, their entries and the new balances."""

    transactions: list[list[Any]]  # id, merchant, environment, kind, currency, key, reference, description
    entries: list[list[Any]]  # transaction id, account id, amount
    balances: list[list[Any]]  # account id, balance

    @property
    def empty(self) -> bool:
        return not self.transactions[0]

    def ctes(self, first: int) -> tuple[str, list[Any]]:
        """The writes as three CTEs (`ledger_t`, `ledger_e`, `ledger_b`) whose parameters start at
        $`first`, and those parameters: to run in one statement with the caller's own writes."""
        numbers = [str(first + i) for i in range(13)]
        return _WRITE_CTES.format(*numbers), [*self.transactions, *self.entries, *self.balances]

    def guarded_ctes(self, first: int, source: str, column: str) -> tuple[str, list[Any]]:
        """Like `ctes`, for a statement that commits on its own: only the transactions whose id the CTE
        `source` returns (in `column`) are written, with their entries, and each balance moves by the sum
        of its written entries (the accounts are not locked beforehand: the row locks of this UPDATE order
        concurrent writers, and the not-overdrawn CHECK refuses the whole statement if one would go below
        zero, when the caller falls back to `plan_batch`)."""
        n = [str(first + i) for i in range(11)]
        sql = f"""
ledger_t AS (
    INSERT INTO ledger_transactions
        (id, merchant_id, environment, kind, currency, idempotency_key, reference_id, description)
    SELECT * FROM unnest(${n[0]}::varchar[], ${n[1]}::varchar[], ${n[2]}::varchar[], ${n[3]}::varchar[],
                         ${n[4]}::varchar[], ${n[5]}::varchar[], ${n[6]}::varchar[], ${n[7]}::text[])
        AS t(id, merchant_id, environment, kind, currency, idempotency_key, reference_id, description)
    WHERE t.id IN (SELECT {column} FROM {source})
    RETURNING id
),
ledger_e AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount)
    SELECT * FROM unnest(${n[8]}::varchar[], ${n[9]}::varchar[], ${n[10]}::bigint[])
        AS e(transaction_id, account_id, amount)
    WHERE e.transaction_id IN (SELECT id FROM ledger_t)
    RETURNING account_id, amount
),
ledger_b AS (
    UPDATE ledger_accounts a SET balance = a.balance + d.delta, updated_at = now()
    FROM (SELECT account_id, sum(amount) AS delta FROM ledger_e GROUP BY account_id) d
    WHERE a.id = d.account_id
)"""
        return sql, [*self.transactions, *self.entries]


async def write_batch(driver: Any, write: LedgerWrite) -> None:
    if not write.empty:
        sql, args = write.ctes(1)
        await driver.execute(f"WITH {sql} SELECT 1", *args)


def _columns(keys: Sequence[AccountKey]) -> list[list[str]]:
    return [list(column) for column in zip(*keys, strict=True)] if keys else [[], [], [], [], []]


async def _lock_accounts(driver: Any, keys: Sequence[AccountKey]) -> dict[AccountKey, tuple[str, int]]:
    rows = await driver.fetch(_LOCK_ACCOUNTS, *_columns(keys))
    return {(r[1], r[2], r[3], r[4], r[5]): (r[0], int(r[6])) for r in rows}


async def post_batch(driver: Any, postings: Sequence[Posting]) -> list[str | ledger.InsufficientFunds]:
    """Post `postings` in order inside the caller's open transaction on the asyncpg connection `driver`:
    each account they touch is locked once (FOR UPDATE, in id order, like `post`), every transaction is
    applied in Python with domain.ledger.apply against the running balances, and the transactions, entries
    and balances of those that can pay are written in one statement.

    Returns, per posting, its transaction id, or the InsufficientFunds that refused it (nothing of it
    written; the postings after it see the balances without it). The caller commits. A repeated
    idempotency key fails the insert (unique violation), and the caller's transaction with it.
    """
    results, write = await plan_batch(driver, postings)
    await write_batch(driver, write)
    return results


async def plan_batch(
    driver: Any, postings: Sequence[Posting]
) -> tuple[list[str | ledger.InsufficientFunds], LedgerWrite]:
    """post_batch without the write: the accounts locked and the postings applied, and what to write
    (`write_batch`, or `LedgerWrite.ctes` inside the caller's own statement, before it commits)."""
    wanted = sorted(
        {
            (p.merchant_id, p.environment, p.transaction.currency, e.account.kind, e.account.owner)
            for p in postings
            for e in p.transaction.entries
        }
    )
    locked = await _lock_accounts(driver, wanted) if wanted else {}
    missing = [k for k in wanted if k not in locked]
    if missing:
        columns = _columns(missing)
        ids = [new_id("ledger_account") for _ in missing]
        await driver.execute(_CREATE_ACCOUNTS, ids, *columns, [0] * len(missing))
        locked |= await _lock_accounts(driver, missing)
    return apply_batch(postings, locked)


def account_keys(postings: Sequence[Posting]) -> list[AccountKey]:
    """The accounts `postings` move, in lock order."""
    return sorted(
        {
            (p.merchant_id, p.environment, p.transaction.currency, e.account.kind, e.account.owner)
            for p in postings
            for e in p.transaction.entries
        }
    )


def apply_batch(
    postings: Sequence[Posting], accounts: dict[AccountKey, tuple[str, int]]
) -> tuple[list[str | ledger.InsufficientFunds], LedgerWrite]:
    """Apply `postings` in order to `accounts` ({key: (account id, balance)}, every account they move):
    per posting its transaction id or the InsufficientFunds that refused it, and what to write."""
    locked = accounts
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
    transactions: list[list[Any]] = [[] for _ in range(8)]
    for p, _ in written:
        for column, value in zip(
            transactions,
            (
                p.transaction_id,
                p.merchant_id,
                p.environment,
                p.transaction.kind,
                p.transaction.currency,
                p.idempotency_key,
                p.reference_id,
                p.description,
            ),
            strict=True,
        ):
            column.append(value)
    entries: list[list[Any]] = [[], [], []]
    touched: set[AccountKey] = set()
    for posting, keys in written:
        for entry, key in zip(posting.transaction.entries, keys, strict=True):
            entries[0].append(posting.transaction_id)
            entries[1].append(locked[key][0])
            entries[2].append(entry.amount)
            touched.add(key)
    moved = sorted(touched)
    write = LedgerWrite(transactions, entries, [[locked[k][0] for k in moved], [balances[k] for k in moved]])
    return results, write
