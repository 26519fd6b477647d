"""Period close of autoCharge subscriptions: N subscriptions on one test clock cross a period boundary and
its grace window, and each period invoice is charged off-session with the customer's saved card, timed until
every period invoice is PAID: once with the cards saved at the Stripe provider (PaymentIntents through the
real `stripe` library against the Stripe fake, tests/stripe_fake.py = localstripe), once with the sandbox
provider's saved test method, on the same dev stack, in the same run (issue 11: Stripe ≥ 0.6× sandbox).

The stack is bench/period_close.py's (Temporal dev server, embedded PostgreSQL, the real API, W worker
processes), with the Stripe fake as one more process and the workers pointed at it (ACCRUE_STRIPE_API_BASE,
ACCRUE_STRIPE_SECRET_KEY).

Setup (not timed), per provider: a merchant, a plan with one metered in-arrears price (Invoice 0 is free, so
every subscription is active at once), N customers and autoCharge subscriptions through the API, a few meter
events each, and each customer's saved method in provider_customers as an Invoice 0 paid with
savePaymentMethod leaves it: for Stripe a customer with card 4242… attached in the fake (through the
`stripe` library), for the sandbox `pm_sandbox_visa`.

Timed: one `PATCH /v0/testClocks/{id}` to periodEnd + grace; each subscription's workflow closes the period,
opens the next, finalizes the invoice and charges it (charge_invoice, a local activity; for Stripe one
PaymentIntent create with confirm + off_session), until the database holds N PAID period invoices. Also
timed, to tell whether the fake is the bottleneck: the same N off-session PaymentIntent creates sent straight
to the fake by a bare loop (the `stripe` library, 64 in flight), after the Accrue phases.

Run: .venv/bin/python bench/period_close_autocharge.py [--subscriptions 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

import httpx
import psutil
import stripe
from period_close import (
    EVENT_TYPE,
    GRACE,
    Phase,
    Stack,
    count_invoices,
    cpu_delta,
    in_parallel,
    iso,
    one_month_later,
    post,
    stack,
    wait_until,
)
from sqlalchemy.dialects.postgresql import insert

from db.merchants import NewMerchant, create_merchant
from db.models import ProviderCustomer
from db.session import create_engine, session_factory
from tests.stripe_fake import new_key, start_fake, stripe_client

EVENTS_PER_SUBSCRIPTION = 3
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


async def subscriptions(base: str, merchant: NewMerchant, n: int, start: datetime) -> tuple[str, list[str]]:
    """A clock at `start` with n active autoCharge subscriptions and their meter events; returns the clock
    id and the customer ids."""
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
                "invoiceDisplayName": "Tokens", "properties": {"unitPrice": "0.01"},
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
        clock = await post(http, "/v0/testClocks", {"currentTime": iso(start), "name": "autocharge bench"})

        def customer(i: int) -> Callable[[], Awaitable[dict[str, Any]]]:
            consumer = {"name": f"Customer {i}", "email": f"c{i}@bench.example", "address": {"country": "US"}}
            return lambda: post(http, "/v0/customers", {"merchantId": m, "consumer": consumer})

        customers = [c["customerId"] for c in await in_parallel([customer(i) for i in range(n)], 16)]

        def subscribe(customer_id: str) -> Callable[[], Awaitable[dict[str, Any]]]:
            body = {
                "name": "Bench", "planId": plan["id"], "customerId": customer_id, "startedAt": iso(start),
                "testClockId": clock["id"], "autoCharge": True,
            }  # fmt: skip
            return lambda: post(http, "/v0/subscriptions", body)

        subs = await in_parallel([subscribe(c) for c in customers], 16)
        inactive = [s["id"] for s in subs if s["status"] != "active"]
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
        return clock["id"], customers


async def stripe_cards(fake: str, key: str, n: int) -> list[tuple[str, str]]:
    """n Stripe customers in the fake, each with card 4242… attached: (cus_…, pm_…)."""
    client = stripe_client(fake, key)

    async def one(i: int) -> tuple[str, str]:
        customer = await client.v1.customers.create_async(params={"email": f"c{i}@bench.example"})
        method = await client.v1.payment_methods.create_async(params={"type": "card", "card": CARD})  # type: ignore[arg-type]
        await client.v1.payment_methods.attach_async(method.id, params={"customer": customer.id})
        return customer.id, method.id

    def call(i: int) -> Callable[[], Awaitable[tuple[str, str]]]:
        return lambda: one(i)

    return await in_parallel([call(i) for i in range(n)], 16)


async def save_methods(
    url: str, merchant: NewMerchant, customers: list[str], provider: str, methods: list[tuple[str, str]]
) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            rows = [
                {
                    "merchant_id": merchant.merchant_id, "environment": "sandbox", "customer_id": c,
                    "provider": provider, "provider_customer": pc, "payment_method": pm,
                }
                for c, (pc, pm) in zip(customers, methods, strict=True)
            ]  # fmt: skip
            await session.execute(insert(ProviderCustomer), rows)
            await session.commit()
    finally:
        await engine.dispose()


async def prepare(s: Stack, provider: str, n: int, fake: str, key: str) -> tuple[NewMerchant, str, datetime]:
    engine = create_engine(s.database_url, pool_size=1)
    async with session_factory(engine)() as session:
        merchant = await create_merchant(session, f"Bench {provider}")
    await engine.dispose()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    began = time.perf_counter()
    clock, customers = await subscriptions(s.api, merchant, n, start)
    if provider == "stripe":
        methods = await stripe_cards(fake, key, n)
    else:
        methods = [("", "pm_sandbox_visa")] * n
    await save_methods(s.database_url, merchant, customers, provider, methods)

    async def all_in_period_one() -> bool:
        return await count_invoices(s.database_url, merchant.merchant_id, 1, ("ACTIVE",)) >= n

    await wait_until(all_in_period_one, 900, "subscriptions opening period 1")
    await asyncio.sleep(2)
    print(f"setup ({provider}): {n} active autoCharge subscriptions in {time.perf_counter() - began:.1f} s")
    return merchant, clock, one_month_later(start) + GRACE


async def close_phase(
    s: Stack, provider: str, merchant: NewMerchant, clock: str, target: datetime, n: int
) -> Phase:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    before = s.cpu()
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=s.api, headers=headers, timeout=1800) as http:
        advance = asyncio.ensure_future(
            http.patch(f"/v0/testClocks/{clock}", json={"currentTime": iso(target)})
        )
        while True:
            paid = await count_invoices(s.database_url, merchant.merchant_id, 1, ("PAID",))
            if paid >= n:
                break
            failed = await count_invoices(s.database_url, merchant.merchant_id, 1, ("PAYMENT_FAILED",))
            if failed:
                raise RuntimeError(f"{failed} charges failed on the {provider} provider (see worker logs)")
            if time.perf_counter() - started > 1800:
                raise TimeoutError(f"only {paid}/{n} invoices PAID after 30 min")
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - started
        response = await advance
    notes = [f"PATCH /v0/testClocks answered {response.status_code}"]
    return Phase(
        f"{provider}: period close + off-session charge (until every invoice is PAID)",
        elapsed,
        n,
        cpu_delta(before, s.cpu()),
        notes,
    )


async def fake_alone(s: Stack, fake: str, key: str, n: int) -> Phase:
    """The fake's own pace for the calls Accrue makes in the Stripe phase: n off-session PaymentIntents."""
    methods = await stripe_cards(fake, key, n)
    client = stripe_client(fake, key)
    before = s.cpu()
    started = time.perf_counter()

    def charge(i: int, customer: str, method: str) -> Callable[[], Awaitable[Any]]:
        params = {
            "amount": 600, "currency": "usd", "customer": customer, "payment_method": method,
            "confirm": True, "off_session": True, "metadata": {"bench": str(i)},
        }  # fmt: skip
        return (
            lambda: client.v1.payment_intents.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"bench-{key[-8:]}-{i}:charge:1"},
            )
        )

    intents = await in_parallel([charge(i, c, m) for i, (c, m) in enumerate(methods)], 64)
    elapsed = time.perf_counter() - started
    assert all(intent.status == "succeeded" for intent in intents)
    return Phase(
        "Stripe fake alone: off-session PaymentIntents, 64 in flight", elapsed, n, cpu_delta(before, s.cpu())
    )


async def run(n: int, workers: int, work_dir: Path, order: str) -> None:
    process, fake = start_fake()
    key = new_key()
    os.environ["ACCRUE_STRIPE_SECRET_KEY"] = key
    os.environ["ACCRUE_STRIPE_API_BASE"] = fake
    stripe.max_network_retries = 0
    try:
        async with stack(work_dir, workers) as s:
            s.processes["stripe fake"] = [psutil.Process(process.pid)]
            phases: dict[str, Phase] = {}
            for provider in order.split(","):
                merchant, clock, target = await prepare(s, provider, n, fake, key)
                phases[provider] = await close_phase(s, provider, merchant, clock, target, n)
                phases[provider].show()
            alone = await fake_alone(s, fake, key, n)
            alone.show()
            sandbox, stripe_phase = phases["sandbox"], phases["stripe"]
            print("\nCPU ms per subscription (all processes):")
            for phase in (sandbox, stripe_phase, alone):
                per = {k: 1000 * v / n for k, v in phase.cpu.items() if v >= 0.05 * n / 1000}
                shown = ", ".join(f"{k} {v:.0f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
                print(f"  {phase.name.split(':')[0]}: {sum(per.values()):.0f} ({shown})")
            print(
                f"\nsubscriptions/s: stripe {stripe_phase.rate:.1f}, sandbox {sandbox.rate:.1f}: ratio "
                f"{stripe_phase.rate / sandbox.rate:.2f}x (target >= 0.6x); the Stripe fake alone takes "
                f"{alone.seconds:.2f} s for the {n} PaymentIntents ({alone.rate:.0f}/s)"
            )
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscriptions", type=int, default=1000, help="subscriptions per provider (1000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument(
        "--order", default="sandbox,stripe", help="which provider runs first (sandbox,stripe)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, databases)")
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="accrue-bench-autocharge-"))
    print(
        f"period close with autoCharge: {args.subscriptions} subscriptions per provider, "
        f"{args.workers} workers"
    )
    print(f"logs in {work_dir}")
    asyncio.run(run(args.subscriptions, args.workers, work_dir, args.order))
    if not args.keep:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
