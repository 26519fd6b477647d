"""`accrue dev` as a developer runs it: start, use, Ctrl-C, start again on the same data, lose a child."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from paygentic_sdk import Paygentic
from typer.testing import CliRunner

from accrue.cli import app
from accrue.embedded_db import postmaster_pid
from tests.conftest import free_port
from tests.e2e.readme import quick_start_blocks, run_block

ACCRUE = str(Path(sys.executable).parent / "accrue")
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Ports:
    api: int
    temporal: int
    ui: int


@dataclass(frozen=True)
class Ready:
    merchant_id: str
    api_key: str
    seconds: float
    output: str


def clean_env() -> dict[str, str]:
    """The developer's shell: no database or Temporal configured, so the stack starts its own."""
    drop = ("DATABASE_URL", "TEMPORAL_ADDRESS")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("ACCRUE_")}


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Dev:
    """One `accrue dev` subprocess whose output is drained continuously (a full pipe would stall it)."""

    def __init__(self, data_dir: Path, ports: Ports, env: Mapping[str, str] | None = None) -> None:
        argv = [ACCRUE, "dev", "--data-dir", str(data_dir), "--api-port", str(ports.api)]
        argv += ["--temporal-port", str(ports.temporal), "--ui-port", str(ports.ui)]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            env=clean_env() | dict(env or {}),
        )  # fmt: skip
        self.lines: list[str] = []
        self.fresh: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self.fresh.put(line.rstrip("\n"))
        self.fresh.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> Ready:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                line = self.fresh.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"accrue dev not ready within {READY_TIMEOUT:.0f} s:\n{self.output}")
            if line is None:
                pytest.fail(f"accrue dev exited ({self.process.wait()}) before ready:\n{self.output}")
            if line == "Accrue is ready":
                break
        merchant = re.search(r"Merchant id\s+(org_\w+)", self.output)
        key = re.search(r"API key\s+(sk_test_\w+)", self.output)
        took = re.search(r"Started in ([\d.]+) s", self.output)
        assert merchant and key and took, self.output
        return Ready(merchant[1], key[1], float(took[1]), self.output)

    def family(self, data_dir: Path) -> list[psutil.Process]:
        """Every process the stack runs: its children and PostgreSQL's postmaster with its backends."""
        processes = psutil.Process(self.process.pid).children(recursive=True)
        pid = postmaster_pid(data_dir / "postgres")
        assert pid is not None, "PostgreSQL is not running"
        postmaster = psutil.Process(pid)
        return [*processes, postmaster, *postmaster.children(recursive=True)]

    def wait(self) -> int:
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"accrue dev did not exit within {STOP_TIMEOUT:.0f} s:\n{self.output}")

    def kill(self) -> None:
        if self.process.poll() is None:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
            self.process.kill()
            self.process.wait()


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[Dev]]:
    """Started stacks; whatever a failing test leaves running is killed, PostgreSQL included."""
    started: list[Dev] = []
    yield started
    for dev in started:
        dev.kill()
    pid = postmaster_pid(tmp_path / "accrue" / "postgres")
    if pid is not None:
        psutil.Process(pid).send_signal(signal.SIGINT)  # fast shutdown


def accrue(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ACCRUE, *args], capture_output=True, text=True, env=clean_env(), timeout=60, check=False
    )


def created_merchant(data_dir: Path, name: str) -> dict[str, str]:
    done = accrue("merchant", "create", "--name", name, "--json", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    created: dict[str, str] = json.loads(done.stdout)
    assert set(created) == {"merchantId", "apiKey"}, created
    assert created["merchantId"].startswith("org_") and created["apiKey"].startswith("sk_test_")
    return created


def api(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=15)


def product_ids(base: str, key: str) -> list[str]:
    with api(base, key) as http:
        response = http.get("/v0/products")
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["data"]]


def test_dev_stack_lifecycle(tmp_path: Path, stacks: list[Dev]) -> None:
    data_dir = tmp_path / "accrue"
    ports = Ports(api=free_port(), temporal=free_port(), ui=free_port())
    base = f"http://127.0.0.1:{ports.api}"

    # First start: a fresh data directory.
    stacks.append(first := Dev(data_dir, ports))
    ready = first.wait_ready()
    for shown in (
        f"API           {base}",
        f"API docs      {base}/docs",
        f"Temporal UI   http://127.0.0.1:{ports.ui}",
    ):
        assert shown in ready.output
    assert "Created merchant 'Accrue Dev Merchant'" in ready.output
    saved = data_dir / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["apiKey"] == ready.api_key

    health = httpx.get(f"{base}/healthz", timeout=15)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    assert httpx.get(f"{base}/docs", timeout=15).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{ports.ui}/", timeout=15).status_code == 200

    with api(base, ready.api_key) as http:
        body = {"merchantId": ready.merchant_id, "name": "Via HTTP", "description": "created with httpx"}
        via_http = http.post("/v0/products", json=body)
    assert via_http.status_code == 201, via_http.text
    with Paygentic(server_url=base, bearer_auth=ready.api_key) as sdk:
        via_sdk = sdk.products.create(
            merchant_id=ready.merchant_id, name="Via SDK", description="paygentic-sdk"
        )
    products = [via_http.json()["id"], via_sdk.id]
    assert product_ids(base, ready.api_key) == products

    # The README's curl and SDK examples work as written against this stack.
    curl_block, sdk_block = quick_start_blocks()
    created_by_curl = json.loads(run_block(curl_block, data_dir, ports.api))
    assert created_by_curl["name"] == "LLM Inference" and created_by_curl["merchantId"] == ready.merchant_id
    created_by_sdk = run_block(sdk_block, data_dir, ports.api).split()[0]
    products += [created_by_curl["id"], created_by_sdk]
    assert product_ids(base, ready.api_key) == products

    # `merchant create --data-dir` borrows the running stack's PostgreSQL and leaves it running.
    postgres = postmaster_pid(data_dir / "postgres")
    while_running = created_merchant(data_dir, "While Running")
    assert product_ids(base, while_running["apiKey"]) == []
    assert postmaster_pid(data_dir / "postgres") == postgres
    assert httpx.get(f"{base}/healthz", timeout=15).status_code == 200

    # One stack per data directory, even on other ports.
    other = Ports(api=free_port(), temporal=free_port(), ui=free_port())
    stacks.append(rival := Dev(data_dir, other))
    assert rival.wait() == 1
    assert f"another `accrue dev` is already running on {data_dir}" in rival.output
    assert product_ids(base, ready.api_key) == products

    family = first.family(data_dir)
    commands = [" ".join(p.cmdline()) for p in family]
    for expected in ("temporal server start-dev", "-m accrue worker", "-m accrue api", "postgres -D"):
        assert any(expected in c for c in commands), commands
    first.process.send_signal(signal.SIGINT)
    assert first.wait() == 0, first.output
    assert "Stopped." in first.output
    assert [c for p, c in zip(family, commands, strict=True) if alive(p)] == []

    # With the stack down it starts PostgreSQL alone and stops it again.
    while_stopped = created_merchant(data_dir, "While Stopped")
    assert postmaster_pid(data_dir / "postgres") is None

    # Second start: same data, same merchant and key, nothing lost.
    stacks.append(second := Dev(data_dir, ports))
    again = second.wait_ready()
    assert (again.merchant_id, again.api_key) == (ready.merchant_id, ready.api_key)
    assert "Created merchant" not in again.output
    assert product_ids(base, again.api_key) == products
    assert product_ids(base, while_stopped["apiKey"]) == []
    assert product_ids(base, while_running["apiKey"]) == []

    # A child that dies takes the whole stack down, with a message naming it.
    family = second.family(data_dir)
    worker = next(p for p in family if "-m accrue worker" in " ".join(p.cmdline()))
    worker.kill()
    assert second.wait() == 1, second.output
    assert "accrue dev: worker exited unexpectedly" in second.output
    assert [p for p in family if alive(p)] == []

    print(f"\naccrue dev ready in {ready.seconds} s (first start), {again.seconds} s (second start)")


def normalized(text: str) -> str:
    """Typer's boxed error without the box and its line wrapping."""
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["merchant", "create", "--name", "Acme", "--environment", "prod"],
            "'prod' is not one of 'sandbox', 'live'",
        ),
        (["merchant", "create", "--environment", "live"], "Missing option '--name'"),
        (["merchant", "create", "--name", "  "], "Invalid value for --name: must not be empty"),
        (["merchant", "create", "--name", "Acme", "--data-dir", "{empty}"], "holds no Accrue database"),
        (["migrate", "--data-dir", "{empty}"], "holds no Accrue database"),
        (["dev", "--api-port", "0"], "Invalid value for '--api-port'"),
        (["dev", "--temporal-port", "70000"], "Invalid value for '--temporal-port'"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("{empty}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in normalized(result.output)
