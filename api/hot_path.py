"""Plumbing of the hot ingestion paths (POST /v0/events, POST /v0/usage): a route served without FastAPI's
parameter resolution, and a short-lived cache of authenticated API keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.auth import Caller, authenticate


class CallerCache:
    """API keys that authenticated in the last `ttl` seconds, so that ingestion, the hottest path, does not
    look its key up per event. Only successes are kept, so a revoked key stops working within `ttl`;
    concurrent requests with the same key share one lookup."""

    def __init__(self, ttl: float = 1.0) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[float, Caller]] = {}
        self._lookups: dict[str, asyncio.Future[Caller]] = {}

    async def caller(self, request: Request) -> Caller:
        # Straight from the ASGI scope: building request.headers costs more than the lookup it serves.
        header = next((v.decode("latin-1") for k, v in request.scope["headers"] if k == b"authorization"), "")
        hit = self._entries.get(header)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        lookup = self._lookups.get(header)
        if lookup is not None:
            return await asyncio.shield(lookup)
        lookup = asyncio.get_running_loop().create_future()
        self._lookups[header] = lookup
        try:
            started = time.monotonic()
            async with request.app.state.sessions() as session:
                caller = await authenticate(request, session)
            if len(self._entries) > 10_000:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > started}
            self._entries[header] = (started + self._ttl, caller)
            lookup.set_result(caller)
            return caller
        except asyncio.CancelledError:
            lookup.cancel()
            raise
        except Exception as exc:
            lookup.set_exception(exc)
            lookup.exception()  # retrieved: a 401 nobody else awaited is not an unhandled error
            raise
        finally:
            del self._lookups[header]


class DirectRoute(APIRoute):
    """A route whose endpoint takes the Request and returns a Response itself.

    It is documented like any other route (response_model, openapi_extra), but its requests skip
    FastAPI's generic parameter resolution and response serialization, which on POST /v0/events cost more
    than authenticating, validating and storing the event together.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request)
            return response

        return handle
