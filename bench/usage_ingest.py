"""POST /v0/usage with an instant wallet debit, against the single-event POST /v0/events rate of the same run.

Three sides, all through the real API (`accrue api` in its own process) from the minimal keep-alive client
of bench/_harness.py, in alternating slices so that each sees the same background load:
- `events`: single-event POST /v0/events (the issue's baseline);
- `usage, 1,000 customers`: POST /v0/usage spread over 1,000 customers, each with a Legacy (billingVersion 0)
  subscription whose plan prices the metric `instant` and a funded wallet: every 201 means the event row,
  its ledger transaction, entries and both balances are committed;
- `usage, one customer`: every event on ONE customer's wallet (a hot row), the case a per-request row lock
  would serialize.

Targets (issue 10): 1,000 customers ≥ 0.5× events; one customer ≥ 0.5× 1,000 customers. The run ends with
a check of what was stored: one usage event and one ledger transaction per 201, the wallets debited by
exactly the charged amounts, and db.ledger.audit() == [].

The catalog, customers and subscriptions are inserted directly (the API under test has no Temporal); the
wallets are funded with db.ledger.post (a top-up).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from _harness import accrue_api, database_url, new_merchant
from events_ingest import Side, postmaster, row, server_process
from events_ingest import body as event_body
from sqlalchemy import insert

from db import ledger as records
from db.merchants import NewMerchant
from db.models import (
    BillableMetric,
    Customer,
    Organization,
    Plan,
    PlanPrice,
    Price,
    Product,
    Subscription,
)
from db.session import create_engine, session_factory
from domain import ledger
from domain.ids import new_id

START = datetime(2026, 1, 1, tzinfo=UTC)
UNIT_PRICE = "0.001"
FUNDS = 10**6 * 10**9  # a million dollars each: no event of the run is refused


async def catalog(url: str, merchant: NewMerchant, customers: int) -> tuple[str, list[str]]:
    """A Legacy plan pricing one metric `instant`, `customers` customers subscribed to it with funded
    wallets; returns (metric id, customer ids)."""
    engine = create_engine(url, pool_size=2)
    tenant = {"merchant_id": merchant.merchant_id, "environment": merchant.environment}
    async with session_factory(engine)() as session:
        product = Product(id=new_id("product"), name="Bench", description="d", metadata_={}, **tenant)
        metric = BillableMetric(
            id=new_id("billable_metric"), product_id=product.id, name="Calls", description="calls",
            unit="calls", aggregation="COUNT", **tenant,
        )  # fmt: skip
        price = Price(
            id=new_id("price"), billable_metric_id=metric.id, model="standard", payment_term="instant",
            properties={"unitPrice": UNIT_PRICE}, invoice_display_name="Calls", **tenant,
        )  # fmt: skip
        plan = Plan(
            id=new_id("plan"), product_id=product.id, name="PAYG", currency="USD", billing_cadence="P1M",
            default_tax_code="eservice", default_tax_rate=Decimal(0), tax_behavior="exclusive",
            renewal_reminder_enabled=False, renewal_reminder_days=3, billing_version=0, **tenant,
        )  # fmt: skip
        session.add(product)
        await session.flush()
        session.add_all([metric, plan])
        await session.flush()
        session.add(price)
        await session.flush()
        session.add(PlanPrice(plan_id=plan.id, price_id=price.id, position=0))
        consumers = [new_id("organization") for _ in range(customers)]
        ids = [new_id("customer") for _ in range(customers)]
        await session.execute(
            insert(Organization),
            [
                {"id": c, "kind": "consumer", "name": f"C{i}", "email": f"c{i}@bench.test",
                 "owner_merchant_id": merchant.merchant_id, "environment": merchant.environment}
                for i, c in enumerate(consumers)
            ],
        )  # fmt: skip
        await session.execute(
            insert(Customer),
            [
                {"id": c, "consumer_id": o, "notification_settings": {}, **tenant}
                for c, o in zip(ids, consumers, strict=True)
            ],
        )
        await session.execute(
            insert(Subscription),
            [
                {"id": new_id("subscription"), "customer_id": c, "plan_id": plan.id, "name": "PAYG",
                 "status": "active", "started_at": START, "billing_anchor": START, "billing_cadence": "P1M",
                 "currency": "USD", "activated_at": START, "current_period": 1, **tenant}
                for c in ids
            ],
        )  # fmt: skip
        await session.commit()
        for c in ids:
            await records.post(
                session,
                merchant.merchant_id,
                merchant.environment,
                ledger.funding(merchant.merchant_id, c, "USD", FUNDS),
                idempotency_key=f"topup:bench-{c}",
            )
        await session.commit()
    await engine.dispose()
    return metric.id, ids


def usage_bodies(merchant_id: str, metric_id: str, customers: list[str], tag: str, start: int) -> Any:
    at = (START + timedelta(days=1)).isoformat()

    def make(i: int) -> dict[str, Any]:
        n = start + i
        return {
            "merchantId": merchant_id,
            "customerId": customers[n % len(customers)],
            "idempotencyKey": f"{tag}-{n}",
            "timestamp": at,
            "properties": [{"billableMetricId": metric_id, "quantity": 1 + n % 3}],
        }

    return make


def events(start: int) -> Any:
    return lambda i: event_body(start + i)


async def check(url: str, merchant: NewMerchant, customers: list[str], expected: int) -> None:
    """One usage event and one ledger transaction per 201; each wallet short by exactly its events' price;
    the ledger audit clean."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        stored = int(await conn.fetchval("select count(*) from usage_events"))
        charges = int(await conn.fetchval("select count(*) from ledger_transactions where kind = 'usage'"))
        debited = await conn.fetch(
            """
            select a.owner_id, $1::bigint - a.balance as spent,
                   (select coalesce(sum(u.instant_amount), 0) * 1000000000 from usage_events u
                    where u.customer_id = a.owner_id) as priced
            from ledger_accounts a where a.kind = 'customer_main'
            """,
            FUNDS,
        )
    finally:
        await conn.close()
    assert stored == charges == expected, (stored, charges, expected)
    assert all(int(r["spent"]) == int(r["priced"]) for r in debited), (
        "a wallet moved by other than its events"
    )
    engine = create_engine(url, pool_size=2)
    async with session_factory(engine)() as session:
        problems = await records.audit(session, merchant.merchant_id)
    await engine.dispose()
    assert problems == [], problems[:5]
    print(f"stored {stored} usage events with {charges} ledger charges; wallets exact; ledger audit clean")


async def main(requests: int, concurrency: int, rounds: int, slices: int, customers: int) -> None:
    from _harness import new_metric

    url = database_url()
    merchant = await new_merchant(url)
    key, m = merchant.api_key, merchant.merchant_id
    metric_id, ids = await catalog(url, merchant, customers)
    hot = [ids[0]]
    with accrue_api(url) as real_url:
        await new_metric(real_url, merchant)
        process, database = server_process(real_url), await postmaster(url)
        baseline = Side(real_url, "/v0/events", process, database)
        spread = Side(real_url, "/v0/usage", process, database)
        single = Side(real_url, "/v0/usage", process, database)
        warm = min(1000, requests)
        await baseline.run(key, events(10**9), warm, concurrency)
        await spread.run(key, usage_bodies(m, metric_id, ids, "warm", 0), warm, concurrency)
        await single.run(key, usage_bodies(m, metric_id, hot, "warmhot", 0), warm, concurrency)
        sent = 2 * warm
        print(
            f"{requests} requests per side per round in {slices} alternating slices, "
            f"{concurrency} concurrent keep-alive connections, {customers} customers"
        )
        print(
            f"{'run':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms':>9}{'db ms':>8}{'client ms':>10}"
            f"{'ratio':>11}"
        )
        spread_ratios, hot_ratios = [], []
        per_slice = requests // slices
        offset = 0
        for r in range(1, rounds + 1):
            for side in (baseline, spread, single):
                side.reset()
            for _ in range(slices):
                await baseline.run(key, events(offset), per_slice, concurrency)
                await spread.run(
                    key, usage_bodies(m, metric_id, ids, "spread", offset), per_slice, concurrency
                )
                await single.run(key, usage_bodies(m, metric_id, hot, "hot", offset), per_slice, concurrency)
                offset += per_slice
                sent += 2 * per_slice
            spread_ratios.append(spread.rate / baseline.rate)
            hot_ratios.append(single.rate / spread.rate)
            print(row(f"POST /v0/events (baseline) #{r}", baseline))
            print(row(f"POST /v0/usage, {customers} customers #{r}", spread, spread_ratios[-1]))
            print(row(f"POST /v0/usage, one customer #{r}", single, hot_ratios[-1]))
        print(
            f"median: {customers} customers {statistics.median(spread_ratios):.2f}x the events rate "
            f"(target 0.50x; rounds {min(spread_ratios):.2f}x to {max(spread_ratios):.2f}x); one customer "
            f"{statistics.median(hot_ratios):.2f}x the {customers}-customer rate (target 0.50x; rounds "
            f"{min(hot_ratios):.2f}x to {max(hot_ratios):.2f}x)"
        )
    await check(url, merchant, ids, sent)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=4, help="alternating slices per round")
    parser.add_argument("--customers", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.rounds, args.slices, args.customers))
