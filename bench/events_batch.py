"""POST /v0/events/batch with 1,000 events through the real API against a raw asyncpg COPY of the same rows
into the same table.

The API authenticates, validates each event, checks its type, stores the batch in one deduplicating
INSERT and answers with per-event results. The baseline builds the same rows (ids, JSON-encoded data)
and COPYs them into meter_events over one connection it already holds, checking nothing. Batches run one
at a time on both sides; the issue's target is a ratio of at least 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from _harness import EVENT_TYPE, accrue_api, database_url, new_merchant, new_metric

COLUMNS = [
    "id",
    "merchant_id",
    "environment",
    "type",
    "source",
    "subject",
    "data",
    "timestamp",
    "idempotency_key",
]


def events(batch: int, size: int) -> list[dict[str, Any]]:
    return [
        {
            "type": EVENT_TYPE,
            "source": "https://api.myapp.com",
            "subject": f"cus_{i % 500}",
            "timestamp": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
            "data": {"tokens": i % 1000, "model": "gpt-4o"},
            "idempotencyKey": f"batch-{batch}-{i}",
        }
        for i in range(size)
    ]


async def post_batches(base: str, key: str, bodies: list[bytes], size: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    timings = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        for content in bodies:
            started = time.perf_counter()
            response = await client.post("/v0/events/batch", content=content)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["accepted"] == size, response.text[:500]
    return timings


async def copy_batches(url: str, merchant_id: str, batches: list[list[dict[str, Any]]]) -> list[float]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    timings = []
    try:
        for batch in batches:
            started = time.perf_counter()
            records = [
                (
                    "evt_" + secrets.token_hex(12),
                    merchant_id,
                    "sandbox",
                    e["type"],
                    e["source"],
                    e["subject"],
                    json.dumps(e["data"]),
                    datetime.fromisoformat(e["timestamp"]),
                    "copy-" + e["idempotencyKey"],
                )
                for e in batch
            ]
            await conn.copy_records_to_table("meter_events", records=records, columns=COLUMNS)
            timings.append(time.perf_counter() - started)
    finally:
        await conn.close()
    return timings


def summary(name: str, timings: list[float], size: int) -> str:
    p50 = statistics.median(timings)
    return f"{name:<34}{p50 * 1000:>10.1f}{max(timings) * 1000:>10.1f}{size / p50:>14.0f}"


async def main(size: int, rounds: int, batches: int) -> None:
    url = database_url()
    merchant = await new_merchant(url)
    with accrue_api(url) as real:
        await new_metric(real, merchant)
        print(f"{size} events per batch, {batches} batches per run, one at a time")
        print(f"{'run':<34}{'p50 ms':>10}{'max ms':>10}{'events/s':>14}{'vs COPY':>10}")
        ratios = []
        n = 0
        for r in range(1, rounds + 2):
            plain = [events(n + b, size) for b in range(batches)]
            n += batches
            bodies = [json.dumps({"events": b}, separators=(",", ":")).encode() for b in plain]
            copy = await copy_batches(url, merchant.merchant_id, plain)
            api = await post_batches(real, merchant.api_key, bodies, size)
            if r == 1:
                continue  # warm-up: connections, prepared statements, caches
            ratio = statistics.median(copy) / statistics.median(api)
            ratios.append(ratio)
            print(summary(f"raw asyncpg COPY #{r - 1}", copy, size))
            print(summary(f"POST /v0/events/batch #{r - 1}", api, size) + f"{ratio:>9.2f}x")
        print(f"median ratio {statistics.median(ratios):.2f}x (target 0.50x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.size, args.rounds, args.batches))
