"""GET /v2/invoices?limit=100 over 100 ACTIVE invoices, whose totals are live (priced from the meter events
so far), with 10 million events in the table.

Setup (not timed): one merchant with a plan of two metered in-arrears prices (standard SUM of $.tokens and
percentage of $.amount), 100 customers each with a subscription and an ACTIVE invoice for February 2026,
written as rows; then the events, loaded with generate_series in one INSERT … SELECT per million rows: one
in `--every` belongs to one of the 100 customers (round robin), the rest to 2,000 other customers, spread
over four months (January–April) in arrival order, so each page customer's rows are scattered across the
heap as real traffic leaves them. A second merchant holds the same page of 100 ISSUED invoices (frozen
totals, no pricing).

Timed (sequential requests, one keep-alive connection), in the same run:
- the measured page: GET /v2/invoices?limit=100 of the live merchant (one pricing pass for the page:
  batched contexts and one db.meter_queries.period_usages round trip for its 200 metered prices);
- baseline: the same request for the frozen page (what listing 100 invoices costs without live totals);
- baseline: the aggregation SQL alone for the page's 200 queries (period_usages).
Prints p50/p95/p99 and the plan of the aggregation statement (it must use ix_meter_events_lookup).
Target (issue 7): p99 < 100 ms.

With `--before DIR` (a checkout of earlier code: `git worktree add --detach DIR <commit>`), a second API
serves DIR's code from the same database and the live page is timed on both in alternating blocks of
requests, so a machine whose load drifts weighs on both alike: before/after from one run.

Both APIs run as `accrue api` does in production (uvicorn, default log level and pool), after a warm-up.

Run: .venv/bin/python bench/invoices_list.py [--events 10000000] [--every 1000] [--requests 300]
    [--before DIR]

With the defaults each page invoice has about 23 events per metered price in its period (10,000 page-customer
events over 120 days); the cost grows with those, not with the table: --events 1000000 --every 100 gives the
same per-invoice load in a table a tenth the size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import psutil
from _harness import EVENT_TYPE, accrue_api, database_url, free_port, new_merchant
from meter_query import _CREATE, _DROP
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.embedded_db import postmaster_pid
from db.billing import load_contexts, metered_queries
from db.merchants import NewMerchant
from db.meter_queries import UsageQuery, period_usages, period_usages_plan
from db.models import (
    BillableMetric,
    Customer,
    Invoice,
    Organization,
    Plan,
    PlanPrice,
    Price,
    Product,
    Subscription,
)
from db.session import create_engine, session_factory
from domain.ids import new_id

PAGE = 100
# Settings' default, as `accrue api` runs in production (uvicorn's access log included).
PRODUCTION_LOG_LEVEL = "INFO"
FEB, MAR = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
START, DAYS = datetime(2026, 1, 1, tzinfo=UTC), 120

_LOAD = """
INSERT INTO meter_events
    (id, merchant_id, environment, type, source, subject, data, timestamp, idempotency_key)
SELECT 'evt_list' || g, $1, 'sandbox', $2, 'bench',
       CASE WHEN g % $3 = 0 THEN ($4::text[])[1 + (g / $3) % array_length($4::text[], 1)]
            ELSE 'cus_other_' || (g % 2000) END,
       jsonb_build_object('tokens', g % 1000, 'amount', (g % 5000) || '.25'),
       $5::timestamptz + (g::float8 / $6) * ($7 * interval '1 day'),
       'list-' || g
FROM generate_series($8::bigint, $9::bigint) AS g
"""


async def rows(engine: AsyncEngine, merchant: NewMerchant, status: str) -> list[str]:
    """A plan of two metered prices and PAGE subscriptions with one invoice each; returns customer ids."""
    tenant = {"merchant_id": merchant.merchant_id, "environment": merchant.environment}
    async with session_factory(engine)() as session:
        product = Product(id=new_id("product"), name="Bench", description="d", metadata_={}, **tenant)
        metric = BillableMetric(
            id=new_id("billable_metric"), product_id=product.id, name="Tokens", description="tokens",
            unit="tokens", aggregation="SUM", value_property="$.tokens", event_type=EVENT_TYPE, **tenant,
        )  # fmt: skip
        share = BillableMetric(
            id=new_id("billable_metric"), product_id=product.id, name="Revenue", description="revenue",
            unit="USD", aggregation="SUM", value_property="$.amount", event_type=EVENT_TYPE, **tenant,
        )  # fmt: skip
        prices = [
            Price(
                id=new_id("price"), billable_metric_id=metric.id, model="standard", payment_term="in_arrears",
                properties={"unitPrice": "0.001"}, invoice_display_name="Tokens", **tenant,
            ),
            Price(
                id=new_id("price"), billable_metric_id=share.id, model="percentage",
                payment_term="in_arrears",
                properties={"percentage": "0.029", "minCharge": "0.30", "maxCharge": "5.00"},
                invoice_display_name="Revenue share", **tenant,
            ),
        ]  # fmt: skip
        plan = Plan(
            id=new_id("plan"), product_id=product.id, name="Bench", currency="USD", billing_cadence="P1M",
            default_tax_code="eservice", default_tax_rate=Decimal(0), tax_behavior="exclusive",
            renewal_reminder_enabled=False, renewal_reminder_days=3, billing_version=1, **tenant,
        )  # fmt: skip
        # No ORM relationships order these inserts: each flush writes what the next rows refer to.
        for batch in ([product], [metric, share, plan], prices):
            session.add_all(batch)
            await session.flush()
        session.add_all(PlanPrice(plan_id=plan.id, price_id=p.id, position=i) for i, p in enumerate(prices))
        customers = []
        for i in range(PAGE):
            consumer = Organization(
                id=new_id("organization"), kind="consumer", name=f"Customer {i}",
                email=f"c{i}-{new_id('customer')}@bench.example", owner_merchant_id=merchant.merchant_id,
                environment=merchant.environment,
            )  # fmt: skip
            customer = Customer(
                id=new_id("customer"), consumer_id=consumer.id, notification_settings={}, **tenant
            )
            subscription = Subscription(
                id=new_id("subscription"), customer_id=customer.id, plan_id=plan.id, name="Bench",
                status="active", started_at=FEB, billing_anchor=FEB, billing_cadence="P1M", currency="USD",
                activated_at=FEB, current_period=1, **tenant,
            )  # fmt: skip
            invoice = Invoice(
                id=new_id("invoice"), subscription_id=subscription.id, customer_id=customer.id,
                sequence_number=1, status=status, currency="USD", billing_anchor=FEB, billing_cadence="P1M",
                period_start=FEB, period_end=MAR, grace_period_end=MAR + timedelta(hours=24), metadata_={},
                subtotal=Decimal("12.5"), total_tax=Decimal(0), grand_total=Decimal("12.5"), item_count=2,
                **tenant,
            )  # fmt: skip
            session.add(consumer)
            await session.flush()
            session.add(customer)
            await session.flush()
            session.add(subscription)
            await session.flush()
            session.add(invoice)
            customers.append(customer.id)
        await session.commit()
    return customers


async def load(
    url: str, merchant_id: str, customers: list[str], total: int, every: int, rebuild: bool
) -> None:
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
            await conn.execute(
                _LOAD, merchant_id, EVENT_TYPE, every, customers, START, total, DAYS, low, high
            )
            print(f"  loaded {high:,} events ({time.perf_counter() - started:.0f} s)", flush=True)
        if rebuild:
            await conn.execute("SET maintenance_work_mem = '512MB'")
            for statement in _CREATE:
                await conn.execute(statement)
            print(f"  indexes built ({time.perf_counter() - started:.0f} s)", flush=True)
        await conn.execute("VACUUM ANALYZE meter_events")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('meter_events'))")
        count = await conn.fetchval("SELECT count(*) FROM meter_events")
        mine = await conn.fetchval(
            "SELECT count(*) FROM meter_events WHERE subject = ANY($1::text[]) AND timestamp >= $2 "
            "AND timestamp < $3",
            customers,
            FEB,
            MAR,
        )
        print(f"  {count:,} events, {size} with indexes; {mine:,} of them in the page's February periods")
    finally:
        await conn.close()


class ServerCpu:
    """CPU seconds of the API process (the one serving code from `tree`) and of PostgreSQL (server and
    backends) so far: on a shared 2-core machine wall-clock percentiles follow the machine's load, CPU per
    request does not."""

    def __init__(self, postmaster: int | None, tree: Path | None = None) -> None:
        self.postmaster = psutil.Process(postmaster) if postmaster is not None else None
        # accrue_api's process runs in this one's directory.
        self.tree = tree or Path.cwd().resolve()

    def __call__(self) -> float:
        mine = psutil.Process()
        processes = [
            p for p in mine.children(recursive=True) if "api" in p.cmdline() and Path(p.cwd()) == self.tree
        ]
        if self.postmaster is not None:
            processes += [self.postmaster, *self.postmaster.children(recursive=True)]
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total


async def timed(
    call: Callable[[], Awaitable[object]], n: int, cpu: Callable[[], float]
) -> tuple[float, float, float, float]:
    """p50, p95, p99 ms and server CPU ms per call."""
    for _ in range(min(20, n)):
        await call()  # warm-up: connections, plans, pages
    latencies = []
    before = cpu()
    for _ in range(n):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    used = cpu() - before
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1000, q[94] * 1000, q[98] * 1000, used * 1000 / n


async def alternating(
    calls: list[tuple[Callable[[], Awaitable[object]], Callable[[], float]]], n: int, block: int = 10
) -> list[tuple[float, float, float, float]]:
    """`timed` of several calls on one machine at once: blocks of `block` requests of each in turn, each
    block's server CPU counted for its call (PostgreSQL serves one block at a time)."""
    for call, _ in calls:
        for _ in range(min(20, n)):
            await call()
    latencies: list[list[float]] = [[] for _ in calls]
    used = [0.0 for _ in calls]
    for _ in range(0, n, block):
        for k, (call, cpu) in enumerate(calls):
            before = cpu()
            for _ in range(block):
                started = time.perf_counter()
                await call()
                latencies[k].append(time.perf_counter() - started)
            used[k] += cpu() - before
    results = []
    for k in range(len(calls)):
        q = statistics.quantiles(latencies[k], n=100)
        results.append((q[49] * 1000, q[94] * 1000, q[98] * 1000, used[k] * 1000 / len(latencies[k])))
    return results


@contextmanager
def api_from(tree: Path, url: str) -> Iterator[str]:
    """`accrue api` serving the code checked out at `tree` (its own cwd comes first on sys.path)."""
    port = free_port()
    env = {"DATABASE_URL": url, "ACCRUE_API_PORT": str(port), "ACCRUE_LOG_LEVEL": PRODUCTION_LOG_LEVEL}
    process = subprocess.Popen(
        [sys.executable, "-m", "accrue", "api"], cwd=tree, env=os.environ | env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the API from {tree} did not start listening on {port}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def page_queries(engine: AsyncEngine, merchant: NewMerchant) -> list[UsageQuery]:
    """The UsageQuery list GET /v2/invoices builds for the live page (db.billing.metered_queries)."""
    async with session_factory(engine)() as session:
        subscriptions = await session.scalars(
            select(Subscription).where(Subscription.merchant_id == merchant.merchant_id)
        )
        contexts = await load_contexts(session, list(subscriptions))
    return [query for ctx in contexts for _, _, query in metered_queries(ctx, FEB, MAR)]


async def main(total: int, every: int, n: int, before: Path | None) -> None:
    own_database = "DATABASE_URL" not in os.environ
    url = database_url()
    live, frozen = await new_merchant(url), await new_merchant(url)
    engine = create_engine(url, pool_size=2)
    customers = await rows(engine, live, "ACTIVE")
    await rows(engine, frozen, "ISSUED")
    print(f"loading {total:,} events, one in {every} from the {PAGE} page customers, over {DAYS} days")
    await load(url, live.merchant_id, customers, total, every, rebuild=own_database)
    queries = await page_queries(engine, live)
    sessions = session_factory(engine)
    async with sessions() as session:
        plan = await period_usages_plan(session, queries)
        data_directory = await session.scalar(text("SHOW data_directory"))
    postmaster = postmaster_pid(Path(str(data_directory)))
    cpu = ServerCpu(postmaster)
    print(f"aggregation plan uses ix_meter_events_lookup: {'ix_meter_events_lookup' in plan}")
    print("\n".join(f"  {line}" for line in plan.splitlines()))

    async def sql() -> object:
        async with sessions() as session:
            return await period_usages(session, queries)

    with accrue_api(url, log_level=PRODUCTION_LOG_LEVEL) as api, ExitStack() as stack:
        old_api = stack.enter_context(api_from(before, url)) if before is not None else None
        async with (
            httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {live.api_key}"}) as a,
            httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {frozen.api_key}"}) as b,
            httpx.AsyncClient(
                base_url=old_api or api, headers={"Authorization": f"Bearer {live.api_key}"}
            ) as old,
        ):

            def listing(client: httpx.AsyncClient) -> Callable[[], Awaitable[object]]:
                async def call() -> object:
                    response = await client.get("/v2/invoices", params={"limit": PAGE})
                    assert response.status_code == 200, response.text
                    assert len(response.json()["data"]) == PAGE
                    return response

                return call

            body = (await listing(a)()).json()  # type: ignore[attr-defined]
            totals = sorted(Decimal(i["grandTotal"]) for i in body["data"])
            print(f"live page: {PAGE} ACTIVE invoices, grand totals {totals[0]} … {totals[-1]} USD")
            scenarios = [
                ("baseline: same page, 100 ISSUED (frozen totals)", listing(b)),
                (f"baseline: aggregation SQL alone ({len(queries)} queries)", sql),
                ("GET /v2/invoices?limit=100, 100 ACTIVE (live)", listing(a)),
            ]
            print(
                f"\n{n} sequential requests each; load average {os.getloadavg()[0]:.1f} "
                f"on {os.cpu_count()} cores"
            )
            print(f"{'scenario':<52}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'CPU ms':>9}")
            results = {}
            for name, call in scenarios:
                results[name] = await timed(call, n, cpu)
                p50, p95, p99, used = results[name]
                print(f"{name:<52}{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}{used:>9.1f}")
            if before is not None:
                old_body = (await listing(old)()).json()  # type: ignore[attr-defined]
                same = old_body["data"] == body["data"]
                print(f"\nlive page, code at {before} against this tree, alternating blocks of 10 requests")
                print(f"same response body from both: {same}")
                pair = await alternating(
                    [(listing(old), ServerCpu(postmaster, before)), (listing(a), cpu)], n
                )
                for name, (p50, p95, p99, used) in zip(("before", "after (this tree)"), pair, strict=True):
                    print(f"{name:<52}{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}{used:>9.1f}")
            print(f"\nlive page p99 {results[scenarios[-1][0]][2]:.1f} ms (target: < 100 ms)")
            print("CPU ms: API process and PostgreSQL per request (the SQL row: PostgreSQL only)")
    await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the table (10,000,000)")
    parser.add_argument(
        "--every", type=int, default=1000, help="one event in this many is a page customer's (1000)"
    )
    parser.add_argument("--requests", type=int, default=300, help="timed requests per scenario (300)")
    parser.add_argument(
        "--before", type=Path, help="a checkout of earlier code to time the live page against (see above)"
    )
    args = parser.parse_args()
    before = args.before.resolve() if args.before is not None else None
    asyncio.run(main(args.events, args.every, args.requests, before))
