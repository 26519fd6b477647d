"""The request guard: what every request must satisfy before a route sees it, answered in the error envelope.

- a body over the configured size is a 413, whether declared by Content-Length or streamed in chunks;
- a body that does not arrive within the read timeout is a 408 (a trickling client holds no worker);
- a NUL character anywhere (path, query, a JSON string or key) is a 400 naming the field: PostgreSQL
  stores none in text or jsonb, and would otherwise fail the request half-way;
- a query value longer than MAX_QUERY_VALUE is a 400, before any parser recurses into it;
- an error no handler answered is a 500 in the envelope, sent here so that the server keeps the
  keep-alive connection instead of resetting it after the response.

The body is read in full before the route runs (bodies are small JSON, bounded by the limit) and replayed
to it, so each check is made once, here. A few hot endpoints (`direct`) are called from here as well,
past the framework's exception middleware and router: on POST /v0/events those layers cost about a fifth
of the request (bench/events_ingest.py). Their routes stay registered, for the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import ApiError, FieldErrors, internal_error

log = logging.getLogger("accrue.api")

MAX_QUERY_VALUE = 1024
# How JSON spells a NUL character; bodies without it need no deeper look.
NUL = b"\\u0000"
# Batches report a NUL per event, as every other per-event problem (api/routers/events.py).
PER_ITEM_PATHS = frozenset({"/v0/events/batch"})


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def nul_fields(value: Any, field: str) -> Iterator[str]:
    """The fields of a decoded JSON value that hold a NUL, in a key (reported as the object) or a string."""
    if isinstance(value, str):
        if "\x00" in value:
            yield field
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield field
            else:
                yield from nul_fields(item, f"{field}.{key}" if field else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from nul_fields(item, f"{field}[{index}]")


def nul_error(fields: list[str]) -> FieldErrors:
    unique = dict.fromkeys(f or "body" for f in fields)
    return FieldErrors(
        [
            {"field": f, "message": "cannot contain the NUL character (\\u0000)", "code": "nul_character"}
            for f in unique
        ]
    )


def _target_problem(scope: Scope) -> ApiError | None:
    if "\x00" in scope.get("path", ""):
        return nul_error(["path"])
    query = scope.get("query_string", b"")
    if not query:
        return None
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace")
    nul = [name for name, value in pairs if "\x00" in name or "\x00" in value]
    if nul:
        return nul_error([n.replace("\x00", "") or "query" for n in nul])
    long = [name for name, value in pairs if len(value) > MAX_QUERY_VALUE]
    if long:
        return FieldErrors(
            [
                {
                    "field": name,
                    "message": f"is longer than {MAX_QUERY_VALUE} characters",
                    "code": "too_long",
                }
                for name in dict.fromkeys(long)
            ]
        )
    return None


def _body_problem(body: bytes) -> ApiError | None:
    if NUL not in body:
        return None
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the route's parser reports that
    fields = list(nul_fields(decoded, ""))
    return nul_error(fields) if fields else None


Endpoint = Callable[[Request], Awaitable[Response]]


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        body_timeout: float,
        direct: Mapping[tuple[str, str], Endpoint] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.direct = dict(direct or {})
        # Requests still reading their body, with their deadlines. One watchdog task checks them each
        # second: a timer per request (asyncio.timeout, wait_for) cost more than the rest of this guard.
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def _read_in_time(self, receive: Receive) -> bytes:
        """The whole body; TimeoutError past the deadline, _TooLarge past the limit, _Disconnected."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._reading[task] = loop.time() + self.body_timeout
        if self._watchdog is None:
            self._watchdog = loop.create_task(self._watch(), name="request-body-watchdog")
        try:
            chunks: list[bytes] = []
            seen = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > self.max_bytes:
                    raise _TooLarge
                if not message.get("more_body", False):
                    return b"".join((*chunks, chunk)) if chunks else chunk
                chunks.append(chunk)
        except asyncio.CancelledError:
            if task in self._expired:
                task.uncancel()
                raise TimeoutError from None
            raise
        finally:
            del self._reading[task]
            self._expired.discard(task)

    async def _watch(self) -> None:
        """Cancel the reads past their deadline; ends when none is left, so an idle app holds no task."""
        loop = asyncio.get_running_loop()
        try:
            while self._reading:
                await asyncio.sleep(min(1.0, self.body_timeout))
                now = loop.time()
                for task, deadline in list(self._reading.items()):
                    if deadline <= now and task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._watchdog = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = _target_problem(scope)
        if problem is not None:
            await _answer(send, problem)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _answer(send, self._too_large(), close=True)
            return
        try:
            body = await self._read_in_time(receive)
        except TimeoutError:
            timeout = ApiError(
                408,
                f"The request body did not arrive within {self.body_timeout:g} s; send it in one go.",
            )
            await _answer(send, timeout, close=True)
            return
        except _TooLarge:
            await _answer(send, self._too_large(), close=True)
            return
        except _Disconnected:
            return
        if scope["path"] not in PER_ITEM_PATHS:
            problem = _body_problem(body)
            if problem is not None:
                await _answer(send, problem)
                return
        await self._run(scope, _replay(body, receive), send)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            endpoint = self.direct.get((scope["method"], scope["path"]))
            if endpoint is None:
                await self.app(scope, receive, tracking_send)
                return
            try:
                response = await endpoint(Request(scope, receive))
            except ApiError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status)
            await response(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _answer(send, internal_error())

    def _too_large(self) -> ApiError:
        return ApiError(413, f"Request body exceeds the {self.max_bytes}-byte limit; send less per request.")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body, only a disconnect can come

    return replay


async def _answer(send: Send, error: ApiError, *, close: bool = False) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        # The rest of the body was not read: the connection cannot carry another request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
