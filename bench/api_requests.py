"""Request rate of the real API for catalog writes and reads, against a bare FastAPI baseline.

Starts its own embedded PostgreSQL (or uses DATABASE_URL), migrates, creates a merchant, serves the real app
(`accrue api`) and a bare app in their own uvicorn processes on free ports, then drives both from this
process with concurrent httpx clients. Prints requests/s, p50 and p99 latency per scenario and the ratio to
the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from db.merchants import create_merchant
from db.migrate import upgrade
from db.session import create_engine, session_factory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(argv: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        argv, env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{argv} did not start listening on {port}")


class ProductBody(BaseModel):
    merchantId: str
    name: str
    description: str


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v0/products", status_code=201)
    async def create(body: ProductBody) -> dict[str, str]:
        return {"id": "prod_bare", "name": body.name}

    @app.get("/v0/products/{id}")
    async def get(id: str) -> dict[str, str]:
        return {"id": id}

    return app


async def drive(
    call: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]], base: str, key: str, n: int, c: int
) -> tuple[float, float, float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=c)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:
        counter = iter(range(n))

        async def one_worker() -> None:
            for i in counter:
                started = time.perf_counter()
                response = await call(client, i)
                latencies.append(time.perf_counter() - started)
                assert response.status_code < 300, response.text

        started = time.perf_counter()
        await asyncio.gather(*(one_worker() for _ in range(c)))
        elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return n / elapsed, quantiles[49] * 1000, quantiles[98] * 1000


async def main(requests: int, concurrency: int) -> None:
    url = os.environ.get("DATABASE_URL")
    if not url:
        from accrue.embedded_db import start

        _, url = start(Path(tempfile.mkdtemp(prefix="accrue-bench-")) / "pg")
    upgrade(url)
    engine = create_engine(url, pool_size=2)
    async with session_factory(engine)() as session:
        merchant = await create_merchant(session, "Bench Merchant")
    await engine.dispose()

    real_port, bare_port = free_port(), free_port()
    real, bare = f"http://127.0.0.1:{real_port}", f"http://127.0.0.1:{bare_port}"
    env = {"DATABASE_URL": url, "ACCRUE_API_PORT": str(real_port), "ACCRUE_LOG_LEVEL": "WARNING"}
    bare_argv = ["-m", "uvicorn", "--app-dir", str(Path(__file__).parent), "--factory"]
    bare_argv += ["--port", str(bare_port), "--log-level", "warning", "api_requests:bare_app"]
    servers = [
        serve([sys.executable, "-m", "accrue", "api"], real_port, env),
        serve([sys.executable, *bare_argv], bare_port, {}),
    ]
    try:
        await run_scenarios(real, bare, merchant.api_key, merchant.merchant_id, requests, concurrency)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)


async def run_scenarios(
    real: str, bare: str, key: str, merchant_id: str, requests: int, concurrency: int
) -> None:
    body = {"merchantId": merchant_id, "name": "Bench", "description": "benchmark product"}
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:
        product_id = (await client.post(f"{real}/v0/products", json=body)).json()["id"]

    async def post(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/v0/products", json=body | {"name": f"Bench {i}"})

    async def get(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(f"/v0/products/{product_id}")

    print(
        f"{requests} requests per scenario, {concurrency} concurrent clients, one uvicorn process per server"
    )
    print(f"{'scenario':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs bare':>10}")
    for name, call in (("POST /v0/products", post), ("GET /v0/products/{id}", get)):
        await drive(call, real, key, min(200, requests), concurrency)  # warm-up
        base_rate, base_p50, base_p99 = await drive(call, bare, key, requests, concurrency)
        rate, p50, p99 = await drive(call, real, key, requests, concurrency)
        print(f"{'bare ' + name:<28}{base_rate:>10.0f}{base_p50:>10.1f}{base_p99:>10.1f}{'':>10}")
        print(f"{'accrue ' + name:<28}{rate:>10.0f}{p50:>10.1f}{p99:>10.1f}{rate / base_rate:>9.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
