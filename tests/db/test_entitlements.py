"""db.entitlements against real PostgreSQL: a reservation moves wallet money to reserved funds with its row,
consumption decrements it and releases the remainder when the uses run out, every refusal changes nothing,
and a release happens once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db import entitlements
from db import ledger as records
from db.merchants import NewMerchant
from db.models import Entitlement, LedgerTransaction, Subscription
from db.session import session_factory
from domain import ledger
from tests.factories import Factory

USD = "USD"
DOLLAR = 10**9
NOW = datetime(2026, 3, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=30)


async def _setup(engine: AsyncEngine, m: NewMerchant, funds: int) -> Subscription:
    sub = await Factory(engine, m).subscription(plan=await Factory(engine, m).plan(billing_version=0))
    if funds:
        async with session_factory(engine)() as session:
            await records.post(
                session,
                m.merchant_id,
                m.environment,
                ledger.funding(m.merchant_id, sub.customer_id, USD, funds),
                idempotency_key=f"topup:{sub.id}",
            )
            await session.commit()
    return sub


async def _create(
    engine: AsyncEngine, m: NewMerchant, sub: Subscription, amount: int, max_uses: int = 1
) -> Entitlement:
    async with session_factory(engine)() as session:
        row = await entitlements.create(
            session,
            merchant_id=m.merchant_id,
            environment=m.environment,
            customer_id=sub.customer_id,
            subscription_id=sub.id,
            plan_id=sub.plan_id,
            product_id="prod_x",
            currency=USD,
            billable_metrics=[{"billableMetricId": "bm_x", "quantity": "1", "price": "1"}],
            amount=amount,
            max_uses=max_uses,
            expires_at=LATER,
            test_clock_id=None,
        )
        await session.commit()
        return row


async def _consume(
    engine: AsyncEngine,
    m: NewMerchant,
    ent: Entitlement,
    amount: int,
    now: datetime = NOW,
    customer: str = "",
) -> Entitlement:
    async with session_factory(engine)() as session:
        row = await entitlements.consume(
            session, m.merchant_id, m.environment, ent.id, customer or ent.customer_id, amount, now
        )
        if amount:
            await records.post(
                session,
                m.merchant_id,
                m.environment,
                ledger.usage(m.merchant_id, ent.customer_id, USD, amount, Decimal(0), from_reserved=True),
                idempotency_key=f"usage:{ent.id}:{row.used_count}",
            )
        await session.commit()
        return row


async def _wallet(engine: AsyncEngine, m: NewMerchant, owner: str) -> dict[str, int]:
    async with session_factory(engine)() as session:
        found = await records.balances(session, m.merchant_id, m.environment, owner, USD)
    return {kind: balance for (_, kind), balance in found.items()}


async def _row(engine: AsyncEngine, ent: Entitlement) -> Entitlement:
    async with session_factory(engine)() as session:
        row = await session.get(Entitlement, ent.id)
        assert row is not None
        return row


async def _audit(engine: AsyncEngine, m: NewMerchant) -> list[str]:
    async with session_factory(engine)() as session:
        return await records.audit(session, m.merchant_id)


async def test_create_reserves_the_amount_with_the_row(engine: AsyncEngine, merchant: NewMerchant) -> None:
    sub = await _setup(engine, merchant, 10 * DOLLAR)
    ent = await _create(engine, merchant, sub, 4 * DOLLAR)
    assert (ent.status, ent.remaining_balance, ent.used_count) == ("active", 4 * DOLLAR, 0)
    assert ent.reserve_transaction_id is not None
    assert await _wallet(engine, merchant, sub.customer_id) == {
        "customer_main": 6 * DOLLAR,
        "customer_reserved": 4 * DOLLAR,
    }
    assert await _audit(engine, merchant) == []


async def test_create_the_wallet_cannot_pay_writes_nothing(
    engine: AsyncEngine, merchant: NewMerchant
) -> None:
    sub = await _setup(engine, merchant, DOLLAR)
    with pytest.raises(ledger.InsufficientFunds) as raised:
        await _create(engine, merchant, sub, 3 * DOLLAR)
    assert raised.value.shortfall == 2 * DOLLAR
    async with session_factory(engine)() as session:
        rows = (
            await session.scalars(select(Entitlement).where(Entitlement.merchant_id == merchant.merchant_id))
        ).all()
    assert rows == []
    assert (await _wallet(engine, merchant, sub.customer_id))["customer_main"] == DOLLAR


async def test_consume_until_the_uses_run_out_releases_the_remainder(
    engine: AsyncEngine, merchant: NewMerchant
) -> None:
    sub = await _setup(engine, merchant, 10 * DOLLAR)
    ent = await _create(engine, merchant, sub, 5 * DOLLAR, max_uses=2)
    first = await _consume(engine, merchant, ent, DOLLAR)
    assert (first.status, first.remaining_balance, first.used_count) == ("active", 4 * DOLLAR, 1)
    second = await _consume(engine, merchant, ent, DOLLAR)
    assert (second.status, second.remaining_balance, second.used_count) == ("exhausted", 0, 2)
    assert second.release_transaction_id is not None
    # 10 funded, 2 spent, 3 released back; nothing left reserved.
    assert await _wallet(engine, merchant, sub.customer_id) == {
        "customer_main": 8 * DOLLAR,
        "customer_reserved": 0,
    }
    with pytest.raises(entitlements.EntitlementUnavailable) as raised:
        await _consume(engine, merchant, ent, DOLLAR)
    assert raised.value.reason == "exhausted"
    assert "exhausted" in str(raised.value)
    assert await _audit(engine, merchant) == []


async def test_consume_the_whole_balance_exhausts_it(engine: AsyncEngine, merchant: NewMerchant) -> None:
    sub = await _setup(engine, merchant, 3 * DOLLAR)
    ent = await _create(engine, merchant, sub, 3 * DOLLAR, max_uses=5)
    row = await _consume(engine, merchant, ent, 3 * DOLLAR)
    assert (row.status, row.remaining_balance, row.used_count, row.release_transaction_id) == (
        "exhausted",
        0,
        1,
        None,
    )
    assert await _wallet(engine, merchant, sub.customer_id) == {"customer_main": 0, "customer_reserved": 0}


async def test_refusals_change_nothing(
    engine: AsyncEngine, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    sub = await _setup(engine, merchant, 10 * DOLLAR)
    ent = await _create(engine, merchant, sub, 2 * DOLLAR, max_uses=3)
    cases = [
        (dict(amount=3 * DOLLAR), "insufficient", "short by 1 USD"),
        (dict(amount=DOLLAR, now=LATER), "expired", "expired"),
        (dict(amount=DOLLAR, customer="cus_someone_else"), "wrong_customer", "does not belong"),
    ]
    for kwargs, reason, text in cases:
        with pytest.raises(entitlements.EntitlementUnavailable) as raised:
            await _consume(engine, merchant, ent, **kwargs)  # type: ignore[arg-type]
        assert raised.value.reason == reason
        assert text in str(raised.value)
    with pytest.raises(entitlements.EntitlementUnavailable) as raised:
        await _consume(engine, other_merchant, ent, DOLLAR)
    assert raised.value.reason == "not_found"
    row = await _row(engine, ent)
    assert (row.status, row.remaining_balance, row.used_count) == ("active", 2 * DOLLAR, 0)
    assert await _wallet(engine, merchant, sub.customer_id) == {
        "customer_main": 8 * DOLLAR,
        "customer_reserved": 2 * DOLLAR,
    }


async def test_release_remainder_is_idempotent(engine: AsyncEngine, merchant: NewMerchant) -> None:
    sub = await _setup(engine, merchant, 10 * DOLLAR)
    ent = await _create(engine, merchant, sub, 4 * DOLLAR, max_uses=3)
    await _consume(engine, merchant, ent, DOLLAR)

    async def release() -> None:
        async with session_factory(engine)() as session:
            row = await entitlements.lock(session, merchant.merchant_id, merchant.environment, ent.id)
            assert row is not None
            await entitlements.release_remainder(session, row, LATER, "expired")
            await session.commit()

    await asyncio.gather(release(), release())
    await release()
    row = await _row(engine, ent)
    assert (row.status, row.remaining_balance, row.released_at) == ("expired", 0, LATER)
    assert await _wallet(engine, merchant, sub.customer_id) == {
        "customer_main": 9 * DOLLAR,
        "customer_reserved": 0,
    }
    async with session_factory(engine)() as session:
        releases = (
            await session.scalars(
                select(LedgerTransaction.idempotency_key).where(
                    LedgerTransaction.merchant_id == merchant.merchant_id, LedgerTransaction.kind == "release"
                )
            )
        ).all()
    assert releases == [f"release:{ent.id}"]
    with pytest.raises(entitlements.EntitlementUnavailable) as raised:
        await _consume(engine, merchant, ent, DOLLAR, now=NOW)
    assert raised.value.reason == "expired"
    assert await _audit(engine, merchant) == []


async def test_concurrent_consumes_never_overspend(engine: AsyncEngine, merchant: NewMerchant) -> None:
    sub = await _setup(engine, merchant, 10 * DOLLAR)
    ent = await _create(engine, merchant, sub, 5 * DOLLAR, max_uses=100)

    async def one() -> bool:
        try:
            await _consume(engine, merchant, ent, DOLLAR)
        except entitlements.EntitlementUnavailable:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(8)))
    assert sum(results) == 5
    row = await _row(engine, ent)
    assert (row.status, row.remaining_balance, row.used_count) == ("exhausted", 0, 5)
    assert await _audit(engine, merchant) == []
