"""The meter query for one customer over one month, through the API, with 10 million events in the table.

Loads the events with generate_series in one merchant's table (most of them from 2,000 other customers,
spread over four months in arrival order, so the measured customer's rows are scattered across the heap
as real traffic leaves them), then times GET /v0/billableMetrics/{id}/meter for the measured customer and
February. Baselines in the same run: GET /v0/billableMetrics/{id} through the same API (what any
authenticated request costs), and the aggregation SQL alone (db.meter_queries.period_usage). The
issue's target is a p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import httpx
from _harness import EVENT_TYPE, accrue_api, database_url, new_merchant, new_metric

from db.meter_queries import UsageQuery, period_usage
from db.session import create_engine, session_factory

MEASURED = "cus_measured"
START, DAYS = datetime(2026, 1, 1, tzinfo=UTC), 120
MONTH = {"from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}

_LOAD = """
INSERT INTO meter_events
    (id, merchant_id, environment, type, source, subject, data, timestamp, idempotency_key)
SELECT 'evt_bench' || g, $1, 'sandbox', $2, 'https://api.myapp.com',
       CASE WHEN g % $3 = 0 THEN $4 ELSE 'cus_' || (g % 2000) END,
       jsonb_build_object(
           'tokens', g % 1000, 'model', CASE WHEN g % 3 = 0 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END
       ),
       $5::timestamptz + (g::float8 / $6) * ($7 * interval '1 day'),
       'bench-' || g
FROM generate_series($8::bigint, $9::bigint) AS g
"""

# Bulk loads are faster into a bare heap; the indexes are rebuilt exactly as the migration defines them.
_DROP = """
ALTER TABLE meter_events DROP CONSTRAINT pk_meter_events, DROP CONSTRAINT uq_meter_events_key;
DROP INDEX ix_meter_events_lookup;
"""
_CREATE = [
    "ALTER TABLE meter_events ADD CONSTRAINT pk_meter_events PRIMARY KEY (id)",
    "ALTER TABLE meter_events ADD CONSTRAINT uq_meter_events_key"
    " UNIQUE (merchant_id, environment, idempotency_key)",
    "CREATE INDEX ix_meter_events_lookup ON meter_events"
    " (merchant_id, environment, type, subject, timestamp)",
]


async def load(url: str, merchant_id: str, total: int, every: int, rebuild: bool) -> None:
    conn = await asyncpg.connect(
        url.replace("postgresql+asyncpg://", "postgresql://", 1), command_timeout=3600
    )
    try:
        started = time.perf_counter()
        if rebuild:
            await conn.execute(_DROP)
        chunk = 1_000_000
        for low in range(1, total + 1, chunk):
            high = min(low + chunk - 1, total)
            await conn.execute(_LOAD, merchant_id, EVENT_TYPE, every, MEASURED, START, total, DAYS, low, high)
            print(f"  loaded {high:,} events ({time.perf_counter() - started:.0f} s)", flush=True)
        if rebuild:
            await conn.execute("SET maintenance_work_mem = '512MB'")
            for statement in _CREATE:
                await conn.execute(statement)
            print(f"  indexes built ({time.perf_counter() - started:.0f} s)", flush=True)
        await conn.execute("VACUUM ANALYZE meter_events")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('meter_events'))")
        rows = await conn.fetchval("SELECT count(*) FROM meter_events")
        mine = await conn.fetchval(
            "SELECT count(*) FROM meter_events WHERE subject = $1 AND timestamp >= $2 AND timestamp < $3",
            MEASURED,
            datetime(2026, 2, 1, tzinfo=UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        )
        print(
            f"  {rows:,} events, {size} with indexes; {mine:,} of them are the measured customer's February"
        )
    finally:
        await conn.close()


async def timed(call: Callable[[], Awaitable[object]], n: int) -> tuple[float, float, float]:
    for _ in range(min(20, n)):
        await call()  # warm-up: connections, plans, pages
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1000, q[98] * 1000, max(latencies) * 1000


async def main(total: int, every: int, n: int) -> None:
    own_database = "DATABASE_URL" not in os.environ
    url = database_url()
    merchant = await new_merchant(url)
    with accrue_api(url) as real:
        metric_id = await new_metric(real, merchant)
        print(f"loading {total:,} events, one in {every} from {MEASURED}, over {DAYS} days")
        await load(url, merchant.merchant_id, total, every, rebuild=own_database)
        engine = create_engine(url, pool_size=2)
        sessions = session_factory(engine)
        headers = {"Authorization": f"Bearer {merchant.api_key}"}
        async with httpx.AsyncClient(base_url=real, headers=headers, timeout=60) as client:

            def api(path: str, **params: str) -> Callable[[], Awaitable[object]]:
                async def call() -> object:
                    response = await client.get(path, params=params)
                    assert response.status_code == 200, response.text
                    return response

                return call

            async def sql() -> object:
                async with sessions() as session:
                    usage = await period_usage(
                        session,
                        UsageQuery(
                            merchant_id=merchant.merchant_id,
                            environment="sandbox",
                            event_type=EVENT_TYPE,
                            subjects=(MEASURED,),
                            start=datetime(2026, 2, 1, tzinfo=UTC),
                            end=datetime(2026, 3, 1, tzinfo=UTC),
                            aggregation="SUM",
                            value_property="$.tokens",
                        ),
                    )
                    return usage.quantity

            meter = f"/v0/billableMetrics/{metric_id}/meter"
            scenarios: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("baseline: GET /v0/billableMetrics/{id}", api(f"/v0/billableMetrics/{metric_id}")),
                ("baseline: aggregation SQL alone", sql),
                ("meter, one customer, February", api(meter, subject=MEASURED, **MONTH)),
                ("  … windowSize=DAY", api(meter, subject=MEASURED, windowSize="DAY", **MONTH)),
                ("  … groupBy=model", api(meter, subject=MEASURED, groupBy="model", **MONTH)),
            ]
            print(f"{n} sequential requests each")
            print(f"{'scenario':<42}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
            for name, call in scenarios:
                p50, p99, worst = await timed(call, n)
                print(f"{name:<42}{p50:>10.1f}{p99:>10.1f}{worst:>10.1f}")
            print(f"February total for {MEASURED}: {await sql()} tokens (target: p99 < 50 ms)")
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument(
        "--every", type=int, default=500, help="one event in this many is the measured customer's"
    )
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.every, args.requests))
