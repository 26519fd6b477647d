"""Assertions shared by API tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.webhook_relay import relay_batch
from workflows.webhook_messages import EndpointRef


async def relay_all(sessions: async_sessionmaker[AsyncSession], limit: int = 500) -> list[EndpointRef]:
    """Relay every committed outbox row, as the relay's drain does: the session's database holds other
    tests' rows too, so one pass (500 rows) may end before reaching this test's."""
    woken: list[EndpointRef] = []
    while True:
        count, endpoints = await relay_batch(sessions, limit)
        woken += endpoints
        if count == 0:
            return woken


def assert_error(response: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    """The response is `status` in the Paygentic error envelope; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    if error is not None:
        assert body.get("error") == error, body
    return body


def field_errors(response: httpx.Response) -> dict[str, str]:
    """400 validation_error: field → message."""
    body = assert_error(response, 400, "validation_error")
    return {e["field"]: e["message"] for e in body["errors"]}


def sdk063_python() -> str:
    """The interpreter of the paygentic-sdk 0.6.3 virtualenv (`make test` builds `.venv-sdk063`)."""
    default = Path(__file__).parents[1] / ".venv-sdk063" / "bin" / "python"
    path = os.environ.get("ACCRUE_SDK063_PYTHON", str(default))
    assert Path(path).exists(), f"no paygentic-sdk 0.6.3 interpreter at {path}: run `make test`"
    return path
