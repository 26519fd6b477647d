"""Subscription creates through the real API on the dev stack, against a bare create in the same run.

The stack is period_close.py's: a Temporal dev server, embedded PostgreSQL (or DATABASE_URL), the real API
(`accrue api`) and W worker processes (`accrue worker`).

Setup (not timed): a plan with one in-advance monthly fee (so every Invoice 0 has a total and a checkout, and
every subscription waits in pending_payment) and one metered in-arrears price, and one customer per create.

Timed, after a short warm-up of each side, in R rounds that alternate which side goes first:
- Accrue: C concurrent keep-alive clients send `POST /v0/subscriptions` (one customer each). Each request
  authenticates, validates, inserts the subscription row and runs one update-with-start of its
  SubscriptionWorkflow, which writes Invoice 0, its lines, the checkout and the outbox rows in an activity
  before the update answers; the API then reads back what it returns.
- Baseline: the same C clients send as many requests to a bare FastAPI endpoint (`baseline_app`, in its own
  uvicorn process) that inserts one row and runs one update-with-start of a bare workflow (on its own task
  queue, served by W baseline worker processes) whose update runs one activity inserting one row: the
  Temporal round trip Accrue's create needs, with nothing else (no auth, no catalog reads, no billing).
  Baseline workers are configured as Accrue's (pydantic converter, no sandbox, same DB pool).

Prints creates/s, p50 and p99 latency for both, the ratio (issue 7's target: >= 0.5x), CPU milliseconds per
create for each process, where the server-side time of a create goes (from a sample of histories), and
checks that every Accrue create left an ISSUED Invoice 0 with its checkout.

Run: .venv/bin/python bench/subscription_create.py [--subscriptions 1000] [--clients 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import httpx
    import psutil
    from _harness import drive_raw
    from api_requests import free_port, serve
    from fastapi import FastAPI
    from period_close import Stack, cpu_delta, in_parallel, iso, post, spawn, stack
    from pydantic import BaseModel
    from sqlalchemy import func, select, text
    from sqlalchemy.ext.asyncio import AsyncEngine
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client, WithStartWorkflowOperation
    from temporalio.common import WorkflowIDConflictPolicy
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from db.merchants import NewMerchant, create_merchant
    from db.models import Invoice, Subscription
    from db.session import create_engine, session_factory
    from workflows.client import connect

BASELINE_TABLES = (
    "CREATE TABLE IF NOT EXISTS bench_create_requests (id text PRIMARY KEY, customer_id text NOT NULL, "
    "plan_id text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS bench_create_rows (request_id text PRIMARY KEY, "
    "created_at timestamptz NOT NULL DEFAULT now())",
)


# ---- baseline: one row, one update-with-start of a workflow whose update runs one activity --------------


class BaselineActivities:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @activity.defn(name="bench_create_row")
    async def insert_row(self, request_id: str) -> str:
        async with self.engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO bench_create_rows (request_id) VALUES (:id) ON CONFLICT DO NOTHING"),
                {"id": request_id},
            )
        return request_id


@workflow.defn(name="BenchCreateBaseline")
class BaselineWorkflow:
    @workflow.run
    async def run(self, request_id: str) -> None:
        # Stays open, as a subscription waiting for its Invoice 0 to be paid does.
        await workflow.wait_condition(lambda: False)

    @workflow.update
    async def created(self, request_id: str) -> str:
        return await workflow.execute_activity_method(
            BaselineActivities.insert_row, request_id, start_to_close_timeout=timedelta(seconds=30)
        )


async def serve_baseline(address: str, task_queue: str, database_url: str) -> None:
    """A worker configured as Accrue's (worker.run): pydantic converter, no sandbox, same pool."""
    client = await connect(address)
    engine = create_engine(database_url, 10, pre_ping=False)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BaselineWorkflow],
        activities=[BaselineActivities(engine).insert_row],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        await asyncio.Event().wait()


class BaselineCreate(BaseModel):
    name: str
    planId: str
    customerId: str
    startedAt: datetime


def baseline_app() -> FastAPI:
    """Served by uvicorn as the real API is; configured by BENCH_* variables."""
    database_url = os.environ["BENCH_DATABASE_URL"]
    address = os.environ["BENCH_TEMPORAL_ADDRESS"]
    task_queue = os.environ["BENCH_TASK_QUEUE"]
    engine = create_engine(database_url, 10)  # as api/app.py builds its engine
    clients: list[Client] = []
    app = FastAPI()

    @app.post("/v0/subscriptions", status_code=201)
    async def create(body: BaselineCreate) -> dict[str, str]:
        request_id = f"sub_{uuid4().hex}"
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO bench_create_requests (id, customer_id, plan_id) VALUES (:id, :c, :p)"),
                {"id": request_id, "c": body.customerId, "p": body.planId},
            )
        if not clients:
            clients.append(await connect(address))
        start = WithStartWorkflowOperation(
            BaselineWorkflow.run,
            request_id,
            id=f"bench-create-{request_id}",
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        await clients[0].execute_update_with_start_workflow(
            BaselineWorkflow.created, request_id, start_workflow_operation=start
        )
        return {"id": request_id, "status": "pending_payment"}

    return app


# ---- setup ------------------------------------------------------------------------------------------------


async def catalog(base: str, merchant: NewMerchant, customers: int) -> tuple[str, list[str]]:
    """The plan (an in-advance fee and a metered price) and `customers` customers; returns their ids."""
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
        m = merchant.merchant_id
        product = await post(http, "/v0/products", {"merchantId": m, "name": "Bench", "description": "d"})
        fee = await post(
            http,
            "/v0/fees",
            {"merchantId": m, "productId": product["id"], "name": "Platform", "description": "d"},
        )
        metric = await post(
            http,
            "/v0/billableMetrics",
            {
                "merchantId": m, "productId": product["id"], "name": "Tokens", "description": "tokens",
                "unit": "tokens", "aggregation": "SUM", "valueProperty": "$.tokens",
                "eventType": "bench.tokens",
            },
        )  # fmt: skip
        prices = [
            await post(
                http,
                "/v0/prices",
                {
                    "feeId": fee["id"], "paymentTerm": "in_advance", "billingCadence": "P1M",
                    "invoiceDisplayName": "Platform fee", "properties": {"unitPrice": "49.00"},
                },
            ),
            await post(
                http,
                "/v0/prices",
                {
                    "billableMetricId": metric["id"], "model": "standard", "paymentTerm": "in_arrears",
                    "invoiceDisplayName": "Tokens", "properties": {"unitPrice": "0.001"},
                },
            ),
        ]  # fmt: skip
        plan = await post(
            http,
            "/v0/plans",
            {
                "merchantId": m, "productId": product["id"], "name": "Platform", "currency": "USD",
                "prices": [p["id"] for p in prices], "billingVersion": 1, "billingCadence": "P1M",
            },
        )  # fmt: skip

        def customer(i: int) -> Any:
            consumer = {
                "name": f"Customer {i}", "email": f"c{i}@bench.example",
                "address": {"country": "US", "state": "TX", "zipCode": "78701"},
            }  # fmt: skip
            return lambda: post(http, "/v0/customers", {"merchantId": m, "consumer": consumer})

        created = await in_parallel([customer(i) for i in range(customers)], 16)
        return plan["id"], [c["customerId"] for c in created]


async def create_tables(url: str) -> None:
    engine = create_engine(url, 1)
    try:
        async with engine.begin() as connection:
            for statement in BASELINE_TABLES:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def accrue_outcome(url: str, merchant_id: str) -> tuple[int, int]:
    """Subscriptions waiting for payment, and ISSUED Invoice 0s with a checkout, of the merchant."""
    engine = create_engine(url, 1)
    try:
        async with session_factory(engine)() as session:
            pending = await session.scalar(
                select(func.count())
                .select_from(Subscription)
                .where(Subscription.merchant_id == merchant_id, Subscription.status == "pending_payment")
            )
            issued = await session.scalar(
                select(func.count())
                .select_from(Invoice)
                .where(
                    Invoice.merchant_id == merchant_id,
                    Invoice.sequence_number == 0,
                    Invoice.status == "ISSUED",
                    Invoice.payment_session_id.is_not(None),
                )
            )
            return int(pending or 0), int(issued or 0)
    finally:
        await engine.dispose()


# ---- the timed phases -------------------------------------------------------------------------------------


@dataclass
class Side:
    """One side's creates over all rounds: bodies are taken in order, so no customer is used twice."""

    name: str
    base: str
    bodies: list[dict[str, Any]]
    taken: int = 0
    seconds: float = 0.0
    n: int = 0
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    async def drive(self, s: Stack, key: str, n: int, clients: int, *, timed: bool = True) -> None:
        gone = [
            f"{name} (pid {p.pid})"
            for name, processes in s.processes.items()
            for p in processes
            if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        ]
        if gone:
            raise RuntimeError(f"{', '.join(gone)} exited: see the logs in the working directory")
        chunk = self.bodies[self.taken : self.taken + n]
        self.taken += n
        before = s.cpu()
        started = time.perf_counter()
        latencies = self.latencies if timed else []
        await drive_raw(self.base, "/v0/subscriptions", key, chunk.__getitem__, n, clients, latencies)
        elapsed = time.perf_counter() - started
        if timed:
            self.seconds += elapsed
            self.n += n
            self.rates.append(n / elapsed)
            for k, v in cpu_delta(before, s.cpu()).items():
                self.cpu[k] = self.cpu.get(k, 0.0) + v

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def show(self) -> None:
        quantiles = statistics.quantiles(self.latencies, n=100)
        rounds = ", ".join(f"{r:.1f}" for r in self.rates)
        print(f"\n{self.name}: {self.n} in {self.seconds:.2f} s = {self.rate:.1f}/s (rounds: {rounds})")
        mean = statistics.fmean(self.latencies)
        print(
            f"  latency p50 {quantiles[49] * 1000:.0f} ms, p99 {quantiles[98] * 1000:.0f} ms, "
            f"mean {mean * 1000:.0f} ms"
        )
        per = {k: 1000 * v / self.n for k, v in self.cpu.items() if v > 0.0005 * self.n}
        shown = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
        print(f"  CPU ms per create: {sum(per.values()):.1f} ({shown})")


UPDATE_COMPLETED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
TASK_COMPLETED = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED


def _event(e: Any) -> str:
    return EventType.Name(e.event_type).removeprefix("EVENT_TYPE_").lower()


async def where_time_goes(client: Client, sample: list[tuple[str, datetime]]) -> list[str]:
    """From each workflow's history, the mean time between consecutive events up to the update's answer:
    how long each workflow and activity task waited for a worker and ran, as the server saw it; and before
    that, from the request's transaction start (the row's created_at) to the workflow's start."""
    gaps: dict[str, float] = defaultdict(float)
    events = tasks = 0
    before_start = 0.0
    for workflow_id, created_at in sample:
        history = (await client.get_workflow_handle(workflow_id).fetch_history()).events
        started = history[0].event_time.ToDatetime().replace(tzinfo=UTC)
        before_start += (started - created_at).total_seconds()
        done = next(i for i, e in enumerate(history) if e.event_type == UPDATE_COMPLETED)
        events += done + 1
        tasks += sum(1 for e in history[:done] if e.event_type == TASK_COMPLETED)
        for previous, event in itertools.pairwise(history[: done + 1]):
            spent = event.event_time.ToDatetime() - previous.event_time.ToDatetime()
            gaps[f"{_event(previous)} -> {_event(event)}"] += spent.total_seconds()
    n = len(sample)
    lines = [f"{events / n:.0f} events and {tasks / n:.0f} workflow tasks until the update answered"]
    lines.append(
        f"from the request's first SQL statement to the workflow's start: {1000 * before_start / n:.0f} ms"
    )
    total = sum(gaps.values())
    lines.append(f"server time from start to the update's answer: {1000 * total / n:.0f} ms, of which:")
    for step, seconds in sorted(gaps.items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"  {1000 * seconds / n:6.0f} ms  {step}")
    return lines


async def sample(url: str, statement: str, k: int) -> list[tuple[str, datetime]]:
    """Workflow ids and their rows' created_at."""
    engine = create_engine(url, 1)
    try:
        async with engine.connect() as connection:
            return [(row[0], row[1]) for row in await connection.execute(text(statement), {"k": k})]
    finally:
        await engine.dispose()


@contextmanager
def baseline_stack(s: Stack, workers: int, work_dir: Path) -> Iterator[str]:
    """The baseline's workers and API, beside Accrue's on the same stack; yields the API's base URL."""
    task_queue = f"bench-create-{uuid4().hex[:8]}"
    argv = [sys.executable, str(Path(__file__)), "--baseline-worker", s.temporal_address, task_queue]
    argv.append(s.database_url)
    children = [spawn(argv, {}, work_dir / f"baseline-worker-{i}.log") for i in range(workers)]
    port = free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent), "--factory"]
    uvicorn += ["--port", str(port), "--log-level", "warning", "subscription_create:baseline_app"]
    env = {
        "BENCH_DATABASE_URL": s.database_url,
        "BENCH_TEMPORAL_ADDRESS": s.temporal_address,
        "BENCH_TASK_QUEUE": task_queue,
    }
    try:
        children.append(serve(uvicorn, port, env))
        s.processes["baseline workers"] = [psutil.Process(p.pid) for p in children[:workers]]
        s.processes["baseline api"] = [psutil.Process(children[-1].pid)]
        yield f"http://127.0.0.1:{port}"
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(15)


async def run(n: int, clients: int, workers: int, rounds: int, work_dir: Path) -> None:
    warm_up = 2 * clients
    per_round = n // rounds
    async with stack(work_dir, workers) as s:
        await create_tables(s.database_url)
        engine = create_engine(s.database_url, 1)
        async with session_factory(engine)() as session:
            merchant = await create_merchant(session, "Bench Merchant")
        await engine.dispose()

        began = time.perf_counter()
        plan_id, customers = await catalog(s.api, merchant, warm_up + per_round * rounds)
        took = time.perf_counter() - began
        print(
            f"setup: a plan with an in-advance fee and a metered price, {len(customers)} customers, "
            f"{took:.1f} s"
        )
        started_at = iso(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
        bodies = [
            {"name": "Bench", "planId": plan_id, "customerId": c, "startedAt": started_at} for c in customers
        ]
        with baseline_stack(s, workers, work_dir) as baseline_url:
            accrue = Side(
                "Accrue: POST /v0/subscriptions (update-with-start; Invoice 0 with a checkout)", s.api, bodies
            )
            baseline = Side(
                "Baseline: insert one row, update-with-start of a bare workflow whose update runs one "
                "activity",
                baseline_url,
                bodies,
            )
            for side in (accrue, baseline):
                await side.drive(s, merchant.api_key, warm_up, clients, timed=False)
            for r in range(rounds):
                # Alternating which side goes first evens out a machine whose load drifts.
                for side in (accrue, baseline) if r % 2 == 0 else (baseline, accrue):
                    await side.drive(s, merchant.api_key, per_round, clients)

            pending, issued = await accrue_outcome(s.database_url, merchant.merchant_id)
            expected = warm_up + per_round * rounds
            assert pending == issued == expected, (
                f"{pending} pending, {issued} Invoice 0s, expected {expected}"
            )
            client = await connect(s.temporal_address)
            accrue_sample = await sample(
                s.database_url,
                "SELECT 'subscription-' || id, created_at FROM subscriptions "
                "ORDER BY created_at DESC LIMIT :k",
                50,
            )
            baseline_sample = await sample(
                s.database_url,
                "SELECT 'bench-create-' || id, created_at FROM bench_create_requests "
                "ORDER BY created_at DESC LIMIT :k",
                50,
            )
            for side, rows in ((accrue, accrue_sample), (baseline, baseline_sample)):
                side.show()
                for line in await where_time_goes(client, rows):
                    print(f"  {line}")
        print(
            "\nEvery Accrue create left a pending_payment subscription and an ISSUED Invoice 0 with a "
            f"checkout ({expected})."
        )
        ratios = sorted(a / b for a, b in zip(accrue.rates, baseline.rates, strict=True))
        print(
            f"creates/s: Accrue {accrue.rate:.1f}, baseline {baseline.rate:.1f}; "
            f"ratio {accrue.rate / baseline.rate:.2f}x "
            f"(median of rounds {statistics.median(ratios):.2f}x; target >= 0.5x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscriptions", type=int, default=1000, help="timed creates per side (1000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, Accrue and baseline (2)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternating rounds the creates are split in (4)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, databases)")
    parser.add_argument(
        "--baseline-worker",
        nargs=3,
        metavar=("ADDRESS", "TASK_QUEUE", "DATABASE_URL"),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    if args.baseline_worker:
        asyncio.run(serve_baseline(*args.baseline_worker))
        return
    work_dir = Path(tempfile.mkdtemp(prefix="accrue-bench-subscription-create-"))
    print(
        f"subscription create: {args.subscriptions} creates per side in {args.rounds} rounds, {args.clients} "
        f"clients, {args.workers} workers; logs in {work_dir}"
    )
    asyncio.run(run(args.subscriptions, args.clients, args.workers, args.rounds, work_dir))
    if not args.keep:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
