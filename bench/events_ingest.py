"""Single-event POST /v0/events through the real API against a bare FastAPI endpoint parsing the same body.

Each request of the real API is authenticated, validated, checked against the merchant's event types and
answered 202 only after its row is committed; concurrent requests share commits through the group-commit
writer. The bare endpoint parses the same body into an equivalent pydantic model and answers 202 without
touching anything (the issue's baseline; target ratio ≥ 0.8). For reference, the same bare process also
serves the parse-only endpoint through Accrue's DirectRoute (the lean route class POST /v0/events uses),
so the last column isolates what authenticating and storing cost.

Both servers run in their own uvicorn process. The load comes from a minimal keep-alive HTTP client
(bench/_harness.py drive_raw): httpx would spend more CPU per request than the servers and measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from datetime import datetime
from typing import Any

import asyncpg
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


def row(name: str, rate: float, p50: float, p99: float, *ratios: float) -> str:
    return f"{name:<34}{rate:>9.0f}{p50:>9.1f}{p99:>9.1f}" + "".join(f"{r:>10.2f}x" for r in ratios)


async def main(requests: int, concurrency: int, rounds: int) -> None:
    url = database_url()
    merchant = await new_merchant(url)
    key = merchant.api_key
    with accrue_api(url) as real, bare_api("events_ingest:bare_app") as bare:
        await new_metric(real, merchant)
        warm = min(1000, requests)
        await drive_raw(real, "/v0/events", key, bodies(10**9), warm, concurrency)
        await drive_raw(bare, "/v0/events", key, bodies(0), warm, concurrency)
        await drive_raw(bare, "/lean/v0/events", key, bodies(0), warm, concurrency)
        print(f"{requests} requests per run, {concurrency} concurrent keep-alive connections")
        print(f"{'run':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs bare':>11}{'vs lean':>11}")
        ratios, lean_ratios = [], []
        offset = 0
        before = await stored_rows(url)
        for r in range(1, rounds + 1):
            # Interleaved, so that neither side always runs on a warmer (or busier) machine.
            base = await drive_raw(bare, "/v0/events", key, bodies(0), requests, concurrency)
            lean = await drive_raw(bare, "/lean/v0/events", key, bodies(0), requests, concurrency)
            rate, p50, p99 = await drive_raw(real, "/v0/events", key, bodies(offset), requests, concurrency)
            offset += requests
            ratios.append(rate / base[0])
            lean_ratios.append(rate / lean[0])
            print(row(f"bare FastAPI, parse only #{r}", *base))
            print(row(f"bare DirectRoute, parse only #{r}", *lean))
            print(row(f"accrue POST /v0/events #{r}", rate, p50, p99, ratios[-1], lean_ratios[-1]))
        stored = await stored_rows(url) - before
        print(
            f"median: {statistics.median(ratios):.2f}x bare FastAPI (target 0.80x), "
            f"{statistics.median(lean_ratios):.2f}x bare DirectRoute; {stored} of {offset} events stored"
        )
        assert stored == offset, "every 202 must correspond to a stored row"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.rounds))
