"""SourceInstallationWorkflow's side effects: validating the customer's Stripe key, polling paid invoices into
source events, reviews and disconnects. Idempotent by business key: a source event per (source, Stripe
invoice), a meter event per source event (`source_event:<id>`), and status changes checked against
domain/status.py, so a retried activity finds its work done.

The poll's cursor is Stripe's own time (unix seconds). Stripe lists invoices newest `created` first (and
localstripe accepts no filter but paging), so the poll walks pages of 100 until a page reaches invoices
created LOOKBACK before the cursor (an invoice is paid after it is created: net-30 terms and dunning retries
pay one up to about a month later) or the list ends. Paid invoices with paid_at ≥ cursor are imported (≥:
one paid in the same second as the previous poll's newest is not lost; the unique key drops repeats). Each
page's imports are one transaction. The cursor moves to the newest paid_at seen only once the whole walk is
done, so a worker killed mid-poll walks again from the same cursor and imports nothing twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.rendering import installation_data, source_event_data
from db import outbox
from db.models import SourceInstallation
from db.session import session_factory
from db.sources import (
    EventRow,
    Metering,
    Review,
    Reviewable,
    ReviewContext,
    add_outbox_rows,
    count_rule_evaluations,
    driver_of,
    insert_new_events,
    installation_context,
    lock_for_review,
    pending_event_ids,
    pending_for_invoices,
    review_context,
    review_events,
    rule_views,
)
from domain import status
from domain.aggregation import parse_json_path
from domain.ids import ALPHABET, DEFAULT_LENGTH, PREFIXES
from domain.money import format_amount, format_money
from domain.source_rules import InvoiceFacts, evaluate
from integrations.secret_box import SecretBox, SecretUnreadable
from integrations.stripe_revenue import (
    InvoicePage,
    KeyRefused,
    PaidInvoice,
    StripeRejected,
    StripeRevenue,
    StripeUnavailable,
    from_unix,
)
from workflows.source_activities import SourceInstallationActivityDefs
from workflows.source_messages import (
    Disconnected,
    DisconnectInstallation,
    InstallationRef,
    InstallationState,
    KeyValidated,
    LoadInstallation,
    Polled,
    PollInstallation,
    ReviewFailure,
    ReviewRequest,
    ReviewResult,
    ValidateKey,
)

LOOKBACK = timedelta(days=35)
SYSTEM = "system"  # processedBy of an event approved by automatic mode
UNREADABLE_KEY = (
    "the stored Stripe key cannot be decrypted (ACCRUE_SECRET_KEY changed since it was connected): "
    "disconnect and connect the key again"
)


# new_id's format, drawn from one urandom call for a whole batch (a bulk approval mints 2,000 ids): byte % 62,
# a bias of at most 1/256 per character.
_BASE62 = bytes((ALPHABET * 5)[:256], "ascii")


_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _ids(kind: str, count: int) -> list[str]:
    chars = os.urandom(DEFAULT_LENGTH * count).translate(_BASE62).decode()
    prefix = PREFIXES[kind] + "_"
    return [prefix + chars[i : i + DEFAULT_LENGTH] for i in range(0, DEFAULT_LENGTH * count, DEFAULT_LENGTH)]


def _not_found(installation_id: str) -> ApplicationError:
    return ApplicationError(
        f"source installation {installation_id} not found", type="NotFound", non_retryable=True
    )


def _value_data(value_property: str | None, amount: str) -> dict[str, Any]:
    """The meter event's data: the amount (a decimal string) at the metric's valueProperty path."""
    steps = parse_json_path(value_property) if value_property else ("value",)
    data: Any = amount
    for step in reversed(steps):
        data = {str(step): data}
    return dict(data)


def _currency_message(event: Reviewable, ctx: ReviewContext) -> str:
    return (
        f"The Stripe invoice {event.external_event_id} was paid in {event.currency}, but subscription "
        f"{ctx.subscription_id} bills in {ctx.currency}: revenue in another currency cannot be "
        f"billed on this plan. Reject this event, or have the customer connect a Stripe account that charges "
        f"in {ctx.currency}."
    )


@dataclass
class _Imported:
    imported: int = 0
    approved: int = 0
    failed: int = 0
    pending: list[str] = field(default_factory=list)


class SourceInstallationActivities(SourceInstallationActivityDefs):
    def __init__(self, engine: AsyncEngine, stripe: StripeRevenue, box: SecretBox) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.stripe = stripe
        self.box = box

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.load_installation,
            self.validate_installation_key,
            self.poll_installation,
            self.review_source_events,
            self.disconnect_installation,
        ]

    # ---- load, validate, disconnect -------------------------------------------------------------------

    @activity.defn
    async def load_installation(self, request: LoadInstallation) -> InstallationState:
        async with self.sessions() as session:
            ctx = await installation_context(session, request.installation_id)
            if ctx is None:
                raise _not_found(request.installation_id)
            inst = ctx.installation
            return InstallationState(
                ref=InstallationRef(
                    installation_id=inst.id,
                    merchant_id=inst.merchant_id,
                    environment=inst.environment,
                    source_id=inst.source_id,
                    subscription_id=inst.subscription_id,
                    customer_id=inst.customer_id,
                    test_clock_id=ctx.test_clock_id,
                ),
                status=inst.status,
                error_message=inst.error_message,
                pending_event_ids=await pending_event_ids(session, inst.id),
                last_sync_at=inst.last_sync_at,
                clock_now=ctx.clock_time if ctx.test_clock_id else None,
            )

    @activity.defn
    async def validate_installation_key(self, request: ValidateKey) -> KeyValidated:
        iid = request.ref.installation_id
        async with self.sessions() as session:
            ctx = await installation_context(session, iid)
        if ctx is None:
            raise _not_found(iid)
        if ctx.installation.status != "pending":  # a retry after the commit
            return KeyValidated(status=ctx.installation.status, error_message=ctx.installation.error_message)
        error: str | None = None
        try:
            await self.stripe.validate(self.box.open(ctx.installation.key_sealed))
        except KeyRefused as exc:
            error = exc.message
        except SecretUnreadable:
            error = UNREADABLE_KEY
        except StripeRejected as exc:
            error = f"{exc}; connect the key again, and report it if it persists"
        except StripeUnavailable as exc:
            raise ApplicationError(str(exc), type="StripeUnavailable") from None  # retried with backoff
        async with self.sessions() as session, session.begin():
            ctx = await installation_context(session, iid, lock=True)
            assert ctx is not None
            inst = ctx.installation
            if inst.status != "pending":
                return KeyValidated(status=inst.status, error_message=inst.error_message)
            wanted = "active" if error is None else "error"
            _check(status.INSTALLATION, inst.status, wanted)
            inst.status, inst.error_message = wanted, error
            if error is None:
                inst.connected_at = request.at
            event_type = "source.activated.v0" if error is None else "source.activation_failed.v0"
            await self._record_installation(session, inst, event_type)
            return KeyValidated(status=wanted, error_message=error)

    @activity.defn
    async def disconnect_installation(self, request: DisconnectInstallation) -> Disconnected:
        iid = request.ref.installation_id
        async with self.sessions() as session, session.begin():
            ctx = await installation_context(session, iid, lock=True)
            if ctx is None:
                raise _not_found(iid)
            inst = ctx.installation
            if inst.status != "disconnected":
                _check(status.INSTALLATION, inst.status, "disconnected")
                inst.status, inst.disconnected_at = "disconnected", request.at
                await self._record_installation(session, inst, "source.disconnected.v0")
            return Disconnected(
                installation_id=iid, status="disconnected", disconnected_at=inst.disconnected_at
            )

    async def _record_installation(
        self, session: AsyncSession, inst: SourceInstallation, event_type: str
    ) -> None:
        data = await installation_data(session, inst)
        outbox.record(session, inst.merchant_id, inst.environment, event_type, data)

    # ---- poll -----------------------------------------------------------------------------------------

    @activity.defn
    async def poll_installation(self, request: PollInstallation) -> Polled:
        iid = request.ref.installation_id
        async with self.sessions() as session:
            ctx = await installation_context(session, iid)
        if ctx is None:
            raise _not_found(iid)
        inst = ctx.installation
        if inst.status not in status.INSTALLATION_POLLING:
            return Polled(
                status=inst.status, error_message=inst.error_message, skipped=f"installation is {inst.status}"
            )
        if not ctx.source.enabled:
            return await self._finish(iid, request, None, skipped=f"source {ctx.source.id} is disabled")
        try:
            key = self.box.open(inst.key_sealed)
        except SecretUnreadable:
            return await self._refused(iid, UNREADABLE_KEY)
        cursor = inst.cursor
        floor = cursor - int(LOOKBACK.total_seconds())
        newest, pages, starting_after = cursor, 0, None
        total = _Imported()
        while True:
            page = await self._page(key, starting_after)
            if isinstance(page, KeyRefused):
                return await self._refused(iid, page.message)
            pages += 1
            fresh = [i for i in page.paid if i.paid_at >= cursor]
            if fresh:
                done = await self._import(iid, fresh, request)
                if done is None:  # disconnected or disabled meanwhile: stop here
                    break
                total.imported += done.imported
                total.approved += done.approved
                total.failed += done.failed
                total.pending += done.pending
                newest = max(newest, *(i.paid_at for i in fresh))
            activity.heartbeat(pages)
            if not page.has_more or page.oldest_created is None or page.oldest_created < floor:
                break
            starting_after = page.last_id
        return await self._finish(iid, request, newest, total=total, pages=pages)

    async def _page(self, key: str, starting_after: str | None) -> InvoicePage | KeyRefused:
        try:
            return await self.stripe.paid_invoices_page(key, starting_after)
        except KeyRefused as exc:
            return exc
        except StripeUnavailable as exc:
            raise ApplicationError(str(exc), type="StripeUnavailable") from None  # retried with backoff
        except StripeRejected as exc:
            raise ApplicationError(str(exc), type="StripeRejected", non_retryable=True) from None

    async def _import(
        self, iid: str, invoices: Sequence[PaidInvoice], request: PollInstallation
    ) -> _Imported | None:
        """One page's new source events, their rule evaluations and approvals, in one transaction."""
        async with self.sessions() as session, session.begin():
            ctx = await installation_context(session, iid, lock=True)
            assert ctx is not None
            inst = ctx.installation
            if inst.status not in status.INSTALLATION_POLLING or not ctx.source.enabled:
                return None
            clock_bound = ctx.test_clock_id is not None
            rows: list[dict[str, Any]] = [
                {
                    "id": event_id,
                    "merchant_id": inst.merchant_id,
                    "environment": inst.environment,
                    "source_id": inst.source_id,
                    "installation_id": inst.id,
                    "customer_id": inst.customer_id,
                    "subscription_id": inst.subscription_id,
                    "external_event_id": i.id,
                    "status": "pending",
                    "raw_data": i.raw,
                    "amount": i.amount,
                    "currency": i.currency,
                    "customer_name": i.customer_name,
                    "customer_email": i.customer_email,
                    "paid_at": from_unix(i.paid_at),
                    "usage_at": request.at if clock_bound else from_unix(i.paid_at),
                    "usage_event_ids": [],
                }
                for i, event_id in zip(invoices, _ids("source_event", len(invoices)), strict=True)
            ]
            created = await insert_new_events(session, rows)
            # A retried poll finds the pages an earlier attempt committed: their events are not created
            # again, but the workflow must still hear that they are pending.
            earlier = await pending_for_invoices(
                session, inst.id, [i.id for i in invoices], exclude={e.id for e in created}
            )
            if not created:
                return _Imported(pending=earlier)
            approve: list[EventRow] = []
            pending: list[EventRow] = []
            if ctx.source.processing_mode == "automatic":
                for event in created:
                    event.processed_by = SYSTEM
                approve = created
            else:
                rules = await rule_views(session, ctx.source.id)
                evaluated: dict[str, int] = {}
                matched: dict[str, int] = {}
                for event in created:
                    facts = InvoiceFacts(
                        event.amount, event.paid_at, event.customer_name, event.customer_email
                    )
                    outcome = evaluate(rules, facts)
                    for rule_id in outcome.evaluated:
                        evaluated[rule_id] = evaluated.get(rule_id, 0) + 1
                    if outcome.matched is None:
                        pending.append(event)
                    else:
                        matched[outcome.matched] = matched.get(outcome.matched, 0) + 1
                        event.processed_by = event.matched_rule_id = outcome.matched
                        approve.append(event)
                await count_rule_evaluations(session, evaluated, matched, request.at)
            await add_outbox_rows(session, _outbox_rows(pending, "source_event.pending.v0"))
            driver = await driver_of(session)
            done, failed = await _approve(driver, ReviewContext.of(ctx), approve, request.at)
            return _Imported(
                imported=len(created),
                approved=len(done),
                failed=len(failed),
                pending=earlier + [e.id for e in pending],
            )

    async def _finish(
        self, iid: str, request: PollInstallation, newest: int | None, *, total: _Imported | None = None,
        pages: int = 0, skipped: str | None = None,
    ) -> Polled:  # fmt: skip
        """The poll is done: move the cursor (to the newest paid_at seen; to now for a disabled source, so
        what is paid while it is disabled is never imported) and lastSyncAt."""
        async with self.sessions() as session, session.begin():
            ctx = await installation_context(session, iid, lock=True)
            assert ctx is not None
            inst = ctx.installation
            if inst.status in status.INSTALLATION_POLLING:
                # Disabled: past this second, so nothing paid up to now is ever imported (the cursor is ≥).
                inst.cursor = max(inst.cursor, int(time.time()) + 1 if newest is None else newest)
                inst.last_sync_at = request.at
            total = total or _Imported()
            summary = skipped or (
                f"{pages} page(s): {total.imported} imported, {total.approved} approved, "
                f"{total.failed} failed, {len(total.pending)} pending"
            )
            return Polled(
                imported=total.imported,
                approved=total.approved,
                failed=total.failed,
                new_pending_ids=total.pending,
                status=inst.status,
                error_message=inst.error_message,
                skipped=skipped,
                summary=summary,
            )

    async def _refused(self, iid: str, message: str) -> Polled:
        """Stripe refuses the key it accepted before (revoked or rolled): `error`, and the merchant hears
        that revenue stopped flowing (source.disconnected.v0). Polling ends; pending events stay
        reviewable."""
        async with self.sessions() as session, session.begin():
            ctx = await installation_context(session, iid, lock=True)
            assert ctx is not None
            inst = ctx.installation
            if inst.status in status.INSTALLATION_POLLING:
                _check(status.INSTALLATION, inst.status, "error")
                inst.status, inst.error_message = "error", message
                await self._record_installation(session, inst, "source.disconnected.v0")
            return Polled(status=inst.status, error_message=inst.error_message, summary=message)

    # ---- review ---------------------------------------------------------------------------------------

    @activity.defn
    async def review_source_events(self, request: ReviewRequest) -> ReviewResult:
        iid = request.ref.installation_id
        # On asyncpg directly: a review is three statements, and the ORM's per-statement work would cost
        # more than they do.
        async with self.engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            async with driver.transaction():
                return await _review(driver, iid, request)


async def _review(driver: Any, iid: str, request: ReviewRequest) -> ReviewResult:
    ctx = await review_context(driver, iid)
    if ctx is None:
        raise _not_found(iid)
    events = await lock_for_review(driver, iid, request.event_ids)
    found = {e.id: e for e in events}
    failures = [
        ReviewFailure(id=i, error=f"source event {i} not found in installation {iid}")
        for i in dict.fromkeys(request.event_ids)
        if i not in found
    ]
    failures += [
        ReviewFailure(id=e.id, error=f"source event {e.id} is {e.status}, not pending")
        for e in events
        if e.status != "pending"
    ]
    # Locked in id order (no deadlock between two reviews); answered in the order asked.
    asked = {event_id: n for n, event_id in enumerate(request.event_ids)}
    pending = sorted((e for e in events if e.status == "pending"), key=lambda e: asked[e.id])
    for event in pending:
        event.processed_by = request.processed_by
    if request.action == "approve":
        done, failed = await _approve(driver, ctx, pending, request.at)
        failures += [ReviewFailure(id=e.id, error=e.error_message or "failed") for e in failed]
        return ReviewResult(done=[e.id for e in done], failed=failures)
    for event in pending:
        _check(status.SOURCE_EVENT, event.status, "rejected")
        event.status = "rejected"
    await _write(driver, ctx, [], pending, request.at)
    return ReviewResult(done=[e.id for e in pending], failed=failures)


async def _approve(
    driver: Any, ctx: ReviewContext, events: Sequence[Reviewable], at: datetime
) -> tuple[list[Reviewable], list[Reviewable]]:
    """Approve pending events (their processed_by set): each becomes a meter event on the mapped metric,
    timed at its usage_at, for the installation's customer, and `processed`; one in another currency than
    the subscription's is `failed` with a message saying what to do. One statement for any number of
    events (db/sources.review_events)."""
    done: list[Reviewable] = []
    failed: list[Reviewable] = []
    for event in events:
        _check(status.SOURCE_EVENT, event.status, "processed")
        if event.currency != ctx.currency:
            event.status, event.error_message = "failed", _currency_message(event, ctx)
            failed.append(event)
        elif ctx.event_type is None:
            event.status = "failed"
            event.error_message = (
                f"billable metric {ctx.revenue_metric_id} has no eventType, so revenue cannot be "
                "metered: map the source to a metric with an eventType"
            )
            failed.append(event)
        else:
            event.status = "processed"
            done.append(event)
    await _write(driver, ctx, done, failed, at)
    return done, failed


_EVENT_TYPES = {
    "processed": "source_event.processed.v0",
    "failed": "source_event.failed.v0",
    "rejected": "source_event.rejected.v0",
}


async def _write(
    driver: Any,
    ctx: ReviewContext,
    metered: Sequence[Reviewable],
    others: Sequence[Reviewable],
    at: datetime,
) -> None:
    """Write reviewed events (processed_at = `at`): a meter event for each of `metered`, the new status and
    review fields of all, and their outbox rows (`metered` first), in one statement."""
    if not metered and not others:
        return
    meter_ids = _ids("event", len(metered))
    outbox_ids = iter(_ids("outbox_event", len(metered) + len(others)))
    value_property = ctx.value_property
    reviews = [
        Review(
            event=event,
            amount=format_money(event.amount, event.currency),
            outbox_id=next(outbox_ids),
            event_type=_EVENT_TYPES[event.status],
            meter_id=meter_id,
            meter_data=_encode_json(_value_data(value_property, format_amount(event.amount))),
        )
        for event, meter_id in zip(metered, meter_ids, strict=True)
    ]
    reviews += [
        Review(
            event=event,
            amount=format_money(event.amount, event.currency),
            outbox_id=next(outbox_ids),
            event_type=_EVENT_TYPES[event.status],
        )
        for event in others
    ]
    metering = Metering(
        merchant_id=ctx.merchant_id,
        environment=ctx.environment,
        type=ctx.event_type,
        source=f"accrue:source:{ctx.source_id}",
        subject=ctx.customer_id,
    )
    stored = await review_events(driver, reviews, metering, at)
    for event in metered:
        usage = stored[event.id]
        if None in usage:
            # Its meter event's key was committed by another transaction after this statement began:
            # roll back and let the retry find it.
            raise ApplicationError(
                f"the meter event of source event {event.id} was written concurrently; retrying",
                type="ConcurrentMeterEvent",
            )
        event.usage_event_ids = [str(u) for u in usage]


def _outbox_rows(events: Sequence[EventRow], event_type: str) -> list[dict[str, Any]]:
    if event_type not in outbox.EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    return [
        {
            "id": outbox_id,
            "merchant_id": event.merchant_id,
            "environment": event.environment,
            "event_type": event_type,
            "payload": source_event_data(event),
        }
        for event, outbox_id in zip(events, _ids("outbox_event", len(events)), strict=True)
    ]


def _check(machine: status.Machine, current: str, wanted: str) -> None:
    try:
        machine.check(current, wanted)
    except status.IllegalTransition as exc:
        raise ApplicationError(str(exc), type="IllegalTransition", non_retryable=True) from None
