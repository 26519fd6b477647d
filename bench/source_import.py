"""Revenue import: 10,000 paid invoices across 100 installations, imported by their installation workflows
(manual mode: every invoice becomes a pending source event and a `source_event.pending.v0` outbox row),
against a bare loop listing the same invoices with the `stripe` library from the same Stripe fake, in the
same run.

The stack is the dev stack as period_close.py assembles it (Temporal dev server, embedded PostgreSQL or
DATABASE_URL, the API, W workers), with ACCRUE_STRIPE_API_BASE pointing at tests/stripe_fake.py (localstripe
with one account per API key) in a process of its own.

Setup (not timed): a plan with a 5 % percentage price on a USD metric, a manual source, I customers and
subscriptions and one installation each (POST /v0/sources/{id}/installations: the key is validated and the
first poll finds nothing, since the cursor starts at the connect); then N/I paid invoices in each account.
Installations poll every hour here, so nothing is imported before the clock starts.

Timed:
- Accrue: a `poll_now` signal to every installation's workflow, until PostgreSQL holds N source events.
  Each poll lists the account's invoices newest first, page by page (100 a page),
  down to its cursor, and writes the page's events in one transaction.
- Baseline: one loop, one account after the other, listing the same invoices with the same parameters
  (`stripe.StripeClient.v1.invoices.list`, auto-paging), counting the paid ones.
CPU seconds per process show where the time goes.

Run: .venv/bin/python bench/source_import.py [--invoices 10000] [--installations 100] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from period_close import Phase, Stack, cpu_delta, in_parallel, post, stack, wait_until
from sqlalchemy import func, select

from db.merchants import NewMerchant, create_merchant
from db.models import SourceEvent
from db.session import create_engine, session_factory
from workflows.client import connect, poll_installation_now

# tests.stripe_fake is in the checkout, not in the installed package
sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.stripe_fake import new_key, pay_invoices, start_fake, stripe_client

EVENT_TYPE = "stripe.revenue"
QUIET = Path("/work/bench-runs/QUIET")  # other sessions pause their test runs while it exists


@dataclass
class Source:
    merchant: NewMerchant
    source_id: str
    metric_id: str
    installations: list[dict[str, Any]]  # InstallationOut, one per subscription
    keys: list[str]  # the installations' Stripe keys, in the same order


@contextmanager
def quiet() -> Iterator[None]:
    """Tell the other sessions on this machine to hold their test runs while a phase is timed."""
    if QUIET.parent.is_dir():
        QUIET.touch()
    try:
        yield
    finally:
        QUIET.unlink(missing_ok=True)


@contextmanager
def stripe_fake() -> Iterator[tuple[str, psutil.Process]]:
    process, base = start_fake()
    try:
        yield base, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(10)


async def revenue_source(s: Stack, n: int, keys: list[str]) -> Source:
    """A merchant with the seed's product, metric, 5 % plan and a manual source; n subscriptions each
    connected with its own key."""
    engine = create_engine(s.database_url, pool_size=1)
    async with session_factory(engine)() as session:
        merchant = await create_merchant(session, "Bench Merchant")
    await engine.dispose()
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=s.api, headers=headers, timeout=120) as http:
        m = merchant.merchant_id
        product = await post(http, "/v0/products", {"merchantId": m, "name": "Bench", "description": "d"})
        metric = await post(
            http,
            "/v0/billableMetrics",
            {
                "merchantId": m, "productId": product["id"], "name": "revenue_usd", "description": "Revenue",
                "unit": "USD", "aggregation": "SUM", "valueProperty": "$.amount", "eventType": EVENT_TYPE,
            },
        )  # fmt: skip
        price = await post(
            http,
            "/v0/prices",
            {
                "billableMetricId": metric["id"], "model": "percentage", "paymentTerm": "in_arrears",
                "invoiceDisplayName": "Revenue share",
                "properties": {"percentage": "0.05", "minCharge": "0.00", "maxCharge": "10000.00"},
            },
        )  # fmt: skip
        plan = await post(
            http,
            "/v0/plans",
            {
                "merchantId": m, "productId": product["id"], "name": "Revenue share", "currency": "USD",
                "prices": [price["id"]], "billingVersion": 1, "billingCadence": "P1M",
            },
        )  # fmt: skip
        source = await post(
            http,
            "/v0/sources",
            {
                "name": "Customer Stripe Revenue", "planId": plan["id"], "type": "stripe_revenue",
                "processingMode": "manual", "metadata": {"billableMetricMapping": {"revenue": metric["id"]}},
            },
        )  # fmt: skip

        def customer(i: int) -> Callable[[], Awaitable[dict[str, Any]]]:
            consumer = {"name": f"Customer {i}", "email": f"c{i}@bench.example", "address": {"country": "US"}}
            return lambda: post(http, "/v0/customers", {"merchantId": m, "consumer": consumer})

        customers = [c["customerId"] for c in await in_parallel([customer(i) for i in range(n)], 8)]

        def subscribe(customer_id: str) -> Callable[[], Awaitable[dict[str, Any]]]:
            body = {"name": "Bench", "planId": plan["id"], "customerId": customer_id, "startedAt": started}
            return lambda: post(http, "/v0/subscriptions", body)

        started = datetime.now(UTC).isoformat()
        subscriptions = await in_parallel([subscribe(c) for c in customers], 8)

        def install(sub: dict[str, Any], key: str) -> Callable[[], Awaitable[dict[str, Any]]]:
            body = {"subscriptionId": sub["id"], "stripeSecretKey": key}
            return lambda: post(http, f"/v0/sources/{source['id']}/installations", body)

        calls = [install(sub, key) for sub, key in zip(subscriptions, keys, strict=True)]
        installations = await in_parallel(calls, 8)
    inactive = [i["id"] for i in installations if i["status"] != "active"]
    assert not inactive, f"{len(inactive)} installations are not active: {installations[0]}"
    return Source(merchant, source["id"], metric["id"], installations, keys)


def pay_everywhere(base: str, keys: list[str], per_key: int) -> list[list[str]]:
    """per_key paid invoices in each account (amounts $1.00–$99.99), a few accounts at a time; returns the
    invoice ids per key."""

    def pay(i_key: tuple[int, str]) -> list[str]:
        i, key = i_key
        amounts = [100 + (i * per_key + j) * 37 % 9900 for j in range(per_key)]
        return pay_invoices(base, key, amounts, email=f"ap{i}@customer{i}.example", name=f"Customer {i}")

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(pay, enumerate(keys)))


async def count_events(url: str, source_id: str, status: str | None = None) -> int:
    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            query = select(func.count()).select_from(SourceEvent).where(SourceEvent.source_id == source_id)
            if status is not None:
                query = query.where(SourceEvent.status == status)
            return int(await session.scalar(query) or 0)
    finally:
        await engine.dispose()


async def import_all(s: Stack, src: Source, n: int, reason: str) -> float:
    """Signal every installation to poll now; seconds until the source holds n events."""
    client = await connect(s.temporal_address)
    already = await count_events(s.database_url, src.source_id)
    started = time.perf_counter()
    await asyncio.gather(*(poll_installation_now(client, i["id"], reason) for i in src.installations))
    await wait_until(
        lambda: _at_least(s.database_url, src.source_id, already + n), 600, f"importing {n} invoices"
    )
    return time.perf_counter() - started


async def _at_least(url: str, source_id: str, n: int) -> bool:
    return await count_events(url, source_id) >= n


def list_everything(base: str, keys: list[str]) -> int:
    """The baseline: every key's invoices, newest first, 100 a page, as the installation's poll asks for
    them; returns how many were paid."""
    paid = 0
    for key in keys:
        client = stripe_client(base, key)
        params: dict[str, Any] = {"limit": 100}
        for invoice in client.v1.invoices.list(params=params).auto_paging_iter():  # type: ignore[arg-type]
            paid += invoice.to_dict().get("status") == "paid"  # as the poll reads each invoice
    return paid


async def main(args: argparse.Namespace) -> None:
    work_dir = Path(tempfile.mkdtemp(prefix="accrue-bench-sources-"))
    per_key = args.invoices // args.installations
    n = per_key * args.installations
    with stripe_fake() as (fake, fake_process):
        os.environ["ACCRUE_STRIPE_API_BASE"] = fake
        os.environ["ACCRUE_SOURCE_POLL_INTERVAL"] = "PT1H"  # only the signal polls
        async with stack(work_dir, args.workers) as s:
            s.processes["stripe fake"] = [fake_process]
            keys = [new_key() for _ in range(args.installations)]
            began = time.perf_counter()
            src = await revenue_source(s, args.installations, keys)
            await asyncio.to_thread(pay_everywhere, fake, keys, per_key)
            print(
                f"{args.installations} installations active, {n} paid invoices in the fake "
                f"(setup {time.perf_counter() - began:.0f} s); {args.workers} worker(s)"
            )
            with quiet():
                before = s.cpu()
                seconds = await import_all(s, src, n, "bench")
                accrue = Phase(
                    "Accrue: poll_now → every invoice a pending source event", seconds, n,
                    cpu_delta(before, s.cpu()),
                )  # fmt: skip
                before = s.cpu()
                started = time.perf_counter()
                listed = await asyncio.to_thread(list_everything, fake, keys)
                bare = Phase(
                    "Baseline: a bare loop listing the same invoices (stripe library)",
                    time.perf_counter() - started, listed, cpu_delta(before, s.cpu()),
                )  # fmt: skip
            pending = await count_events(s.database_url, src.source_id, "pending")
            accrue.notes.append(f"{pending} pending events (each invoice once)")
            assert listed == n and pending == n, (listed, pending, n)
            accrue.show()
            bare.show()
            print(f"\nAccrue / baseline: {accrue.rate / bare.rate:.2f}x (target >= 0.5x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--installations", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
