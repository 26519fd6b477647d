"""Assertions shared by API tests."""

from __future__ import annotations

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
