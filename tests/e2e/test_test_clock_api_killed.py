"""An advance outlives the API process that took the PATCH: `accrue api` runs as its own process, is killed
with SIGKILL while the clock's workflow is still driving its subscriptions, and a fresh API process then
shows every bound subscription at the new time. Were the advance driven from the request handler (the
design before TestClockWorkflow), the subscriptions not yet reached when the process died would stay in
their first period and this test would fail."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from activities import test_clock as clock_activities
from db.merchants import NewMerchant
from db.models import Invoice
from db.session import session_factory
from settings import Settings
from tests.conftest import free_port
from tests.e2e.dev_server import DevServer
from worker import build_worker, register_search_attributes
from workflows.client import connect

ACCRUE = str(Path(sys.executable).parent / "accrue")
SUBSCRIPTIONS = 30


class ApiProcess:
    """`accrue api` on its own port, against the session's PostgreSQL and Temporal dev server."""

    def __init__(self, settings: Settings, dev_server: DevServer, task_queue: str, log: Path) -> None:
        self.port = free_port()
        env = os.environ | {
            "ACCRUE_DATABASE_URL": settings.database_url,
            "ACCRUE_TEMPORAL_ADDRESS": dev_server.address,
            "ACCRUE_TEMPORAL_NAMESPACE": dev_server.namespace,
            "ACCRUE_TASK_QUEUE": task_queue,
            "ACCRUE_API_PORT": str(self.port),
            "ACCRUE_LOG_LEVEL": "WARNING",
        }
        env.pop("DATABASE_URL", None)
        env.pop("TEMPORAL_ADDRESS", None)
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [ACCRUE, "api"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self.url = f"http://127.0.0.1:{self.port}"

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, f"accrue api exited:\n{self.log.read_text()}"
                try:
                    await http.get(f"{self.url}/v0/testClocks")
                    return
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        pytest.fail(f"accrue api did not start within 60 s:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def api_processes() -> Iterator[list[ApiProcess]]:
    started: list[ApiProcess] = []
    yield started
    for api in started:
        api.kill()


@pytest.fixture
async def task_queue(
    temporal_dev_server: DevServer, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """A worker in this process; small batches and few updates in flight keep the fan-out under way long
    enough for the kill to land in the middle of it."""
    monkeypatch.setattr(clock_activities, "BATCH", 5)
    monkeypatch.setattr(clock_activities, "CONCURRENCY", 2)
    client = await connect(temporal_dev_server.address, temporal_dev_server.namespace)
    await register_search_attributes(client, temporal_dev_server.namespace)
    queue = f"clock-kill-{uuid4()}"
    async with build_worker(client, engine, queue):
        yield queue


async def post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def metered_plan(http: httpx.AsyncClient, merchant_id: str) -> str:
    """Only an in-arrears price: Invoice 0 is zero, so each subscription is active at once."""
    owner = {"merchantId": merchant_id}
    product = await post(http, "/v0/products", owner | {"name": "LLM Inference", "description": "calls"})
    event_type = f"calls.{uuid4().hex[:6]}"
    metric = await post(
        http, "/v0/billableMetrics",
        owner | {"productId": product["id"], "name": event_type, "description": event_type, "unit": "calls",
                 "aggregation": "COUNT", "eventType": event_type},
    )  # fmt: skip
    price = await post(
        http, "/v0/prices",
        {"billableMetricId": metric["id"], "model": "standard", "paymentTerm": "in_arrears",
         "invoiceDisplayName": "Calls", "properties": {"unitPrice": "0.50"}},
    )  # fmt: skip
    plan = await post(
        http, "/v0/plans",
        owner | {"name": "Metered", "currency": "USD", "productId": product["id"], "prices": [price["id"]],
                 "billingVersion": 1},
    )  # fmt: skip
    return str(plan["id"])


async def past_period_one(engine: AsyncEngine, subscription_ids: list[str]) -> int:
    """Subscriptions whose period-2 invoice exists: the clock's advance has reached them."""
    async with session_factory(engine)() as session:
        count = await session.scalar(
            select(func.count()).where(
                Invoice.subscription_id.in_(subscription_ids), Invoice.sequence_number == 2
            )
        )
    return int(count or 0)


async def invoices_by_subscription(http: httpx.AsyncClient) -> dict[str, dict[int, str]]:
    found: dict[str, dict[int, str]] = {}
    offset = 0
    while True:
        response = await http.get("/v2/invoices", params={"limit": 100, "offset": offset})
        assert response.status_code == 200, response.text
        page = response.json()["data"]
        for invoice in page:
            found.setdefault(invoice["subscriptionId"], {})[invoice["sequenceNumber"]] = invoice["status"]
        if len(page) < 100:
            return found
        offset += 100


async def test_an_advance_survives_the_api_process_being_killed(
    settings: Settings,
    temporal_dev_server: DevServer,
    engine: AsyncEngine,
    merchant: NewMerchant,
    task_queue: str,
    api_processes: list[ApiProcess],
    tmp_path: Path,
) -> None:
    log = tmp_path / "api.log"
    first = ApiProcess(settings, temporal_dev_server, task_queue, log)
    api_processes.append(first)
    await first.wait_ready()
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=first.url, headers=headers, timeout=30) as http:
        plan = await metered_plan(http, merchant.merchant_id)
        clock = await post(http, "/v0/testClocks", {"merchantId": merchant.merchant_id, "name": "kill"})
        ids = []
        for n in range(SUBSCRIPTIONS):
            customer = await post(
                http, "/v0/customers",
                {"merchantId": merchant.merchant_id,
                 "consumer": {"name": f"Acme {n}", "email": f"billing+{uuid4().hex[:8]}@acme.example",
                              "address": {"country": "US", "state": "TX", "zipCode": "78701"}}},
            )  # fmt: skip
            subscription = await post(
                http, "/v0/subscriptions",
                {"name": "Acme - Metered", "planId": plan, "customerId": customer["customerId"],
                 "startedAt": clock["currentTime"], "testClockId": clock["id"]},
            )  # fmt: skip
            assert subscription["status"] == "active", subscription
            ids.append(subscription["id"])

        patch = asyncio.create_task(http.patch(f"/v0/testClocks/{clock['id']}", json={"advanceBy": "P1M"}))
        deadline = time.monotonic() + 60
        while (await http.get(f"/v0/testClocks/{clock['id']}")).json()["advanceStatus"] != "advancing":
            assert not patch.done(), f"the PATCH answered before the advance was seen: {patch.result().text}"
            assert time.monotonic() < deadline, "the clock never read advancing"
            await asyncio.sleep(0.05)
        # Let the fan-out reach a few subscriptions, then kill the process that holds the PATCH.
        while await past_period_one(engine, ids) == 0:
            assert time.monotonic() < deadline, "no subscription reached the new time"
            await asyncio.sleep(0.05)
        first.kill()
        reached_when_killed = await past_period_one(engine, ids)
        with pytest.raises(httpx.TransportError):
            await patch
    assert reached_when_killed < SUBSCRIPTIONS, "the advance had finished before the API process died"

    second = ApiProcess(settings, temporal_dev_server, task_queue, log)
    api_processes.append(second)
    await second.wait_ready()
    async with httpx.AsyncClient(base_url=second.url, headers=headers, timeout=30) as http:
        deadline = time.monotonic() + 180
        while True:
            read = (await http.get(f"/v0/testClocks/{clock['id']}")).json()
            if read["advanceStatus"] == "ready":
                break
            assert time.monotonic() < deadline, f"the advance did not finish: {read}"
            await asyncio.sleep(0.2)
        assert read["currentTime"] > clock["currentTime"]
        invoices = await invoices_by_subscription(http)
    behind = {
        sid: invoices.get(sid)
        for sid in ids
        if invoices.get(sid, {}).get(1) in (None, "ACTIVE") or invoices.get(sid, {}).get(2) != "ACTIVE"
    }
    assert behind == {}, f"{len(behind)} of {SUBSCRIPTIONS} subscriptions did not reach the new time"
