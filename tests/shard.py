"""Split one pytest run into N shards run side by side (`make test` does it with tests/run_shards.py).

A plugin (`-p tests.shard`) that, when ACCRUE_TEST_SHARD is "i/N", keeps only shard i's test files. Whole
files go to one shard, so module-scoped fixtures (a module's own time-skipping server, a module's seeded
data) are built once, as in an unsharded run. Files are dealt out longest first to the shard with the least
estimated time so far; every shard collects the same items, so the N shards together run each selected test
exactly once. The estimates only balance the shards: a stale one makes a shard longer, never drops a test.

Most of the suite's wall time is waiting (on the database, the Temporal servers, heartbeat and workflow
task timeouts, subprocesses, Chromium), so two shards on two cores finish well before one run would."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import PurePosixPath

import pytest

ENV = "ACCRUE_TEST_SHARD"

# Seconds a test of a directory takes, setup included, as measured in a whole run (2 cores, CI-like).
PER_TEST = {"domain": 0.005, "db": 0.03, "api": 0.12, "compat": 1.0, "workflows": 1.2, "e2e": 5.0}
DEFAULT_PER_TEST = 0.05
# Files whose time is not about their number of tests (dev stacks, browsers, heartbeat timeouts, property
# runs).
PER_FILE = {
    "tests/workflows/test_reliability.py": 80,
    "tests/api/test_schemathesis.py": 70,
    "tests/workflows/test_subscription_scenarios.py": 34,
    "tests/workflows/test_webhook_delivery.py": 33,
    "tests/e2e/test_dev_stack.py": 30,
    "tests/e2e/test_revenue_share_e2e.py": 25,
    "tests/e2e/test_pay_as_you_go_e2e.py": 20,
    "tests/e2e/test_quickstart.py": 19,
    "tests/workflows/test_source_installation_polling.py": 18,
    "tests/workflows/test_replay.py": 17,
    "tests/api/test_invoices.py": 17,
    "tests/api/test_events.py": 16,
    "tests/workflows/test_test_clock.py": 16,
    "tests/e2e/test_webhook_worker_killed.py": 14,
    "tests/e2e/test_webhooks_e2e.py": 12,
    "tests/e2e/test_docs_offline.py": 12,
    "tests/api/test_bad_input.py": 12,
    "tests/e2e/test_browser.py": 9,
    "tests/e2e/test_test_clock_api_killed.py": 7,
    "tests/e2e/test_webhook_portal_browser.py": 5,
    "tests/e2e/test_credentials.py": 1,
    "tests/e2e/test_search_attributes.py": 2,
    "tests/e2e/test_reconciler_schedule.py": 2,
}


def parse(value: str) -> tuple[int, int]:
    """ "i/N" → (i, N), 1 ≤ i ≤ N."""
    index, _, count = value.partition("/")
    shard, total = int(index), int(count)
    if not 1 <= shard <= total:
        raise ValueError(f"{ENV}={value!r}: want i/N with 1 <= i <= N")
    return shard, total


def estimate(path: str, tests: int) -> float:
    if path in PER_FILE:
        return float(PER_FILE[path])
    parts = PurePosixPath(path).parts
    directory = parts[1] if len(parts) > 2 else ""
    return tests * PER_TEST.get(directory, DEFAULT_PER_TEST)


def assign(files: Counter[str], total: int) -> dict[str, int]:
    """File → shard (1-based): longest first onto the shard with the least time so far."""
    load = [0.0] * total
    shard_of: dict[str, int] = {}
    for path in sorted(files, key=lambda p: (-estimate(p, files[p]), p)):
        lightest = min(range(total), key=lambda s: (load[s], s))
        load[lightest] += estimate(path, files[path])
        shard_of[path] = lightest + 1
    return shard_of


@pytest.hookimpl(trylast=True)  # after -k/-m deselection, so the shards split what is left
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    value = os.environ.get(ENV)
    if not value:
        return
    shard, total = parse(value)
    files = Counter(item.nodeid.split("::")[0] for item in items)
    shard_of = assign(files, total)
    keep = [item for item in items if shard_of[item.nodeid.split("::")[0]] == shard]
    drop = [item for item in items if shard_of[item.nodeid.split("::")[0]] != shard]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_report_header(config: pytest.Config) -> str | None:
    value = os.environ.get(ENV)
    return f"shard {value} ({ENV})" if value else None
