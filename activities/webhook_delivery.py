"""WebhookEndpointWorkflow's side effect: one batch of deliveries to one endpoint.

A batch claims the endpoint's due deliveries (at most `limit`, oldest first, in one statement), groups them
by resource and POSTs the groups concurrently, each group in order and stopping at its first failure, so
messages about one resource arrive in the order they happened. Every request is signed Svix-style with the
endpoint's secret (and its previous one while a rotation overlaps), stamped with the real time (receivers
reject timestamps more than 5 minutes off) and bounded by REQUEST_TIMEOUT. Attempt times and retry times
come from the workflow's clock (`request.now` plus the time elapsed here), so the D18 schedule runs on
Temporal's timers and time-skipping tests see its exact offsets.

Everything the batch learned is written in one transaction at the end: each attempt row, each delivery's
new status, the endpoint's `failing_since` (and its disabling after 5 days of failures). Attempt rows are
unique by (delivery, attempt number) and a delivery moves on only from the attempt count it was claimed
with, so an activity retried after a crash (which POSTs again: receivers dedupe by svix-id) records each
attempt once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.models import WebhookApp, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage
from db.session import session_factory
from db.webhooks import signing_secrets
from domain import webhook_retry
from domain.ids import new_id
from domain.webhook_urls import address_problem
from integrations import webhook_signing
from integrations.secret_box import SecretBox, SecretUnreadable
from workflows.webhook_activities import WebhookActivityDefs
from workflows.webhook_messages import BatchDelivered, DeliverBatch

log = logging.getLogger(__name__)

CONCURRENCY = 32  # requests in flight per batch
REQUEST_TIMEOUT = 15.0  # seconds for one request, connect to last byte
BUDGET = 60.0  # seconds: a batch starts no request after this; the rest is due for the next batch
EXCERPT_BYTES = 1024  # of a response body kept in the attempt log
BACKLOG_COUNT_CAP = 100_000  # the operator view counts a backlog up to this, then says "100,000+"
ENVELOPE = ("eventType", "eventId", "timestamp", "data")  # key order of the body (jsonb keeps its own)


def http_client(concurrency: int = CONCURRENCY) -> httpx.AsyncClient:
    """The worker's client for every endpoint: redirects are not followed (a 3xx is a failed attempt, and
    a redirect could lead past the address check), and the pool keeps a batch's connections warm."""
    return httpx.AsyncClient(
        timeout=REQUEST_TIMEOUT,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=concurrency * 4),
        headers={"user-agent": "Accrue-Webhooks/1"},
    )


@dataclass(frozen=True)
class _Claimed:
    delivery_id: int
    message_id: str
    resource_key: str
    attempts: int
    round_attempts: int
    payload: dict[str, Any]
    updated_at: datetime  # a resend or recover while the attempt is in flight changes it


@dataclass(frozen=True)
class _Outcome:
    claimed: _Claimed
    at: datetime
    status_code: int | None
    response: str
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return webhook_retry.is_success(self.status_code)


def body_of(payload: dict[str, Any]) -> bytes:
    """The bytes sent and signed: the envelope in its documented key order, compact, UTF-8."""
    ordered = {k: payload[k] for k in ENVELOPE if k in payload} | payload
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookDeliveryActivities(WebhookActivityDefs):
    def __init__(
        self,
        engine: AsyncEngine,
        secret_box: SecretBox,
        http: httpx.AsyncClient,
        concurrency: int = CONCURRENCY,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.sessions = session_factory(engine)
        self.secret_box = secret_box
        self.http = http
        self.concurrency = concurrency
        self.request_timeout = request_timeout

    def all(self) -> list[Callable[..., Any]]:
        return [self.deliver_webhook_batch]

    @activity.defn
    async def deliver_webhook_batch(self, request: DeliverBatch) -> BatchDelivered:
        endpoint_id = request.endpoint.endpoint_id
        # Attempt times are `now` plus the time since here.
        started = time.monotonic()
        info = activity.info()
        # A retried attempt starts later than the workflow asked: its attempt times say when it ran.
        now = request.now if info.attempt == 1 else max(request.now, info.current_attempt_scheduled_time)
        async with self.sessions() as session:
            endpoint = await session.get(WebhookEndpoint, endpoint_id)
            if endpoint is None or endpoint.deleted_at is not None:
                return BatchDelivered(gone=True, summary="endpoint deleted")
            app_enabled = await session.scalar(
                select(WebhookApp.enabled).where(
                    WebhookApp.merchant_id == endpoint.merchant_id,
                    WebhookApp.environment == endpoint.environment,
                )
            )
            if endpoint.disabled or not app_enabled:
                reason = endpoint.disabled_reason if endpoint.disabled else "webhooks disabled"
                stats = await self._backlog(session, endpoint_id, now)
                return stats.model_copy(
                    update={"disabled": True, "disabled_reason": reason, "summary": f"disabled ({reason})"}
                )
            secrets = self._secrets(endpoint)
            limit = webhook_retry.batch_limit(request.limit, endpoint.rate_limit)
            claimed = await self._claim(session, endpoint_id, now, limit)
            await session.commit()
        outcomes = await self._post_all(endpoint, secrets, claimed, now, started)
        elapsed = timedelta(seconds=time.monotonic() - started)
        async with self.sessions() as session:
            await self._record(session, endpoint_id, outcomes, now + elapsed)
            stats = await self._backlog(session, endpoint_id, now + elapsed)
            await session.commit()
        return stats.model_copy(update=self._tally(claimed, outcomes))

    # ---- claim and send ----------------------------------------------------------------------------------

    async def _claim(
        self, session: AsyncSession, endpoint_id: str, now: datetime, limit: int
    ) -> list[_Claimed]:
        """Due deliveries, oldest first, skipping any that waits behind an earlier pending delivery about the
        same resource whose retry is not due yet (interface "Due" and "Order")."""
        d, e = WebhookDelivery, aliased(WebhookDelivery)
        blocked = (
            select(1)
            .where(
                e.endpoint_id == endpoint_id,
                e.status == "pending",
                e.resource_key == d.resource_key,
                e.id < d.id,
                e.next_attempt_at > now,
            )
            .exists()
        )
        rows = await session.execute(
            select(
                d.id,
                d.message_id,
                d.resource_key,
                d.attempts,
                d.round_attempts,
                WebhookMessage.payload,
                d.updated_at,
            )
            .join(WebhookMessage, WebhookMessage.id == d.message_id)
            .where(
                d.endpoint_id == endpoint_id,
                d.status == "pending",
                or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now),
                ~blocked,
            )
            .order_by(d.id)
            .limit(limit)
        )
        return [_Claimed(*row) for row in rows]

    def _secrets(self, endpoint: WebhookEndpoint) -> list[str]:
        try:
            # Real time, not the workflow's: a rotation's overlap is 24 h of the receiver's clock.
            return signing_secrets(endpoint, self.secret_box, datetime.now(UTC))
        except SecretUnreadable as exc:
            raise ApplicationError(
                f"endpoint {endpoint.id}: {exc}; nothing was sent",
                type="SecretUnreadable",
                non_retryable=True,
            ) from None

    async def _post_all(
        self,
        endpoint: WebhookEndpoint,
        secrets: Sequence[str],
        claimed: Sequence[_Claimed],
        now: datetime,
        started: float,
    ) -> list[_Outcome]:
        if not claimed:
            return []
        chains: dict[str, list[_Claimed]] = defaultdict(list)
        for item in claimed:
            chains[item.resource_key].append(item)
        gate = asyncio.Semaphore(self.concurrency)
        outcomes: list[_Outcome] = []
        spacing = webhook_retry.spacing(endpoint.rate_limit)
        pacer = asyncio.Lock()
        next_start = started
        refused = await self._refused(endpoint.url, endpoint.environment)

        async def pace() -> None:
            """Hold a request until `spacing` after the previous one really started."""
            nonlocal next_start
            async with pacer:
                wait = next_start - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                next_start = time.monotonic() + spacing

        async def send(chain: list[_Claimed]) -> None:
            for item in chain:
                if time.monotonic() - started > BUDGET:
                    return
                async with gate:
                    if spacing:
                        await pace()
                    outcome = await self._post(endpoint.url, secrets, item, now, started, refused)
                outcomes.append(outcome)
                if not outcome.succeeded:
                    return

        await asyncio.gather(*(send(chain) for chain in chains.values()))
        # The next batch's first request keeps the spacing too.
        rest = next_start - time.monotonic()
        if spacing and rest > 0:
            await asyncio.sleep(rest)
        return outcomes

    async def _refused(self, url: str, environment: str) -> str | None:
        """Why the endpoint's host may not be connected to in `environment` (it resolves to a link-local or
        metadata address in live mode), or None. Resolved once per batch: names can change what they
        resolve to after the endpoint was saved."""
        if environment != "live":
            return None
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443)
        except OSError as exc:
            return f"not sent: {host} does not resolve ({exc.strerror or exc})"
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])  # without an IPv6 zone
            problem = address_problem(address, environment)
            if problem is not None:
                return f"not sent: {host} resolves to {address}, and a live endpoint {problem}"
        return None

    async def _post(
        self,
        url: str,
        secrets: Sequence[str],
        item: _Claimed,
        now: datetime,
        started: float,
        refused: str | None,
    ) -> _Outcome:
        begun = time.monotonic()
        at = now + timedelta(seconds=begun - started)
        if refused is not None:
            return _Outcome(item, at, None, refused, 0)
        body = body_of(item.payload)
        headers = webhook_signing.headers(secrets, item.message_id, int(time.time()), body)
        status: int | None = None
        try:
            async with asyncio.timeout(self.request_timeout):
                async with self.http.stream("POST", url, content=body, headers=headers) as response:
                    status = response.status_code
                    excerpt = await _excerpt(response)
        except TimeoutError:
            excerpt = f"no response within {self.request_timeout:g} s"
        except httpx.HTTPError as exc:
            excerpt = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = round((time.monotonic() - begun) * 1000)
        log.debug("webhook %s to %s: %s in %d ms", item.message_id, url, status, duration_ms)
        return _Outcome(item, at, status, excerpt, duration_ms)

    # ---- record ----------------------------------------------------------------------------------------

    async def _record(
        self, session: AsyncSession, endpoint_id: str, outcomes: Sequence[_Outcome], end: datetime
    ) -> None:
        if not outcomes:
            return
        rows, moves = [], []
        for o in outcomes:
            attempt, round_attempt = o.claimed.attempts + 1, o.claimed.round_attempts + 1
            if o.succeeded:
                status, next_at = "delivered", None
            else:
                delay = webhook_retry.retry_delay(round_attempt)
                status, next_at = ("failed", None) if delay is None else ("pending", o.at + delay)
            manual = o.claimed.attempts > 0 and o.claimed.round_attempts == 0
            rows.append(
                {
                    "id": new_id("webhook_attempt"),
                    "delivery_id": o.claimed.delivery_id,
                    "message_id": o.claimed.message_id,
                    "endpoint_id": endpoint_id,
                    "attempt": attempt,
                    "trigger": "manual" if manual else "scheduled",
                    "succeeded": o.succeeded,
                    "status_code": o.status_code,
                    "response": o.response,
                    "duration_ms": o.duration_ms,
                    "created_at": o.at,
                    "next_attempt_at": next_at,
                }
            )
            moves.append(
                {
                    "b_id": o.claimed.delivery_id,
                    "b_from": o.claimed.attempts,
                    "b_seen": o.claimed.updated_at,
                    "b_attempts": attempt,
                    "b_round": round_attempt,
                    "b_status": status,
                    "b_next": next_at,
                }
            )
        added = await session.scalars(
            insert(WebhookAttempt)
            .values(rows)
            .on_conflict_do_nothing(constraint="uq_webhook_attempts_delivery")
            .returning(WebhookAttempt.delivery_id)
        )
        fresh = set(added)
        moves = [m for m in moves if m["b_id"] in fresh]
        if moves:
            table = cast(Table, WebhookDelivery.__table__)
            unchanged = (table.c.id == bindparam("b_id"), table.c.attempts == bindparam("b_from"))
            await session.execute(
                update(table)
                .where(*unchanged, table.c.updated_at == bindparam("b_seen"))
                .values(
                    status=bindparam("b_status"),
                    attempts=bindparam("b_attempts"),
                    round_attempts=bindparam("b_round"),
                    next_attempt_at=bindparam("b_next"),
                ),
                moves,
            )
            # A resend or recover landed while the attempt was in flight: its fresh schedule stands, and only
            # the attempt count moves on (the next attempt takes the next number).
            await session.execute(
                update(table).where(*unchanged).values(attempts=bindparam("b_attempts")),
                [{k: m[k] for k in ("b_id", "b_from", "b_attempts")} for m in moves],
            )
        await self._endpoint_health(
            session, endpoint_id, [o for o in outcomes if o.claimed.delivery_id in fresh], end
        )

    async def _endpoint_health(
        self, session: AsyncSession, endpoint_id: str, outcomes: Sequence[_Outcome], end: datetime
    ) -> None:
        """`failing_since` after these attempts, and the endpoint disabled once it has failed for 5 days."""
        if not outcomes:
            return
        endpoint = await session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None:
            return
        since = webhook_retry.failing_since(endpoint.failing_since, [(o.at, o.succeeded) for o in outcomes])
        values: dict[str, Any] = {}
        if since != endpoint.failing_since:
            values = {"failing_since": since, "updated_at": endpoint.updated_at}
        if not endpoint.disabled and webhook_retry.should_disable(since, end):
            values |= {"disabled": True, "disabled_reason": "failing", "updated_at": func.now()}
            log.warning("webhook endpoint %s disabled: its attempts failed since %s", endpoint_id, since)
        if values:
            await session.execute(
                update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(values)
            )

    async def _backlog(self, session: AsyncSession, endpoint_id: str, now: datetime) -> BatchDelivered:
        d = WebhookDelivery
        pending = (d.endpoint_id == endpoint_id, d.status == "pending")
        counted = select(d.id).where(*pending).limit(BACKLOG_COUNT_CAP + 1).subquery()
        count = await session.scalar(select(func.count()).select_from(counted)) or 0
        oldest = (
            await session.execute(
                select(d.message_id, WebhookMessage.created_at)
                .join(WebhookMessage, WebhookMessage.id == d.message_id)
                .where(*pending)
                .order_by(d.id)
                .limit(1)
            )
        ).first()
        next_due = await session.scalar(
            select(func.min(d.next_attempt_at)).where(*pending, d.next_attempt_at > now)
        )
        more_due = bool(count) and bool(await self._claim(session, endpoint_id, now, 1))
        return BatchDelivered(
            backlog=min(count, BACKLOG_COUNT_CAP),
            backlog_capped=count > BACKLOG_COUNT_CAP,
            oldest_message_id=oldest[0] if oldest else None,
            oldest_message_at=oldest[1] if oldest else None,
            next_due_at=next_due,
            more_due=more_due,
        )

    @staticmethod
    def _tally(claimed: Sequence[_Claimed], outcomes: Sequence[_Outcome]) -> dict[str, Any]:
        delivered = sum(o.succeeded for o in outcomes)
        retries, failed = [], 0
        for o in outcomes:
            if o.succeeded:
                continue
            delay = webhook_retry.retry_delay(o.claimed.round_attempts + 1)
            if delay is None:
                failed += 1
            else:
                retries.append(delay)
        waiting = len(claimed) - len(outcomes)
        return {
            "claimed": len(claimed),
            "delivered": delivered,
            "retrying": len(retries),
            "failed": failed,
            "summary": webhook_retry.batch_summary(len(claimed), delivered, retries, failed, waiting),
        }


async def _excerpt(response: httpx.Response) -> str:
    """The first EXCERPT_BYTES of the body, without reading the rest of a large one."""
    kept = b""
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= EXCERPT_BYTES:
            break
    return kept[:EXCERPT_BYTES].decode("utf-8", errors="replace")
