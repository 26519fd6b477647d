"""Bulk approval: 1,000 pending source events approved by one `POST /v0/sources/{id}/events/bulk-approve`
through the API, against `POST /v0/events/batch` with the same 1,000 events (the meter events approval
records: same type, subject, amount and timestamp), in the same run, on the same stack.

The stack and the source are source_import.py's: the dev stack with its Stripe fake, a manual source on a
5 % plan, and for each round --size / 100 installations whose accounts hold 100 paid invoices each
(localstripe slows down as one account grows), all imported as pending events before anything is timed.

Timed, one round at a time, the two sides alternating which goes first:
- Accrue: one bulk-approve call with the round's --size event ids. The API checks the ids, sends one
  `review` update to each installation's workflow (concurrently), whose activity, in one transaction,
  locks the events,
  writes a meter event per event on the mapped metric, marks them processed and writes their
  `source_event.processed.v0` outbox rows; the call answers with the per-item results.
- Baseline: one `POST /v0/events/batch` with the same events (fresh idempotency keys).
The first round is a warm-up and is not counted.

Run: .venv/bin/python bench/source_approve.py [--size 1000] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from period_close import Stack, cpu_delta, stack
from source_import import (
    EVENT_TYPE,
    Source,
    import_all,
    new_key,
    pay_everywhere,
    quiet,
    revenue_source,
    stripe_fake,
)
from sqlalchemy import select

from db.models import SourceEvent
from db.session import create_engine, session_factory

PER_INSTALLATION = 100


async def pending_of(url: str, installation_ids: list[str]) -> list[SourceEvent]:
    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            rows = await session.scalars(
                select(SourceEvent)
                .where(SourceEvent.installation_id.in_(installation_ids), SourceEvent.status == "pending")
                .order_by(SourceEvent.id)
            )
            return list(rows)
    finally:
        await engine.dispose()


def as_meter_events(events: list[SourceEvent], tag: str) -> list[dict[str, Any]]:
    return [
        {
            "type": EVENT_TYPE,
            "source": "bench",
            "subject": e.customer_id,
            "data": {"amount": str(e.amount)},
            "timestamp": e.usage_at.isoformat(),
            "idempotencyKey": f"{tag}:{e.id}",
        }
        for e in events
    ]


async def approve(http: httpx.AsyncClient, src: Source, ids: list[str]) -> float:
    started = time.perf_counter()
    response = await http.post(f"/v0/sources/{src.source_id}/events/bulk-approve", json={"eventIds": ids})
    seconds = time.perf_counter() - started
    body = response.json()
    assert response.status_code == 200 and body["processed"] == len(ids), response.text[:500]
    return seconds


async def batch(http: httpx.AsyncClient, events: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    response = await http.post("/v0/events/batch", json={"events": events})
    seconds = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["accepted"] == len(events), response.text[:500]
    return seconds


async def rounds(s: Stack, src: Source, size: int) -> None:
    headers = {"Authorization": f"Bearer {src.merchant.api_key}"}
    print(f"{'round':<44}{'ms':>10}{'events/s':>12}{'vs batch':>10}")
    ratios: list[float] = []
    cpu: dict[str, dict[str, float]] = {"bulk-approve": {}, "events/batch": {}}
    async with httpx.AsyncClient(base_url=s.api, headers=headers, timeout=300) as http:
        per_round = size // PER_INSTALLATION
        groups = [src.installations[i : i + per_round] for i in range(0, len(src.installations), per_round)]
        for r, group in enumerate(groups):
            pending = await pending_of(s.database_url, [i["id"] for i in group])
            assert len(pending) == size, (len(pending), size)
            ids, events = [e.id for e in pending], as_meter_events(pending, f"round{r}")
            timings: dict[str, float] = {}
            for side in ("bulk-approve", "events/batch") if r % 2 else ("events/batch", "bulk-approve"):
                before = s.cpu()
                call = approve(http, src, ids) if side == "bulk-approve" else batch(http, events)
                timings[side] = await call
                if r:
                    for k, v in cpu_delta(before, s.cpu()).items():
                        cpu[side][k] = cpu[side].get(k, 0.0) + v
            if r == 0:
                continue  # warm-up: connections, caches, the workflow's first update
            ratio = timings["events/batch"] / timings["bulk-approve"]
            ratios.append(ratio)
            for side in ("events/batch", "bulk-approve"):
                shown = f"POST …/{side} #{r}" if side == "bulk-approve" else f"POST /v0/{side} #{r}"
                tail = f"{ratio:>9.2f}x" if side == "bulk-approve" else ""
                print(f"{shown:<44}{timings[side] * 1000:>10.1f}{size / timings[side]:>12.0f}{tail}")
    print(f"median ratio {statistics.median(ratios):.2f}x (target 0.50x)")
    for side, spent in cpu.items():
        busy = sorted(spent.items(), key=lambda kv: -kv[1])
        n = size * len(ratios)
        shares = ", ".join(f"{k} {v * 1000 / n:.2f}" for k, v in busy if v > 0.005)
        print(f"CPU ms per event, {side}: {shares}")


async def main(args: argparse.Namespace) -> None:
    work_dir = Path(tempfile.mkdtemp(prefix="accrue-bench-approve-"))
    with stripe_fake() as (fake, fake_process):
        os.environ["ACCRUE_STRIPE_API_BASE"] = fake
        os.environ["ACCRUE_SOURCE_POLL_INTERVAL"] = "PT1H"  # only the signal polls
        async with stack(work_dir, args.workers) as s:
            s.processes["stripe fake"] = [fake_process]
            per_round = args.size // PER_INSTALLATION
            keys = [new_key() for _ in range((args.rounds + 1) * per_round)]
            src = await revenue_source(s, len(keys), keys)
            await asyncio.to_thread(pay_everywhere, fake, keys, PER_INSTALLATION)
            await import_all(s, src, PER_INSTALLATION * len(keys), "bench setup")
            print(
                f"{args.rounds + 1} rounds of {args.size} pending events over {per_round} installations"
                f" each; {args.workers} worker(s)"
            )
            with quiet():
                await rounds(s, src, args.size)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
