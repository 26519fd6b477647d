"""Connecting a customer's Stripe account to a source (D15): the one service behind
`POST /v0/sources/{id}/installations`, the signup page and the portal's Sources section.

It checks the request, stores the installation `pending` with the key sealed, and has the installation's
workflow validate the key, so the answer is already `active` or `error`. The key is never logged, echoed in
an error or returned."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, RPCTimeoutOrCancelledError, WorkflowUpdateFailedError

from api.problems import ApiError, conflict, invalid, not_found
from api.source_temporal import UNREACHABLE, ClientSource, resolve, unavailable
from api.wire import as_utc, iso
from db.models import Source, SourceInstallation, Subscription
from domain.ids import new_id
from domain.stripe_keys import key_mode, last4
from integrations.secret_box import SecretBox
from settings import Settings
from workflows import search_attributes
from workflows.client import connect_installation
from workflows.source_messages import InstallationInput

# A backfill (importFrom) reaches at most this far back.
IMPORT_WINDOW = timedelta(days=90)
# How long a connect waits for the key's validation; past it the installation is answered `pending` and
# its workflow carries on (GET shows the outcome).
CONNECT_TIMEOUT_SECONDS = 30.0
LIVE = ("pending", "active")
_MODES = {"sandbox": "test", "live": "live"}


def installations_path(source_id: str, installation_id: str) -> str:
    return f"/v0/sources/{source_id}/installations/{installation_id}"


def already_connected(existing: SourceInstallation) -> ApiError:
    return conflict(
        f"Subscription {existing.subscription_id} is already connected to source {existing.source_id} "
        f"(installation {existing.id}, {existing.status}); disconnect it first with "
        f"DELETE {installations_path(existing.source_id, existing.id)}",
        {"installationId": existing.id, "status": existing.status},
    )


def check_key(stripe_secret_key: str, environment: str) -> str:
    """The key's mode; a 400 naming `stripeSecretKey` (never echoing it) for a malformed key or one of the
    other mode than the account's environment."""
    try:
        mode = key_mode(stripe_secret_key)
    except ValueError as exc:
        raise invalid("stripeSecretKey", str(exc)) from None
    expected = _MODES.get(environment, "test")
    if mode != expected:
        raise invalid(
            "stripeSecretKey",
            f"is a Stripe {mode} key, but this is a {environment} account: connect a Stripe {expected} key "
            f"({'sk_test_… or rk_test_…' if expected == 'test' else 'sk_live_… or rk_live_…'})",
            "key_mode",
        )
    return mode


def check_import_from(import_from: datetime | None, now: datetime) -> int:
    """The cursor (Stripe's unix seconds): importFrom for a backfill, else now."""
    if import_from is None:
        return int(now.timestamp())
    moment = as_utc(import_from)
    if moment > now:
        raise invalid("importFrom", f"must not be in the future (now is {iso(now)})")
    if moment < now - IMPORT_WINDOW:
        earliest = iso(now - IMPORT_WINDOW)
        raise invalid(
            "importFrom", f"reaches back at most {IMPORT_WINDOW.days} days (on or after {earliest})"
        )
    return int(moment.timestamp())


async def _subscription(
    session: AsyncSession, merchant_id: str, environment: str, source: Source, id_: str
) -> Subscription:
    sub = await session.get(Subscription, id_)
    if sub is None or sub.merchant_id != merchant_id or sub.environment != environment:
        raise not_found("Subscription", id_)
    if sub.plan_id != source.plan_id:
        raise invalid(
            "subscriptionId",
            f"is a subscription to plan {sub.plan_id}, but source {source.id} belongs to plan "
            f"{source.plan_id}: connect a subscription to that plan",
        )
    if sub.status == "terminated":
        raise conflict(f"Subscription {id_} is terminated: a source connects only to a live subscription")
    return sub


async def live_installation(
    session: AsyncSession, source_id: str, subscription_id: str
) -> SourceInstallation | None:
    return await session.scalar(
        select(SourceInstallation).where(
            SourceInstallation.source_id == source_id,
            SourceInstallation.subscription_id == subscription_id,
            SourceInstallation.status.in_(LIVE),
        )
    )


async def connect(
    session: AsyncSession,
    settings: Settings,
    client: ClientSource,
    *,
    merchant_id: str,
    environment: str,
    source: Source,
    subscription_id: str,
    stripe_secret_key: str,
    import_from: datetime | None = None,
) -> SourceInstallation:
    """Connect `subscription_id` to `source` with the customer's Stripe key; returns the installation as its
    workflow left it (`active`, `error` with errorMessage, or `pending` when validation is still running).
    Raises ApiError: 400 (key, importFrom, subscription of another plan), 404 (subscription), 409 (already
    connected, terminated subscription), 503 (workflow service unreachable; the installation is then marked
    `error` so that connecting again starts afresh)."""
    mode = check_key(stripe_secret_key, environment)
    now = datetime.now(UTC)  # Stripe's time: the cursor is in it, also for clock-bound subscriptions
    cursor = check_import_from(import_from, now)
    sub = await _subscription(session, merchant_id, environment, source, subscription_id)
    if (existing := await live_installation(session, source.id, sub.id)) is not None:
        raise already_connected(existing)
    temporal = await resolve(client)  # before anything is stored: unreachable is a 503 that changed nothing
    row = SourceInstallation(
        id=new_id("source_installation"),
        merchant_id=merchant_id,
        environment=environment,
        source_id=source.id,
        subscription_id=sub.id,
        customer_id=sub.customer_id,
        provider_type="api_key",
        status="pending",
        key_sealed=SecretBox(settings.secret_key.get_secret_value()).seal(stripe_secret_key),
        key_last4=last4(stripe_secret_key),
        key_mode=mode,
        cursor=cursor,
    )
    source_id = source.id  # the rows expire if the commit below rolls back
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:  # a concurrent connect of the same subscription won the unique index
        await session.rollback()
        if (existing := await live_installation(session, source_id, subscription_id)) is not None:
            raise already_connected(existing) from None
        raise conflict("The installation changed while this request ran; retry the request") from None
    await _start(session, settings, temporal, row, merchant_id)
    await session.refresh(row)  # the workflow wrote the validation's outcome
    return row


async def _start(
    session: AsyncSession, settings: Settings, client: Client, row: SourceInstallation, merchant_id: str
) -> None:
    request = InstallationInput(
        installation_id=row.id,
        poll_interval=settings.source_poll_interval,
        polls_per_run=settings.source_polls_per_run,
    )
    attributes = search_attributes.installation(merchant_id, row.source_id, row.subscription_id, "pending")
    try:
        await asyncio.wait_for(
            connect_installation(client, settings.task_queue, request, attributes), CONNECT_TIMEOUT_SECONDS
        )
    # wait_for cancels the pending update, which raises RPCTimeoutOrCancelledError instead of TimeoutError:
    # the workflow runs and finishes validating; the row answers `pending` meanwhile.
    except (TimeoutError, RPCTimeoutOrCancelledError):
        return
    except WorkflowUpdateFailedError:  # the workflow decided the outcome and wrote it to the row
        return
    except UNREACHABLE as exc:
        # Whether the start reached Temporal is unknown: the row leaves the live set, so connecting again
        # makes a fresh installation instead of meeting a pending one that nothing drives.
        await session.execute(
            update(SourceInstallation)
            .where(SourceInstallation.id == row.id, SourceInstallation.status == "pending")
            .values(
                status="error",
                error_message="The workflow service could not be reached while connecting; connect again",
            )
        )
        await session.commit()
        raise unavailable(
            "validate the Stripe key", exc, "the subscription was not connected, connect again"
        ) from None
