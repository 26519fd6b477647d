"""The Temporal client for the sources endpoints and pages: a Temporal that cannot be reached is a clean
503 in the error envelope, never a 500."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from temporalio.client import Client
from temporalio.service import RPCError

from api.app_state import temporal_client
from api.problems import ApiError

# A connected client, or how to get one: the services call it only once the request's checks have passed,
# so an invalid request is a 400 even while Temporal is away.
ClientSource = Client | Callable[[], Awaitable[Client]]

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


def lazy_client(app: FastAPI, what: str) -> Callable[[], Awaitable[Client]]:
    return lambda: reachable_client(app, what)


async def resolve(client: ClientSource) -> Client:
    return client if isinstance(client, Client) else await client()
