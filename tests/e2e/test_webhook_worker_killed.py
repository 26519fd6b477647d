"""A worker SIGKILLed mid-POST: the batch activity is retried by a fresh worker process once its heartbeat
is missed, which POSTs each message again at most once (receivers dedupe by svix-id) and records each
attempt once. Real processes, the session's Temporal dev server and PostgreSQL, a real receiver."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from settings import Settings
from tests.e2e.dev_server import DevServer
from tests.webhook_receiver import Plan, WebhookReceiver
from tests.workflows.webhook_harness import Hooks, sub
from worker import register_search_attributes
from workflows.client import connect
from workflows.webhook_messages import EndpointRef

MESSAGES = 20
ROOT = Path(__file__).parents[2]

# The production worker (worker.build_worker), without the deployment-wide singletons `accrue worker` also
# starts (the relay, the reconciler Schedule), which would stay bound to this test's task queue.
WORKER = """
import asyncio, sys
from db.session import create_engine
from worker import build_worker
from workflows.client import connect

async def main(database_url, address, namespace, task_queue):
    engine = create_engine(database_url, 4, pre_ping=False)
    client = await connect(address, namespace)
    async with build_worker(client, engine, task_queue):
        print("polling", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


class WorkerProcess:
    def __init__(self, settings: Settings, dev_server: DevServer, task_queue: str, log: Path) -> None:
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "ACCRUE_SECRET_KEY"}
        args = [settings.database_url, dev_server.address, dev_server.namespace, task_queue]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER, *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def wait_polling(self) -> None:
        deadline = time.monotonic() + 60
        while "polling" not in self.log.read_text():
            assert self.process.poll() is None, f"worker exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"worker did not start:\n{self.log.read_text()}"
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture
async def hooks(
    temporal_dev_server: DevServer, engine: AsyncEngine, merchant: NewMerchant
) -> AsyncIterator[Hooks]:
    client = await connect(temporal_dev_server.address, temporal_dev_server.namespace)
    await register_search_attributes(client, temporal_dev_server.namespace)
    hooks = Hooks(client, engine, merchant, f"webhook-kill-{uuid4()}")
    yield hooks
    await hooks.terminate_workflows()


async def test_a_worker_killed_mid_post_delivers_each_message_again_at_most_once(
    settings: Settings,
    temporal_dev_server: DevServer,
    hooks: Hooks,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    first = WorkerProcess(settings, temporal_dev_server, hooks.task_queue, log)
    workers.append(first)
    await first.wait_polling()
    with WebhookReceiver() as receiver:
        ref, secret = await hooks.endpoint(receiver.url())
        # Every first request hangs: the worker is killed while all of them are in flight.
        receiver.configure(secrets=[secret], plan=Plan(delay=30.0))
        await hooks.emit([sub(n) for n in range(MESSAGES)])
        arrived = await receiver.wait_for(MESSAGES, delivered=False, within=60)
        assert all(r.status == 0 for r in arrived)  # none answered yet: every POST is mid-flight
        first.kill()
        assert await hooks.attempts(ref) == []  # nothing was recorded by the killed worker
        receiver.configure(plan=Plan())
        second = WorkerProcess(settings, temporal_dev_server, hooks.task_queue, log)
        workers.append(second)
        await second.wait_polling()
        # the retry comes once the killed attempt's heartbeat is missed (10 s)
        await hooks.until(lambda: _all_delivered(hooks, ref), within=90)
        ids = Counter(r.svix_id for r in receiver.received())
    deliveries = await hooks.deliveries(ref)
    assert set(ids) == {d.message_id for d in deliveries} and len(ids) == MESSAGES
    assert max(ids.values()) <= 2  # each message POSTed again at most once
    attempts = await hooks.attempts(ref)
    assert sorted((a.message_id, a.attempt, a.succeeded) for a in attempts) == sorted(
        (d.message_id, 1, True) for d in deliveries
    )


async def _all_delivered(hooks: Hooks, ref: EndpointRef) -> bool:
    deliveries = await hooks.deliveries(ref)
    return bool(deliveries) and all(d.status == "delivered" for d in deliveries)
