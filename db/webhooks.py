"""Webhook management: the queries and writes the API (api/routers/webhooks.py) and the hosted portal page
share. Every function is scoped by an `Owner` (merchant + environment): another tenant's endpoint, message
or attempt is `NotFound`, exactly like one that does not exist.

Writes commit; after the commit the caller wakes the endpoints a write gave work or changed
(api.app_state.wake_webhook_endpoints), so the endpoint's workflow reads committed rows. Validating what
a person typed (URL policy, event types) is the caller's job, before it calls here: see
domain/webhook_urls.py and domain/webhook_events.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Select, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import WebhookApp, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage
from domain.ids import new_id

# How long a rotated-out secret keeps signing, so receivers can switch to the new one without a gap.
ROTATION_OVERLAP = timedelta(hours=24)


class Box(Protocol):
    """What seals secrets at rest: integrations.secret_box.SecretBox (db/ does not import integrations)."""

    def seal(self, plaintext: str) -> str: ...

    def open(self, sealed: str) -> str: ...


@dataclass(frozen=True)
class Owner:
    merchant_id: str
    environment: str


class NotFound(LookupError):
    """No such row for this owner (or it was deleted); `kind` is for the message, e.g. "Webhook endpoint"."""

    def __init__(self, kind: str, id_: str) -> None:
        super().__init__(f"{kind} {id_!r} was not found")
        self.kind = kind
        self.id = id_


class NeverEnabled(Exception):
    """The merchant never enabled webhooks in this environment (no WebhookApp row)."""


class AlreadyEnabled(Exception):
    """Enable was called while a configuration exists; `app` is it."""

    def __init__(self, app: WebhookApp) -> None:
        super().__init__(f"webhooks already configured ({app.id})")
        self.app = app


@dataclass(frozen=True)
class EndpointSpec:
    url: str
    description: str = ""
    filter_types: list[str] | None = None  # None: every event type
    disabled: bool = False
    rate_limit: int | None = None  # messages per second; None: unlimited


@dataclass(frozen=True)
class MessageFilter:
    event_type: str | None = None
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until
    endpoint_id: str | None = None  # messages with a delivery to this endpoint (NotFound if not live)
    status: str | None = None  # a delivery in this status (to endpoint_id when given)


def signing_secrets(endpoint: WebhookEndpoint, box: Box, now: datetime) -> list[str]:
    """The secrets a delivery at `now` is signed with: the current one, plus the rotated-out one during
    its overlap."""
    secrets_ = [box.open(endpoint.secret)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret is not None and expires is not None and expires > now:
        secrets_.append(box.open(endpoint.previous_secret))
    return secrets_


# ---- the merchant's webhooks (0.6.3's `Webhooks`) ---------------------------------------------------------


async def get_app(session: AsyncSession, owner: Owner) -> WebhookApp | None:
    return await session.scalar(_app_query(owner))


async def enable_app(session: AsyncSession, owner: Owner) -> WebhookApp:
    """Create the configuration, enabled. Raises AlreadyEnabled when one exists (enabled or not); two
    concurrent calls create one row, and the second raises."""
    inserted = await session.scalar(
        insert(WebhookApp)
        .values(
            id=new_id("webhook_app"),
            merchant_id=owner.merchant_id,
            environment=owner.environment,
            enabled=True,
        )
        .on_conflict_do_nothing()
        .returning(WebhookApp.id)
    )
    await session.commit()
    app = await session.scalar(_app_query(owner).execution_options(populate_existing=True))
    assert app is not None
    if inserted is None:
        raise AlreadyEnabled(app)
    return app


async def set_app_enabled(session: AsyncSession, owner: Owner, enabled: bool) -> WebhookApp:
    """Turn delivery on or off (endpoints and their settings stay). Raises NeverEnabled."""
    app = await session.scalar(_app_query(owner).with_for_update())
    if app is None:
        raise NeverEnabled()
    if app.enabled != enabled:
        app.enabled = enabled
        app.updated_at = func.now()
    await session.commit()
    await session.refresh(app)
    return app


async def live_endpoints(session: AsyncSession, owner: Owner) -> list[WebhookEndpoint]:
    """Every endpoint not deleted: the ones to wake when the merchant's webhooks are turned on or off."""
    return list(await session.scalars(_endpoints(owner).order_by(WebhookEndpoint.id)))


def _app_query(owner: Owner) -> Select[WebhookApp]:
    return select(WebhookApp).where(
        WebhookApp.merchant_id == owner.merchant_id, WebhookApp.environment == owner.environment
    )


# ---- endpoints -------------------------------------------------------------------------------------------


def _endpoints(owner: Owner) -> Select[WebhookEndpoint]:
    return select(WebhookEndpoint).where(
        WebhookEndpoint.merchant_id == owner.merchant_id,
        WebhookEndpoint.environment == owner.environment,
        WebhookEndpoint.deleted_at.is_(None),
    )


async def create_endpoint(
    session: AsyncSession, owner: Owner, box: Box, spec: EndpointSpec, secret: str
) -> WebhookEndpoint:
    """A new endpoint signing with `secret` (integrations.webhook_signing.new_secret()). Raises
    NeverEnabled: endpoints exist only after the merchant enabled webhooks (a paused configuration still
    takes new endpoints)."""
    if await get_app(session, owner) is None:
        raise NeverEnabled()
    endpoint = WebhookEndpoint(
        id=new_id("webhook_endpoint"),
        merchant_id=owner.merchant_id,
        environment=owner.environment,
        url=spec.url,
        description=spec.description,
        filter_types=spec.filter_types,
        disabled=spec.disabled,
        disabled_reason="manual" if spec.disabled else None,
        rate_limit=spec.rate_limit,
        secret=box.seal(secret),
    )
    session.add(endpoint)
    await session.commit()
    await session.refresh(endpoint)
    return endpoint


async def list_endpoints(
    session: AsyncSession, owner: Owner, limit: int, offset: int
) -> tuple[list[WebhookEndpoint], int]:
    """Oldest first, as every list of this API."""
    query = _endpoints(owner)
    return await _page(session, query, limit, offset, WebhookEndpoint.created_at, WebhookEndpoint.id)


async def get_endpoint(
    session: AsyncSession, owner: Owner, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    query = _endpoints(owner).where(WebhookEndpoint.id == endpoint_id)
    row = await session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound("Webhook endpoint", endpoint_id)
    return row


UPDATABLE = frozenset({"url", "description", "filter_types", "disabled", "rate_limit"})


async def update_endpoint(
    session: AsyncSession, owner: Owner, endpoint_id: str, changes: dict[str, Any]
) -> WebhookEndpoint:
    """Apply `changes` (keys from UPDATABLE). Disabling by hand records reason `manual`; enabling clears
    the reason and the failure streak, so an endpoint disabled for failing gets five fresh days."""
    unknown = changes.keys() - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    endpoint = await get_endpoint(session, owner, endpoint_id, lock=True)
    for name, value in changes.items():
        if name == "disabled":
            if value and not endpoint.disabled:
                endpoint.disabled_reason = "manual"
            elif not value:
                endpoint.disabled_reason = None
                endpoint.failing_since = None
        setattr(endpoint, name, value)
    if changes:
        endpoint.updated_at = func.now()
    await session.commit()
    await session.refresh(endpoint)
    return endpoint


async def delete_endpoint(session: AsyncSession, owner: Owner, endpoint_id: str) -> WebhookEndpoint:
    """Soft delete: the row and its message log stay; the endpoint is NotFound from now on."""
    endpoint = await get_endpoint(session, owner, endpoint_id, lock=True)
    endpoint.deleted_at = func.now()
    endpoint.updated_at = func.now()
    await session.commit()
    await session.refresh(endpoint)
    return endpoint


async def read_secret(session: AsyncSession, owner: Owner, box: Box, endpoint_id: str) -> str:
    """The current signing secret, `whsec_…`."""
    return box.open((await get_endpoint(session, owner, endpoint_id)).secret)


async def rotate_secret(
    session: AsyncSession, owner: Owner, box: Box, endpoint_id: str, secret: str, now: datetime
) -> WebhookEndpoint:
    """`secret` (a new_secret()) becomes the current secret; the old one keeps signing until now + 24 h.
    Rotating again within the overlap drops the oldest secret (only two ever sign)."""
    endpoint = await get_endpoint(session, owner, endpoint_id, lock=True)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
    endpoint.secret = box.seal(secret)
    endpoint.updated_at = func.now()
    await session.commit()
    await session.refresh(endpoint)
    return endpoint


# ---- messages and attempts -------------------------------------------------------------------------------


def _messages(owner: Owner) -> Select[WebhookMessage]:
    return select(WebhookMessage).where(
        WebhookMessage.merchant_id == owner.merchant_id, WebhookMessage.environment == owner.environment
    )


async def list_messages(
    session: AsyncSession, owner: Owner, filters: MessageFilter, limit: int, offset: int
) -> tuple[list[WebhookMessage], int]:
    """Newest first (a log is read from its end), filtered by every field of `filters` that is set.
    Raises NotFound for an endpoint_id that is not the owner's."""
    query = _messages(owner)
    if filters.event_type is not None:
        query = query.where(WebhookMessage.event_type == filters.event_type)
    if filters.since is not None:
        query = query.where(WebhookMessage.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(WebhookMessage.created_at < filters.until)
    if filters.endpoint_id is not None or filters.status is not None:
        delivery = select(WebhookDelivery.id).where(WebhookDelivery.message_id == WebhookMessage.id)
        if filters.endpoint_id is not None:
            await get_endpoint(session, owner, filters.endpoint_id)
            delivery = delivery.where(WebhookDelivery.endpoint_id == filters.endpoint_id)
        if filters.status is not None:
            delivery = delivery.where(WebhookDelivery.status == filters.status)
        query = query.where(exists(delivery))
    return await _page(
        session, query, limit, offset, WebhookMessage.created_at.desc(), WebhookMessage.id.desc()
    )


async def get_message(session: AsyncSession, owner: Owner, message_id: str) -> WebhookMessage:
    row = await session.scalar(_messages(owner).where(WebhookMessage.id == message_id))
    if row is None:
        raise NotFound("Webhook message", message_id)
    return row


async def message_deliveries(
    session: AsyncSession, message_ids: list[str]
) -> dict[str, list[WebhookDelivery]]:
    """Each message's deliveries (one per endpoint it went to, deleted endpoints included), by delivery
    order. The ids come from list_messages/get_message, so they are the owner's already."""
    out: dict[str, list[WebhookDelivery]] = {m: [] for m in message_ids}
    rows = await session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.message_id.in_(message_ids))
        .order_by(WebhookDelivery.id)
    )
    for row in rows:
        out[row.message_id].append(row)
    return out


async def list_message_attempts(
    session: AsyncSession, owner: Owner, message_id: str, limit: int, offset: int
) -> tuple[list[WebhookAttempt], int]:
    """A message's attempts to every endpoint, newest first. Raises NotFound."""
    await get_message(session, owner, message_id)
    query = select(WebhookAttempt).where(WebhookAttempt.message_id == message_id)
    return await _page(
        session, query, limit, offset, WebhookAttempt.created_at.desc(), WebhookAttempt.attempt.desc()
    )


async def list_endpoint_attempts(
    session: AsyncSession, owner: Owner, endpoint_id: str, limit: int, offset: int
) -> tuple[list[WebhookAttempt], int]:
    """An endpoint's attempts, newest first. Raises NotFound (also for a deleted endpoint)."""
    await get_endpoint(session, owner, endpoint_id)
    query = select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
    return await _page(
        session, query, limit, offset, WebhookAttempt.created_at.desc(), WebhookAttempt.id.desc()
    )


# ---- resend and recover ------------------------------------------------------------------------------------

# Pending and due now, with the whole D18 schedule ahead; `attempts` keeps counting, so the next attempt is
# recorded with trigger "manual" (attempts > 0 and round_attempts == 0).
_FRESH_SCHEDULE: dict[str, Any] = {
    "status": "pending",
    "round_attempts": 0,
    "next_attempt_at": None,
    "updated_at": func.now(),
}


async def resend(session: AsyncSession, owner: Owner, message_id: str, endpoint_id: str) -> WebhookDelivery:
    """Send one message to one endpoint again, on a fresh schedule: its delivery becomes pending and due
    now (created when the endpoint never had one, e.g. its filter left the message out or it was added
    later). Raises NotFound for either id."""
    message = await get_message(session, owner, message_id)
    await get_endpoint(session, owner, endpoint_id)
    delivery_id = await session.scalar(
        insert(WebhookDelivery)
        .values(
            message_id=message.id,
            endpoint_id=endpoint_id,
            resource_key=message.resource_key,
            status="pending",
        )
        .on_conflict_do_update(
            constraint="uq_webhook_deliveries_message",
            set_={
                "status": "pending",
                "round_attempts": 0,
                "next_attempt_at": None,
                "updated_at": func.now(),
            },
        )
        .returning(WebhookDelivery.id)
    )
    await session.commit()
    delivery = await session.get_one(WebhookDelivery, delivery_id, populate_existing=True)
    return delivery


async def recover(
    session: AsyncSession, owner: Owner, endpoint_id: str, since: datetime, until: datetime
) -> int:
    """Every failed or skipped delivery of the endpoint whose message was created in [since, until)
    becomes pending on a fresh schedule; returns how many. Raises NotFound."""
    await get_endpoint(session, owner, endpoint_id)
    in_window = select(WebhookMessage.id).where(
        WebhookMessage.created_at >= since, WebhookMessage.created_at < until
    )
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            or_(WebhookDelivery.status == "failed", WebhookDelivery.status == "skipped"),
            WebhookDelivery.message_id.in_(in_window),
        )
        .values(_FRESH_SCHEDULE)
    )
    await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


# ---- helpers -----------------------------------------------------------------------------------------------


async def _page(
    session: AsyncSession, query: Select[Any], limit: int, offset: int, *order: Any
) -> tuple[list[Any], int]:
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.scalars(query.order_by(*order).limit(limit).offset(offset))
    return list(rows), int(total or 0)
