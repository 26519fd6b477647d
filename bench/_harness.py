"""What the event benchmarks share: a migrated database with one merchant and a metric, the real API and a
bare baseline app each in its own uvicorn process, and the request driver of api_requests.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from api_requests import drive, free_port, serve

from db.merchants import NewMerchant, create_merchant
from db.migrate import upgrade
from db.session import create_engine, session_factory

__all__ = ["drive", "free_port", "serve"]


async def drive_raw(
    base: str,
    path: str,
    key: str,
    body: Callable[[int], dict[str, Any]],
    n: int,
    c: int,
    latencies: list[float] | None = None,
) -> tuple[float, float, float]:
    """POST n JSON bodies over c keep-alive connections; returns requests/s, p50 ms, p99 ms, and appends
    each request's seconds to `latencies` when given (to pool the quantiles of several runs).

    A minimal HTTP/1.1 client on asyncio streams: httpx spends more CPU per request than the servers
    measured here, and on a small machine that would measure the client, not the servers.
    """
    url = urlsplit(base)
    head = f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {key}\r\n"
    head += "Content-Type: application/json\r\nContent-Length: "
    if latencies is None:
        latencies = []
    counter = iter(range(n))

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            for i in counter:
                payload = json.dumps(body(i)).encode()
                started = time.perf_counter()
                writer.write(f"{head}{len(payload)}\r\n\r\n".encode() + payload)
                response_head = await reader.readuntil(b"\r\n\r\n")
                length = int(_CONTENT_LENGTH.search(response_head)[1])  # type: ignore[index]
                response_body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                status = int(response_head[9:12])
                assert status < 300, response_head + response_body
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(c)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return n / elapsed, quantiles[49] * 1000, quantiles[98] * 1000


_CONTENT_LENGTH = re.compile(rb"(?i)content-length:\s*(\d+)")

EVENT_TYPE = "bench.tokens"
_KEEP: list[Any] = []  # the embedded server lives as long as the benchmark process


def database_url() -> str:
    """DATABASE_URL, or a fresh embedded PostgreSQL; migrated either way."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        from accrue.embedded_db import start

        server, url = start(Path(tempfile.mkdtemp(prefix="accrue-bench-")) / "pg")
        _KEEP.append(server)
    upgrade(url)
    return url


async def new_merchant(url: str) -> NewMerchant:
    engine = create_engine(url, pool_size=2)
    async with session_factory(engine)() as session:
        merchant = await create_merchant(session, "Bench Merchant")
    await engine.dispose()
    return merchant


@contextmanager
def accrue_api(url: str, **settings: str) -> Iterator[str]:
    """The real API (`accrue api`) in its own process, with extra ACCRUE_* settings; yields its base URL."""
    port = free_port()
    env = {"DATABASE_URL": url, "ACCRUE_API_PORT": str(port), "ACCRUE_LOG_LEVEL": "WARNING"}
    env |= {f"ACCRUE_{name.upper()}": value for name, value in settings.items()}
    process = serve([sys.executable, "-m", "accrue", "api"], port, env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def bare_api(factory: str) -> Iterator[str]:
    """A baseline app `module:factory` from bench/, served by uvicorn exactly like the real one."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent), "--factory"]
    argv += ["--port", str(port), "--log-level", "warning", factory]
    process = serve(argv, port, {})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def new_metric(base: str, merchant: NewMerchant, aggregation: str = "SUM") -> str:
    """A product and a metric on EVENT_TYPE summing $.tokens, grouped by $.model; returns the metric id."""
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        product = await client.post(
            "/v0/products", json={"merchantId": merchant.merchant_id, "name": "Bench", "description": "d"}
        )
        metric = await client.post(
            "/v0/billableMetrics",
            json={
                "merchantId": merchant.merchant_id,
                "productId": product.json()["id"],
                "name": "Tokens",
                "description": "benchmark tokens",
                "unit": "tokens",
                "aggregation": aggregation,
                "valueProperty": "$.tokens",
                "eventType": EVENT_TYPE,
                "groupBy": {"model": "$.model"},
            },
        )
        metric.raise_for_status()
        metric_id: str = metric.json()["id"]
        return metric_id
