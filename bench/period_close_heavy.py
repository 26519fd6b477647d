"""Period close under heavy usage: N subscriptions with E meter events each in the closing period, against the
light case (the same subscriptions with a few events each), in the same run on the same stack.

Both cases are period_close.py's setup (plan, customers, subscriptions through the API, all idle in period 1)
for two merchants. The heavy merchant's customers then get E events each in period 1, inserted in one
INSERT … SELECT from unnest × generate_series (2 million rows at the default scale load in seconds instead of
through the API). Timed, one after the other: one PATCH /v0/testClocks/{id} to periodEnd + grace for each
merchant's clock, until all its invoices are ISSUED. Aggregation runs in PostgreSQL (db.meter_queries), so
the heavy case should cost little more than the light one (issue 7: ≤ 1.5×). Also printed: the aggregation
SQL alone for one heavy subscription, and its EXPLAIN plan.

Run: .venv/bin/python bench/period_close_heavy.py [--subscriptions 1000] [--events 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from period_close import (
    EVENT_TYPE,
    EVENTS_PER_SUBSCRIPTION,
    GRACE,
    accrue_phase,
    count_invoices,
    one_month_later,
    setup,
    stack,
    wait_until,
)
from sqlalchemy import select

from db.merchants import NewMerchant, create_merchant
from db.meter_queries import UsageQuery, period_usage
from db.models import Subscription
from db.session import create_engine, session_factory

_HEAVY = """
INSERT INTO meter_events
    (id, merchant_id, environment, type, source, subject, data, timestamp, idempotency_key)
SELECT 'evt_heavy_' || ($7 + c.n) || '_' || g, $1, 'sandbox', $2, 'bench', c.id,
       jsonb_build_object('tokens', 1 + g % 100, 'model', CASE WHEN g % 3 = 0 THEN 'large' ELSE 'small' END),
       $3::timestamptz + (g::float8 / ($4 + 1)) * ($5::timestamptz - $3::timestamptz),
       'heavy-' || ($7 + c.n) || '-' || g
FROM unnest($6::text[]) WITH ORDINALITY AS c(id, n), generate_series(1, $4) AS g
"""


async def customers_of(url: str, merchant_id: str) -> list[str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            rows = await session.scalars(
                select(Subscription.customer_id).where(Subscription.merchant_id == merchant_id)
            )
            return list(rows)
    finally:
        await engine.dispose()


async def load_heavy(
    url: str, merchant_id: str, customers: list[str], per_customer: int, start: datetime, end: datetime
) -> None:
    conn = await asyncpg.connect(
        url.replace("postgresql+asyncpg://", "postgresql://", 1), command_timeout=3600
    )
    try:
        began = time.perf_counter()
        chunk = max(1, 200_000 // per_customer)
        for i in range(0, len(customers), chunk):
            part = customers[i : i + chunk]
            await conn.execute(_HEAVY, merchant_id, EVENT_TYPE, start, per_customer, end, part, i)
        await conn.execute("VACUUM ANALYZE meter_events")
        rows = await conn.fetchval("SELECT count(*) FROM meter_events")
        print(
            f"  loaded {len(customers) * per_customer:,} heavy events in {time.perf_counter() - began:.1f} s "
            f"({rows:,} events in the table)"
        )
    finally:
        await conn.close()


async def sql_alone(url: str, merchant: NewMerchant, customer: str, start: datetime, end: datetime) -> None:
    """The aggregation one heavy subscription's finalize runs, alone: median of 20, and its plan."""
    query = UsageQuery(
        merchant_id=merchant.merchant_id,
        environment="sandbox",
        event_type=EVENT_TYPE,
        subjects=(customer,),
        start=start,
        end=end,
        aggregation="SUM",
        value_property="$.tokens",
    )
    engine = create_engine(url, pool_size=1)
    try:
        times = []
        async with session_factory(engine)() as session:
            for _ in range(20):
                began = time.perf_counter()
                usage = await period_usage(session, query)
                times.append(time.perf_counter() - began)
        print(
            f"  aggregation SQL alone, one heavy subscription: median "
            f"{1000 * statistics.median(times):.1f} ms (quantity {usage.quantity})"
        )
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        plan = await conn.fetch(
            "EXPLAIN SELECT sum((data #>> '{tokens}')::numeric) FROM meter_events WHERE merchant_id = $1 "
            "AND environment = 'sandbox' AND type = $2 AND subject = ANY($3::text[]) AND timestamp >= $4 "
            "AND timestamp < $5",
            merchant.merchant_id,
            EVENT_TYPE,
            [customer],
            start,
            end,
        )
        uses = any("ix_meter_events_lookup" in row[0] for row in plan)
        print(f"  plan of one period's scan uses ix_meter_events_lookup: {uses}")
    finally:
        await conn.close()


async def run(n: int, per_customer: int, workers: int, work_dir: Path) -> None:
    async with stack(work_dir, workers) as s:
        engine = create_engine(s.database_url, pool_size=1)
        async with session_factory(engine)() as session:
            light = await create_merchant(session, "Bench Light")
            heavy = await create_merchant(session, "Bench Heavy")
        await engine.dispose()

        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        end = one_month_later(start)
        began = time.perf_counter()
        clocks = {}
        for merchant in (light, heavy):
            clocks[merchant.merchant_id], _ = await setup(s.api, merchant, n, start)

            async def in_period_one(m: NewMerchant = merchant) -> bool:
                return await count_invoices(s.database_url, m.merchant_id, 1, ("ACTIVE",)) >= n

            await wait_until(in_period_one, 900, "subscriptions opening period 1")
        customers = await customers_of(s.database_url, heavy.merchant_id)
        await load_heavy(s.database_url, heavy.merchant_id, customers, per_customer, start, end)
        await asyncio.sleep(2)  # let the last workflows settle into their wait
        print(
            f"setup: 2 × {n} active subscriptions ({EVENTS_PER_SUBSCRIPTION} events each through the API; "
            f"+{per_customer:,} each for the heavy merchant) in {time.perf_counter() - began:.1f} s"
        )
        await sql_alone(s.database_url, heavy, customers[0], start, end)

        target = end + GRACE
        phases = []
        for name, merchant in (("light", light), ("heavy", heavy)):
            phase = await accrue_phase(s, merchant, clocks[merchant.merchant_id], target, n)
            phase.name = f"{name}: {phase.name}"
            phase.show()
            phases.append(phase)
        light_phase, heavy_phase = phases
        print(
            f"\ntime to every invoice ISSUED: light {light_phase.seconds:.2f} s, heavy "
            f"{heavy_phase.seconds:.2f} s ({n} subscriptions × {per_customer:,} events); heavy / light = "
            f"{heavy_phase.seconds / light_phase.seconds:.2f}x (target <= 1.5x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscriptions", type=int, default=1000, help="subscriptions per case (1000)")
    parser.add_argument("--events", type=int, default=2000, help="events per heavy subscription (2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, databases)")
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="accrue-bench-heavy-"))
    print(
        f"period close, heavy usage: {args.subscriptions} subscriptions × {args.events} events, "
        f"{args.workers} workers; logs in {work_dir}"
    )
    asyncio.run(run(args.subscriptions, args.events, args.workers, work_dir))
    if not args.keep:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
