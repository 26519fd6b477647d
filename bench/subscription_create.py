"""Creating subscriptions concurrently through the API (update-with-start: the API inserts the row, the
workflow writes Invoice 0 and answers) against a bare baseline that, per request, inserts one row and starts
one bare workflow, in the same run, on the same stack (bench/period_close.py's: Temporal dev server,
embedded PostgreSQL, `accrue api`, W `accrue worker` processes; the baseline API is a bare FastAPI app in
its own uvicorn process, its workflows served by W baseline workers configured as Accrue's).

Setup (not timed): a plan with one metered price (Invoice 0 is zero, so every create also activates), N
customers. Timed: N creates, C at a time; then N baseline requests, C at a time.

Run: .venv/bin/python bench/subscription_create.py [--subscriptions 1000] [--workers 2] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api_requests import free_port, serve
from period_close import BaselineWorkflow, in_parallel, iso, post, spawn, stack

from db.merchants import create_merchant
from db.session import create_engine, session_factory


def baseline_app(database_url: str, temporal_address: str, task_queue: str) -> Any:
    """POST /rows: insert one row, start one bare workflow; what a create costs without Accrue's work."""
    from fastapi import FastAPI
    from sqlalchemy import text

    from workflows.client import connect

    app = FastAPI()
    engine = create_engine(database_url, pool_size=10)
    state: dict[str, Any] = {}

    @app.post("/rows", status_code=201)
    async def create_row() -> dict[str, str]:
        if "client" not in state:
            state["client"] = await connect(temporal_address)
        row_id = uuid4().hex
        async with engine.begin() as conn:
            await conn.execute(text("insert into bench_rows (id) values (:id)"), {"id": row_id})
        await state["client"].start_workflow(
            BaselineWorkflow.run, False, id=f"bench-row-{row_id}", task_queue=task_queue
        )
        return {"id": row_id}

    return app


async def timed(label: str, calls: list[Any], concurrency: int) -> float:
    started = time.perf_counter()
    await in_parallel(calls, concurrency)
    elapsed = time.perf_counter() - started
    print(f"{label}: {len(calls)} in {elapsed:.2f} s = {len(calls) / elapsed:.1f}/s")
    return len(calls) / elapsed


async def run(n: int, workers: int, concurrency: int, work_dir: Path) -> None:
    async with stack(work_dir, workers) as s:
        engine = create_engine(s.database_url, pool_size=1)
        async with session_factory(engine)() as session:
            merchant = await create_merchant(session, "Bench Merchant")
        async with engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(
                text("create table bench_rows (id text primary key, created_at timestamptz default now())")
            )
        await engine.dispose()
        headers = {"Authorization": f"Bearer {merchant.api_key}"}
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        async with httpx.AsyncClient(base_url=s.api, headers=headers, timeout=120) as http:
            m = merchant.merchant_id
            product = await post(http, "/v0/products", {"merchantId": m, "name": "Bench", "description": "d"})
            metric = await post(http, "/v0/billableMetrics", {
                "merchantId": m, "productId": product["id"], "name": "Tokens", "description": "tokens",
                "unit": "tokens", "aggregation": "SUM", "valueProperty": "$.tokens",
                "eventType": "llm.tokens",
            })  # fmt: skip
            price = await post(http, "/v0/prices", {
                "billableMetricId": metric["id"], "model": "standard", "paymentTerm": "in_arrears",
                "invoiceDisplayName": "Tokens", "properties": {"unitPrice": "0.001"},
            })  # fmt: skip
            plan = await post(http, "/v0/plans", {
                "merchantId": m, "productId": product["id"], "name": "Metered", "currency": "USD",
                "prices": [price["id"]], "billingVersion": 1, "billingCadence": "P1M",
            })  # fmt: skip
            clock = await post(http, "/v0/testClocks", {"currentTime": iso(start), "name": "create bench"})

            def customer(i: int) -> Any:
                consumer = {"name": f"C {i}", "email": f"c{i}@bench.example", "address": {"country": "US"}}
                return lambda: post(http, "/v0/customers", {"merchantId": m, "consumer": consumer})

            customers = [c["customerId"] for c in await in_parallel([customer(i) for i in range(n)], 16)]

            def subscribe(customer_id: str) -> Any:
                body = {"name": "Bench", "planId": plan["id"], "customerId": customer_id,
                        "startedAt": iso(start), "testClockId": clock["id"]}  # fmt: skip
                return lambda: post(http, "/v0/subscriptions", body)

            label = "Accrue POST /v0/subscriptions (update-with-start, Invoice 0 written, active)"
            accrue = await timed(label, [subscribe(c) for c in customers], concurrency)

        port, queue = free_port(), f"bench-rows-{uuid4().hex[:6]}"
        processes = [
            serve(
                [
                    sys.executable,
                    __file__,
                    "--baseline-api",
                    str(port),
                    s.database_url,
                    s.temporal_address,
                    queue,
                ],
                port,
                {},
            )
        ]
        for w in range(workers):
            processes.append(spawn(
                [sys.executable, str(Path(__file__).parent / "period_close.py"), "--baseline-worker",
                 s.temporal_address, queue], {}, work_dir / f"baseline-worker-{w}.log"))  # fmt: skip
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as bare:

                def row() -> Any:
                    return lambda: bare.post("/rows")

                await in_parallel([row() for _ in range(20)], 4)  # warm-up: connections, first tasks
                baseline = await timed("Baseline POST /rows (insert one row, start one bare workflow)",
                                       [row() for _ in range(n)], concurrency)  # fmt: skip
        finally:
            for p in processes:
                p.terminate()
            for p in processes:
                p.wait(15)
        print(
            f"\ncreates/s: Accrue {accrue:.1f}; baseline {baseline:.1f}; "
            f"ratio {accrue / baseline:.2f}x (target >= 0.5x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline-api", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_api:
        import uvicorn

        port, database_url, address, queue = args.baseline_api
        uvicorn.run(
            baseline_app(database_url, address, queue), host="127.0.0.1", port=int(port), log_level="warning"
        )
        return
    with tempfile.TemporaryDirectory(prefix="accrue-bench-") as tmp:
        asyncio.run(run(args.subscriptions, args.workers, args.concurrency, Path(tmp)))


if __name__ == "__main__":
    main()
