"""Assertions shared by API tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx


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
