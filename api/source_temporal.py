"""The Temporal client for the sources endpoints and pages: a Temporal that cannot be reached is a clean
503 in the error envelope, never a 500."""

from __future__ import annotations

from fastapi import FastAPI
from temporalio.client import Client
from temporalio.service import RPCError

from api.app_state import temporal_client
from api.problems import ApiError

# What the temporalio client raises when the server is down or the connection drops.
UNREACHABLE = (RPCError, RuntimeError, OSError)


def unavailable(
    what: str, exc: BaseException | None = None, outcome: str = "nothing was applied, retry"
) -> ApiError:
    reason = f" ({exc})" if exc is not None and str(exc) else ""
    return ApiError(503, f"Could not reach the workflow service to {what}{reason}; {outcome}")


async def reachable_client(app: FastAPI, what: str) -> Client:
    try:
        return await temporal_client(app)
    except UNREACHABLE as exc:
        raise unavailable(what, exc) from None
