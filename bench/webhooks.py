"""Webhook delivery on the dev stack: messages delivered per second to a local receiver, against a bare loop
of signed httpx POSTs to the same receiver at the same concurrency, in the same run; and the relay lag, from
an outbox row's commit to its first attempt's arrival at the receiver, p50/p99.

The stack is `accrue dev`'s, assembled by period_close.py: a Temporal dev server, embedded PostgreSQL (or
DATABASE_URL) and W worker processes (`accrue worker`: the outbox relay and the endpoint workflows). The
receiver is a minimal HTTP/1.1 server in a process of its own that answers 200 at once and records each
svix-id's first arrival (time.time(), the clock the bench stamps commits with).

Phases:
1. Throughput: N outbox rows (a subscription's representation, spread over R resources so the endpoint's
   per-resource ordering leaves room for concurrency) committed as fast as one writer can, 50 rows a
   transaction, for one endpoint; timed from the first commit to the last arrival. Lag is printed too,
   though in a burst it is mostly the backlog's queue.
2. Baseline: the same N bodies POSTed by C concurrent tasks with one httpx client (helper 1's delivery
   client), each signed with the same secret (integrations/webhook_signing.py), to the same receiver. C is
   the delivery activity's concurrency (activities/webhook_delivery.CONCURRENCY).
3. Lag at load: rows committed one per transaction, as lifecycle changes are, at half the throughput
   phase's rate for --seconds; p50/p99 of commit → arrival.
CPU seconds per process (worker, PostgreSQL, Temporal) show where the time goes.

Run: .venv/bin/python bench/webhooks.py [--messages 3000] [--resources 1000] [--workers 1] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
from api_requests import free_port
from period_close import Stack, cpu_delta, spawn, stack
from sqlalchemy import func, select

from activities.webhook_delivery import CONCURRENCY, http_client
from db import outbox
from db.merchants import NewMerchant, create_merchant
from db.models import WebhookApp, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from db.session import create_engine, session_factory
from domain.ids import new_id
from domain.webhook_events import EVENT_TYPES
from integrations import webhook_signing
from integrations.secret_box import SecretBox

SECRET_KEY = "bench-webhooks-secret-key-0123456789abcdef"  # the workers open endpoint secrets with it
EVENT = "subscription.updated.v0"
ROWS_PER_TRANSACTION = 50


# ---- the receiver (its own process) ----------------------------------------------------------------------


async def serve_receiver(port: int) -> None:
    """POST any path: 200, first arrival of its svix-id recorded. GET /report: {svix-id: arrival}, then
    forgets them (so phases do not mix)."""
    arrivals: dict[str, float] = {}
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                at = time.time()
                length, svix_id = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"svix-id":
                        svix_id = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET /report"):
                    body = json.dumps(arrivals).encode()
                    arrivals.clear()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                else:
                    arrivals.setdefault(svix_id, at)
                    writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def report(base: str) -> dict[str, float]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base}/report", timeout=30)
        arrivals: dict[str, float] = response.json()
        return arrivals


# ---- setup -----------------------------------------------------------------------------------------------


async def endpoint(url: str, receiver: str) -> tuple[NewMerchant, str, str]:
    """A merchant with webhooks enabled and one endpoint at the receiver; returns it, the endpoint id and
    its signing secret."""
    engine = create_engine(url, pool_size=1)
    secret = webhook_signing.new_secret()
    try:
        async with session_factory(engine)() as session:
            merchant = await create_merchant(session, "Bench Merchant")
            session.add(
                WebhookApp(
                    id=new_id("webhook_app"),
                    merchant_id=merchant.merchant_id,
                    environment="sandbox",
                    enabled=True,
                )
            )
            ep_id = new_id("webhook_endpoint")
            session.add(
                WebhookEndpoint(
                    id=ep_id,
                    merchant_id=merchant.merchant_id,
                    environment="sandbox",
                    url=f"{receiver}/hook",
                    secret=SecretBox(SECRET_KEY).seal(secret),
                )
            )
            await session.commit()
    finally:
        await engine.dispose()
    return merchant, ep_id, secret


def data(i: int, resources: int) -> dict[str, Any]:
    sub = dict(EVENT_TYPES[EVENT].example)
    sub["id"] = f"sub_bench{i % resources:019d}"
    sub["name"] = f"Bench {i}"
    return sub


async def write(
    url: str, merchant: NewMerchant, first: int, n: int, resources: int, per_transaction: int
) -> dict[str, float]:
    """Commit n outbox rows, `per_transaction` at a time, as fast as one writer can; returns each row's id →
    commit time."""
    engine = create_engine(url, pool_size=1)
    committed: dict[str, float] = {}
    try:
        async with session_factory(engine)() as session:
            for start in range(first, first + n, per_transaction):
                ids = [
                    outbox.record(session, merchant.merchant_id, "sandbox", EVENT, data(i, resources)).id
                    for i in range(start, min(start + per_transaction, first + n))
                ]
                await session.commit()
                at = time.time()
                committed |= dict.fromkeys(ids, at)
    finally:
        await engine.dispose()
    return committed


async def write_at_rate(
    url: str, merchant: NewMerchant, first: int, rate: float, seconds: float, resources: int
) -> dict[str, float]:
    """One row per transaction at `rate` rows/s (a few writers, so a slow commit does not hold the rest)."""
    engine = create_engine(url, pool_size=4)
    committed: dict[str, float] = {}
    n = int(rate * seconds)
    begin = time.monotonic()

    async def writer(k: int) -> None:
        async with session_factory(engine)() as session:
            for i in range(first + k, first + n, 4):
                delay = begin + (i - first) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                row = outbox.record(session, merchant.merchant_id, "sandbox", EVENT, data(i, resources))
                await session.commit()
                committed[row.id] = time.time()

    try:
        await asyncio.gather(*(writer(k) for k in range(4)))
    finally:
        await engine.dispose()
    return committed


async def wait_for(receiver: str, ids: Sequence[str], within: float) -> dict[str, float]:
    """Collect arrivals until every id has arrived; returns them."""
    wanted, seen = set(ids), {}
    deadline = time.monotonic() + within
    while not wanted <= seen.keys():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(wanted - seen.keys())} of {len(wanted)} messages not delivered")
        await asyncio.sleep(0.2)
        seen |= await report(receiver)
    return seen


def lag_line(committed: dict[str, float], arrived: dict[str, float]) -> str:
    lags = sorted(arrived[i] - at for i, at in committed.items())
    q = statistics.quantiles(lags, n=100)
    ms = [q[49] * 1000, q[98] * 1000, lags[-1] * 1000]
    return "lag commit → arrival p50 {:.0f} ms, p99 {:.0f} ms, max {:.0f} ms".format(*ms)


async def breakdown(url: str, committed: dict[str, float], arrived: dict[str, float]) -> str:
    """Where the lag goes, per message: commit → the relay's transaction (its deliveries' created_at) →
    the batch that attempted it (the attempt's time, from the workflow's clock) → arrival."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        WebhookDelivery.message_id,
                        WebhookDelivery.created_at,
                        func.min(WebhookAttempt.created_at),
                    )
                    .join(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
                    .where(WebhookDelivery.message_id.in_(list(committed)))
                    .group_by(WebhookDelivery.message_id, WebhookDelivery.created_at)
                )
            ).all()
    finally:
        await engine.dispose()
    parts: dict[str, list[float]] = {"relay": [], "wake + batch start": [], "POST": []}
    for message_id, relayed, attempted in rows:
        parts["relay"].append(relayed.timestamp() - committed[message_id])
        parts["wake + batch start"].append(attempted.timestamp() - relayed.timestamp())
        parts["POST"].append(arrived[message_id] - attempted.timestamp())

    def p(values: list[float], k: int) -> float:
        return statistics.quantiles(values, n=100)[k - 1] * 1000

    return "where it goes (p50 / p99 ms): " + ", ".join(
        f"{name} {p(v, 50):.0f} / {p(v, 99):.0f}" for name, v in parts.items()
    )


def cpu_line(cpu: dict[str, float], n: int) -> str:
    busy = sorted(cpu.items(), key=lambda kv: -kv[1])
    return "CPU ms per message: " + ", ".join(f"{k} {v * 1000 / n:.2f}" for k, v in busy if v > 0.005)


# ---- the phases ------------------------------------------------------------------------------------------


async def accrue_phase(s: Stack, merchant: NewMerchant, receiver: str, n: int, resources: int) -> float:
    before = s.cpu()
    started = time.time()
    committed = await write(s.database_url, merchant, 0, n, resources, ROWS_PER_TRANSACTION)
    written = time.time()
    arrived = await wait_for(receiver, list(committed), 600)
    elapsed = max(arrived[i] for i in committed) - started
    rate = n / elapsed
    print(
        f"\nAccrue: {n} messages delivered in {elapsed:.2f} s = {rate:.0f}/s "
        f"(rows written in {written - started:.2f} s)"
    )
    print(f"  {lag_line(committed, arrived)} (a burst: mostly the backlog's queue)")
    print(f"  {await breakdown(s.database_url, committed, arrived)}")
    print(f"  {cpu_line(cpu_delta(before, s.cpu()), n)}")
    return rate


async def baseline_phase(
    s: Stack, receiver: str, secret: str, n: int, resources: int, concurrency: int
) -> float:
    envelopes = [
        {"eventType": EVENT, "eventId": new_id("event"), "timestamp": "2026-03-01T09:03:12.000Z",
         "data": data(i, resources)}
        for i in range(n)
    ]  # fmt: skip
    # Encoded as the relay's messages are sent (interface8.md), before the clock starts, as theirs are.
    bodies = [
        (new_id("outbox_event"), json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode())
        for e in envelopes
    ]
    queue = iter(bodies)
    before = s.cpu()
    started = time.time()
    async with http_client(concurrency) as http:

        async def one() -> None:
            for msg_id, body in queue:
                headers = webhook_signing.headers([secret], msg_id, int(time.time()), body)
                response = await http.post(f"{receiver}/hook", content=body, headers=headers)
                assert response.status_code == 200

        await asyncio.gather(*(one() for _ in range(concurrency)))
    elapsed = time.time() - started
    arrived = await report(receiver)
    assert len(arrived) == n, len(arrived)
    rate = n / elapsed
    print(f"\nBaseline: {n} signed httpx POSTs, {concurrency} at a time, in {elapsed:.2f} s = {rate:.0f}/s")
    print(f"  {cpu_line(cpu_delta(before, s.cpu()), n)}")
    return rate


async def lag_phase(
    s: Stack, merchant: NewMerchant, receiver: str, rate: float, seconds: float, resources: int
) -> None:
    before = s.cpu()
    committed = await write_at_rate(s.database_url, merchant, 10_000_000, rate, seconds, resources)
    arrived = await wait_for(receiver, list(committed), 120)
    print(f"\nLag at load: {len(committed)} rows at {rate:.0f}/s, one per transaction")
    print(f"  {lag_line(committed, arrived)}")
    print(f"  {await breakdown(s.database_url, committed, arrived)}")
    print(f"  {cpu_line(cpu_delta(before, s.cpu()), len(committed))}")


async def main(args: argparse.Namespace) -> None:
    os.environ["ACCRUE_SECRET_KEY"] = SECRET_KEY
    work_dir = Path(tempfile.mkdtemp(prefix="accrue-bench-webhooks-"))
    port = free_port()
    receiver_process = spawn(
        [sys.executable, __file__, "--receiver", str(port)], {}, work_dir / "receiver.log"
    )
    receiver = f"http://127.0.0.1:{port}"
    try:
        async with stack(work_dir, args.workers) as s:
            s.processes["receiver"] = [psutil.Process(receiver_process.pid)]
            merchant, ep_id, secret = await endpoint(s.database_url, receiver)
            # Warm-up (untimed): the relay is listening and the endpoint's workflow is running.
            warm = await write(s.database_url, merchant, -1000, 100, args.resources, ROWS_PER_TRANSACTION)
            await wait_for(receiver, list(warm), 120)
            print(
                f"endpoint {ep_id}, {args.workers} worker(s), {args.resources} resources, "
                f"concurrency {CONCURRENCY}"
            )
            accrue = await accrue_phase(s, merchant, receiver, args.messages, args.resources)
            bare = await baseline_phase(s, receiver, secret, args.messages, args.resources, CONCURRENCY)
            print(f"\nAccrue / baseline: {accrue / bare:.2f}x (target >= 0.5x)")
            await lag_phase(s, merchant, receiver, accrue / 2, args.seconds, args.resources)
    finally:
        receiver_process.terminate()
        receiver_process.wait(10)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--receiver":
        asyncio.run(serve_receiver(int(sys.argv[2])))
        sys.exit()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument(
        "--resources", type=int, default=1000, help="distinct subscriptions the rows are about"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10, help="span of the lag phase")
    asyncio.run(main(parser.parse_args()))
