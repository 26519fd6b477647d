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
