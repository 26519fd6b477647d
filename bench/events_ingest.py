"""Single-event POST /v0/events through the real API against a bare FastAPI endpoint parsing the same body.

Each request of the real API is authenticated, validated, checked against the merchant's event types and
answered 202 only after its row is committed; concurrent requests share commits through the group-commit
writer. The bare endpoint parses the same body into an equivalent pydantic model and answers 202 without
touching anything (the issue's baseline; target ratio ≥ 0.8). For reference, the same bare process also
serves the parse-only endpoint through Accrue's DirectRoute (the lean route class POST /v0/events uses),
so the last column isolates what authenticating and storing cost.

Both servers run in their own uvicorn process. The load comes from a minimal keep-alive HTTP client
(bench/_harness.py drive_raw): httpx would spend more CPU per request than the servers and measure itself.

Besides wall-clock rates, each run reports the CPU time spent per request by the server process (and, for
Accrue, by PostgreSQL) and by this client: on a shared 2-core machine the wall-clock ratio moves with
whatever else runs, while CPU per request shows what each side costs. `--slices` splits every run into
alternating slices (bare, lean, Accrue, bare, …), so that both sides of a ratio see the same background
load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psutil
from _harness import EVENT_TYPE, accrue_api, bare_api, database_url, drive_raw, new_merchant, new_metric
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.routers.events import DirectRoute


class EventBody(BaseModel):
    type: str
    source: str
    subject: str
    data: dict[str, Any]
    namespace: str | None = None
    timestamp: datetime | None = None
    idempotencyKey: str | None = None


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v0/events", status_code=202)
    async def ingest(body: EventBody) -> dict[str, Any]:
        return {"id": "evt_bare", "object": "event", "type": body.type, "idempotencyKey": body.idempotencyKey}

    async def lean(request: Request) -> JSONResponse:
        body = EventBody.model_validate_json(await request.body())
        content = {
            "id": "evt_bare",
            "object": "event",
            "type": body.type,
            "idempotencyKey": body.idempotencyKey,
        }
        return JSONResponse(content, status_code=202)

    app.router.add_api_route("/lean/v0/events", lean, methods=["POST"], route_class_override=DirectRoute)
    return app


def body(i: int) -> dict[str, Any]:
    return {
        "type": EVENT_TYPE,
        "source": "https://api.myapp.com",
        "subject": f"cus_{i % 500}",
        "data": {"tokens": i % 1000, "model": "gpt-4o"},
        "idempotencyKey": f"bench-{i}",
    }


def bodies(start: int) -> Any:
    return lambda i: body(start + i)


async def stored_rows(url: str) -> int:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return int(await conn.fetchval("select count(*) from meter_events"))
    finally:
        await conn.close()


def server_process(base: str) -> psutil.Process:
    port = urlsplit(base).port
    pid = next(c.pid for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == "LISTEN")
    return psutil.Process(pid)


def cpu_seconds(process: psutil.Process, *, with_children: bool = False) -> float:
    """User + system CPU of `process` (and of its live and reaped children: PostgreSQL's backends)."""
    times = process.cpu_times()
    total = times.user + times.system
    if with_children:
        total += times.children_user + times.children_system
        for child in process.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += child_times.user + child_times.system
    return total


async def postmaster(url: str) -> psutil.Process:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        data_directory = await conn.fetchval("show data_directory")
    finally:
        await conn.close()
    return psutil.Process(int((Path(data_directory) / "postmaster.pid").read_text().split()[0]))


@dataclass
class Side:
    """One server under test: its wall-clock time and CPU time over the requests sent to it."""

    base: str
    path: str
    process: psutil.Process
    database: psutil.Process | None = None
    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    db_cpu: float = 0.0
    client_cpu: float = 0.0
    latencies: list[tuple[float, float]] = field(default_factory=list)

    async def run(self, key: str, body: Any, n: int, concurrency: int) -> None:
        cpu = cpu_seconds(self.process)
        db = cpu_seconds(self.database, with_children=True) if self.database else 0.0
        started, client = time.perf_counter(), time.process_time()
        _, p50, p99 = await drive_raw(self.base, self.path, key, body, n, concurrency)
        self.seconds += time.perf_counter() - started
        self.client_cpu += time.process_time() - client
        self.cpu += cpu_seconds(self.process) - cpu
        if self.database:
            self.db_cpu += cpu_seconds(self.database, with_children=True) - db
        self.requests += n
        self.latencies.append((p50, p99))

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.requests

    def db_cpu_ms(self) -> float:
        return 1000 * self.db_cpu / self.requests

    def reset(self) -> None:
        self.requests, self.seconds, self.latencies = 0, 0.0, []
        self.cpu = self.db_cpu = self.client_cpu = 0.0


def row(name: str, side: Side, *ratios: float) -> str:
    p50 = statistics.median(p for p, _ in side.latencies)
    p99 = max(p for _, p in side.latencies)
    db = f"{side.db_cpu_ms():>8.2f}" if side.database else f"{'':>8}"
    client = 1000 * side.client_cpu / side.requests
    cpu = f"{side.cpu_ms():>9.2f}{db}{client:>10.2f}"
    return f"{name:<34}{side.rate:>9.0f}{p50:>9.1f}{p99:>9.1f}{cpu}" + "".join(f"{r:>10.2f}x" for r in ratios)


async def main(requests: int, concurrency: int, rounds: int, slices: int) -> None:
    url = database_url()
    merchant = await new_merchant(url)
    key = merchant.api_key
    with accrue_api(url) as real_url, bare_api("events_ingest:bare_app") as bare_url:
        await new_metric(real_url, merchant)
        bare_process = server_process(bare_url)
        bare = Side(bare_url, "/v0/events", bare_process)
        lean = Side(bare_url, "/lean/v0/events", bare_process)
        real = Side(real_url, "/v0/events", server_process(real_url), await postmaster(url))
        warm = min(1000, requests)
        await real.run(key, bodies(10**9), warm, concurrency)
        await bare.run(key, bodies(0), warm, concurrency)
        await lean.run(key, bodies(0), warm, concurrency)
        print(
            f"{requests} requests per run in {slices} alternating slices, "
            f"{concurrency} concurrent keep-alive connections"
        )
        print(
            f"{'run':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms':>9}{'db ms':>8}{'client ms':>10}"
            f"{'vs bare':>11}{'vs lean':>11}"
        )
        ratios, lean_ratios, cpu_ratios = [], [], []
        offset = 0
        before = await stored_rows(url)
        per_slice = requests // slices
        for r in range(1, rounds + 1):
            for side in (bare, lean, real):
                side.reset()
            # Interleaved slice by slice, so that neither side always runs on a warmer (or busier) machine.
            for _ in range(slices):
                await bare.run(key, bodies(0), per_slice, concurrency)
                await lean.run(key, bodies(0), per_slice, concurrency)
                await real.run(key, bodies(offset), per_slice, concurrency)
                offset += per_slice
            ratios.append(real.rate / bare.rate)
            lean_ratios.append(real.rate / lean.rate)
            cpu_ratios.append(bare.cpu_ms() / real.cpu_ms())
            print(row(f"bare FastAPI, parse only #{r}", bare))
            print(row(f"bare DirectRoute, parse only #{r}", lean))
            print(row(f"accrue POST /v0/events #{r}", real, ratios[-1], lean_ratios[-1]))
        stored = await stored_rows(url) - before
        print(
            f"median: {statistics.median(ratios):.2f}x bare FastAPI (target 0.80x; rounds "
            f"{min(ratios):.2f}x to {max(ratios):.2f}x), "
            f"{statistics.median(lean_ratios):.2f}x bare DirectRoute; "
            f"server CPU per request {statistics.median(cpu_ratios):.2f}x bare FastAPI's; "
            f"{stored} of {offset} events stored"
        )
        assert stored == offset, "every 202 must correspond to a stored row"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--slices", type=int, default=4, help="alternating slices per run")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.rounds, args.slices))
