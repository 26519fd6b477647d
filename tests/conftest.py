"""Test session infrastructure: a real PostgreSQL (embedded unless DATABASE_URL is set), migrations,
and the real API served by uvicorn on a free port. Each test gets a fresh merchant, so tests never
share tenant data and need no cleanup."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from paygentic_sdk import Paygentic
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from db.merchants import NewMerchant, create_merchant
from db.migrate import upgrade
from db.session import create_engine, session_factory
from settings import Settings
from tests.e2e.dev_server import temporal_dev_server  # noqa: F401  (session fixture for api and e2e)
from tests.ports import free_port
from tests.speed import install as install_speed_ups
from tests.stripe_fake import stripe_fake  # noqa: F401  (session fixture: a Stripe fake's base URL)

install_speed_ups()  # tests/speed.py: changes no behaviour under test


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        upgrade(url)
        yield url
        return
    from accrue.embedded_db import start

    server, url = start(Path(tmp_path_factory.mktemp("pg")) / "data")
    upgrade(url)
    yield url
    server.cleanup()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        temporal_address=os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:1"),
        api_port=free_port(),
        max_request_bytes=65_536,
    )


@pytest.fixture(scope="session")
def api_url(settings: Settings) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.api_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("API server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{settings.api_port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def new_merchant(engine: AsyncEngine, environment: str = "sandbox") -> NewMerchant:
    async with session_factory(engine)() as session:
        return await create_merchant(session, "Test Merchant", environment)


@pytest.fixture
async def merchant(engine: AsyncEngine) -> NewMerchant:
    return await new_merchant(engine)


@pytest.fixture
async def other_merchant(engine: AsyncEngine) -> NewMerchant:
    return await new_merchant(engine)


@pytest.fixture
def client(api_url: str, merchant: NewMerchant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {merchant.api_key}"}) as c:
        yield c


@pytest.fixture
def other_client(api_url: str, other_merchant: NewMerchant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {other_merchant.api_key}"}) as c:
        yield c


@pytest.fixture
def sdk(api_url: str, merchant: NewMerchant) -> Iterator[Paygentic]:
    with Paygentic(server_url=api_url, bearer_auth=merchant.api_key) as client:
        yield client
