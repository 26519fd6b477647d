"""A real webhook receiver for tests: an HTTP server on a free port (uvicorn in a thread, so sync and async
tests, the in-process worker and a worker in another process can all reach it).

Every request is verified with BOTH real libraries, `svix.webhooks.Webhook` and `standardwebhooks.Webhook`,
against the secrets configured for its path (an unverifiable request is answered 401, as a real receiver
would), recorded, and answered per the path's plan: a sequence of status codes per message, then a final
status, optionally after a delay.

    with WebhookReceiver() as receiver:
        receiver.configure("/hook", secrets=[secret], plan=Plan(statuses=[500] * 7))
        ... create an endpoint with url=receiver.url("/hook") ...
        await receiver.wait_for(1)
        assert receiver.delivered()[0].payload["eventType"] == "subscription.created.v0"

Receivers dedupe by svix-id: `delivered_ids()` is the set of ids answered 2xx, `duplicates()` the ids
answered 2xx more than once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import standardwebhooks
import uvicorn
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from tests.ports import free_port as _free_port


@dataclass(frozen=True)
class Plan:
    """How a path answers. `statuses[n]` answers the n-th request carrying one svix-id (counted per path,
    from 0), `then` every later one; `delay` seconds pass before each answer (a slow endpoint)."""

    statuses: Sequence[int] = ()
    then: int = 200
    delay: float = 0.0
    body: str = "ok"

    def status_for(self, nth: int) -> int:
        return self.statuses[nth] if nth < len(self.statuses) else self.then


@dataclass(frozen=True)
class Received:
    path: str
    svix_id: str
    headers: dict[str, str]  # lower-cased names
    body: bytes  # the raw body, as signed
    payload: Any  # the parsed JSON body (None when it is not JSON)
    verified: bool  # both libraries accepted it with one of the path's secrets
    errors: tuple[str, ...]  # why each library rejected it, when it did
    arrived_at: float  # wall-clock seconds (time.time()) when the request's body was read
    status: int  # what the receiver answered (401 when not verified; 0 while it has not answered yet)
    nth: int  # how many requests with this svix-id reached this path before

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300


def verify(body: bytes, headers: dict[str, str], secret: str) -> list[str]:
    """Errors from the svix and standardwebhooks libraries verifying one request with one secret ([] =
    both accept it). standardwebhooks reads `webhook-*` headers: the same values under its names."""
    errors: list[str] = []
    try:
        SvixWebhook(secret).verify(body, headers)
    except SvixVerificationError as exc:
        errors.append(f"svix: {exc}")
    standard = {k.replace("svix-", "webhook-"): v for k, v in headers.items()}
    try:
        standardwebhooks.Webhook(secret).verify(body, standard)
    except standardwebhooks.WebhookVerificationError as exc:
        errors.append(f"standardwebhooks: {exc}")
    return errors


@dataclass
class _Path:
    secrets: list[str] = field(default_factory=list)
    plan: Plan = field(default_factory=Plan)
    respond: Callable[[Received], int] | None = None


class WebhookReceiver:
    def __init__(self) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._paths: dict[str, _Path] = {}
        self._received: list[Received] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._server = uvicorn.Server(
            uvicorn.Config(
                self._app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                # requests a test abandoned (a killed sender) do not hold up the receiver's stop
                timeout_graceful_shutdown=1,
                interface="asgi3",
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True, name=f"receiver:{self.port}")

    # -- setup -----------------------------------------------------------------------------------------

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    def configure(
        self,
        path: str = "/hook",
        *,
        secrets: Sequence[str] | None = None,
        plan: Plan | None = None,
        respond: Callable[[Received], int] | None = None,
    ) -> None:
        """Set what `path` verifies with and how it answers (only the arguments given change). `respond`,
        when set, decides the status from the request instead of the plan (the plan's delay still applies)."""
        with self._lock:
            state = self._paths.setdefault(path, _Path())
            if secrets is not None:
                state.secrets = list(secrets)
            if plan is not None:
                state.plan = plan
            if respond is not None:
                state.respond = respond

    def start(self) -> WebhookReceiver:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("webhook receiver did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what arrived ----------------------------------------------------------------------------------

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def delivered(self, path: str | None = None) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        return [r for r in self.received(path) if r.delivered]

    def delivered_ids(self, path: str | None = None) -> set[str]:
        return {r.svix_id for r in self.delivered(path)}

    def duplicates(self, path: str | None = None) -> dict[str, int]:
        """svix-ids answered 2xx more than once, with how often (receivers dedupe these)."""
        counts = Counter(r.svix_id for r in self.delivered(path))
        return {k: n for k, n in counts.items() if n > 1}

    async def wait_for(
        self,
        count: int,
        path: str | None = None,
        *,
        delivered: bool = True,
        answered: bool = False,
        within: float = 30,
    ) -> list[Received]:
        """Wait up to `within` real seconds until `count` requests reached `path`: answered 2xx, or with
        delivered=False any request (answered=True: once the receiver has answered it); returns them."""
        deadline = time.monotonic() + within
        while True:
            got = self.delivered(path) if delivered else self.received(path)
            if answered:
                got = [r for r in got if r.status]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"receiver got {len(got)} of {count} requests at {path or 'any path'}")
            await asyncio.sleep(0.02)

    # -- the server ------------------------------------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        arrived_at = time.time()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        svix_id = headers.get("svix-id", "")
        with self._lock:
            state = self._paths.get(path, _Path())
            nth = self._counts[(path, svix_id)]
            self._counts[(path, svix_id)] += 1
        errors: list[str] = ["no secret configured for this path"] if not state.secrets else []
        verified = False
        for secret in state.secrets:
            errors = verify(body, headers, secret)
            if not errors:
                verified = True
                break
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        # Recorded on arrival with status 0 (not answered yet), so a test sees a request its sender
        # abandons mid-delay; a real receiver acts on a message before it answers.
        record = Received(path, svix_id, headers, body, payload, verified, tuple(errors), arrived_at, 0, nth)
        with self._lock:
            index = len(self._received)
            self._received.append(record)
        if not verified:
            status = 401
        elif state.respond is not None:
            status = state.respond(record)
        else:
            status = state.plan.status_for(nth)
        if state.plan.delay:
            await asyncio.sleep(state.plan.delay)
        with self._lock:
            self._received[index] = replace(record, status=status)
        reply = (state.plan.body if verified else "; ".join(errors)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(reply)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": reply})
