"""A Temporal dev server for the whole test session (fixture `temporal_dev_server`, re-exported by
tests/conftest.py so API and e2e tests share one): headless, in memory, on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from accrue.temporal_dev import binary, wait_until_serving
from tests.ports import free_port as _free_port

# Namespaces that start without Accrue's search attributes, for tests that register them from scratch or
# register them wrongly on purpose; "default" is left to tests that run Accrue's workflows.
SPARE_NAMESPACES = ("accrue-spare-1", "accrue-spare-2", "accrue-spare-3")


@dataclass(frozen=True)
class DevServer:
    address: str
    namespace: str = "default"


@pytest.fixture(scope="session")
async def temporal_dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevServer]:
    address = f"127.0.0.1:{_free_port()}"
    host, port = address.split(":")
    log = tmp_path_factory.mktemp("temporal") / "temporal.log"
    argv = [binary(), "server", "start-dev", "--headless", "--ip", host, "--port", port]
    argv += [arg for ns in SPARE_NAMESPACES for arg in ("--namespace", ns)] + ["--log-level", "error"]
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
        )
    try:
        try:
            await wait_until_serving(address, "default", 60, lambda: process.returncode)
        except Exception as exc:
            raise RuntimeError(f"Temporal dev server did not start: {log.read_text()}") from exc
        yield DevServer(address)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
