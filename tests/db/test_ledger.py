"""db.ledger against real PostgreSQL: balances follow the entries, a key posts once, a debit the wallet
cannot pay writes nothing, and concurrent debits of one wallet neither lose an update nor overdraw it."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db import ledger as records
from db.merchants import NewMerchant
from db.models import LedgerEntry, LedgerTransaction
from db.session import session_factory
from domain import ledger

USD = "USD"
DOLLAR = 10**9


async def _post(engine: AsyncEngine, m: NewMerchant, txn: ledger.Transaction, key: str) -> records.Posted:
    async with session_factory(engine)() as session:
        posted = await records.post(session, m.merchant_id, m.environment, txn, idempotency_key=key)
        await session.commit()
        return posted


async def _wallet(engine: AsyncEngine, m: NewMerchant, owner: str) -> dict[tuple[str, str], int]:
    async with session_factory(engine)() as session:
        return await records.balances(session, m.merchant_id, m.environment, owner)


async def _audit(engine: AsyncEngine, m: NewMerchant) -> list[str]:
    async with session_factory(engine)() as session:
        return await records.audit(session, m.merchant_id)


async def test_funding_then_usage_moves_money_and_balances_match_entries(
    engine: AsyncEngine, merchant: NewMerchant
) -> None:
    m, cus = merchant, "cus_ledger1"
    await _post(engine, m, ledger.funding(m.merchant_id, cus, USD, 10 * DOLLAR), "fund-1")
    charge = ledger.usage(m.merchant_id, cus, USD, 3 * DOLLAR, Decimal("0.1"))
    posted = await _post(engine, m, charge, "use-1")
    assert posted.created
    assert posted.balances[ledger.main(cus)] == 7 * DOLLAR
    assert await _wallet(engine, m, cus) == {(USD, "customer_main"): 7 * DOLLAR}
    merchant_side = await _wallet(engine, m, m.merchant_id)
    assert merchant_side == {
        (USD, "external_funding"): -10 * DOLLAR,
        (USD, "merchant_revenue"): 2_700_000_000,
        (USD, "platform_fee"): 300_000_000,
    }
    assert await _audit(engine, m) == []


async def test_a_key_posts_once(engine: AsyncEngine, merchant: NewMerchant) -> None:
    m, cus = merchant, "cus_ledger2"
    first = await _post(engine, m, ledger.funding(m.merchant_id, cus, USD, DOLLAR), "fund-twice")
    again = await _post(engine, m, ledger.funding(m.merchant_id, cus, USD, DOLLAR), "fund-twice")
    assert (again.created, again.transaction_id) == (False, first.transaction_id)
    assert await _wallet(engine, m, cus) == {(USD, "customer_main"): DOLLAR}


async def test_a_debit_the_wallet_cannot_pay_writes_nothing(
    engine: AsyncEngine, merchant: NewMerchant
) -> None:
    m, cus = merchant, "cus_ledger3"
    await _post(engine, m, ledger.funding(m.merchant_id, cus, USD, DOLLAR), "fund-3")
    with pytest.raises(ledger.InsufficientFunds) as raised:
        await _post(engine, m, ledger.usage(m.merchant_id, cus, USD, 2 * DOLLAR, Decimal(0)), "use-3")
    assert raised.value.shortfall == DOLLAR
    assert "short by 1 USD" in str(raised.value)
    assert await _wallet(engine, m, cus) == {(USD, "customer_main"): DOLLAR}
    async with session_factory(engine)() as session:
        keys = await session.scalars(
            select(LedgerTransaction.idempotency_key).where(LedgerTransaction.merchant_id == m.merchant_id)
        )
        assert list(keys) == ["fund-3"]


async def test_concurrent_debits_of_one_wallet_never_overdraw_it(
    engine: AsyncEngine, merchant: NewMerchant
) -> None:
    m, cus = merchant, "cus_ledger4"
    await _post(engine, m, ledger.funding(m.merchant_id, cus, USD, 30 * DOLLAR), "fund-4")

    async def debit(i: int) -> bool:
        try:
            await _post(engine, m, ledger.usage(m.merchant_id, cus, USD, DOLLAR, Decimal(0)), f"use-4-{i}")
        except ledger.InsufficientFunds:
            return False
        return True

    results = await asyncio.gather(*(debit(i) for i in range(50)))
    assert sum(results) == 30
    assert (await _wallet(engine, m, cus))[(USD, "customer_main")] == 0
    async with session_factory(engine)() as session:
        entries = await session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
            .where(LedgerTransaction.merchant_id == m.merchant_id, LedgerTransaction.kind == "usage")
        )
    assert entries == 30 * 2
    assert await _audit(engine, m) == []


async def test_reserve_then_release_round_trips(engine: AsyncEngine, merchant: NewMerchant) -> None:
    m, cus = merchant, "cus_ledger5"
    await _post(engine, m, ledger.funding(m.merchant_id, cus, USD, 5 * DOLLAR), "fund-5")
    await _post(engine, m, ledger.reserve(cus, USD, 4 * DOLLAR), "reserve-5")
    await _post(
        engine, m, ledger.usage(m.merchant_id, cus, USD, DOLLAR, Decimal(0), from_reserved=True), "u-5"
    )
    await _post(engine, m, ledger.release(cus, USD, 3 * DOLLAR), "release-5")
    assert await _wallet(engine, m, cus) == {
        (USD, "customer_main"): 4 * DOLLAR,
        (USD, "customer_reserved"): 0,
    }
    assert await _audit(engine, m) == []


async def test_the_audit_finds_an_entry_of_no_account(engine: AsyncEngine, merchant: NewMerchant) -> None:
    m, cus = merchant, "cus_ledger6"
    posted = await _post(engine, m, ledger.funding(m.merchant_id, cus, USD, DOLLAR), "fund-6")
    async with session_factory(engine)() as session:
        session.add(LedgerEntry(transaction_id=posted.transaction_id, account_id="acc_nowhere", amount=0))
        await session.commit()
    problems = await _audit(engine, m)
    assert len(problems) == 1 and "belongs to no transaction or account" in problems[0]
