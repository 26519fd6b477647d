"""Test clocks (D19): simulated time for sandbox subscriptions. Advancing one is the clock's workflow's job
(`test-clock-<id>`, workflows/test_clock.py): it records the new time and drives every bound workflow to it.
The PATCH waits for that and answers once all have caught up; a caller that stops waiting loses nothing,
and GET shows `advanceStatus` until the advance is done."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from sqlalchemy import select
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.app_state import temporal_client
from api.deps import Context, Ctx, Paging
from api.problems import ApiError, conflict, forbidden, invalid, not_found
from api.schemas.test_clocks import TestClockAdvance, TestClockCreate, TestClockOut
from api.wire import ListResponse, iso, list_envelope
from db.models import Subscription, TestClock
from domain.durations import Duration, DurationFormatError, add_duration, parse_duration
from domain.ids import new_id
from workflows import client as workflow_client

router = APIRouter(prefix="/v0/testClocks", tags=["test clocks"])
log = logging.getLogger(__name__)

# Paygentic's buffer for clock drift and network delay between the caller and the server.
MAX_PAST = timedelta(hours=1)
MAX_ADVANCE = Duration(years=5)
# How long a PATCH waits for every bound workflow to catch up (10,000 subscriptions crossing a boundary take
# minutes on a small machine); past it the advance carries on and the answer says how to follow it.
ADVANCE_WAIT_SECONDS = 30 * 60.0


def sandbox_only(ctx: Context) -> Ctx:
    if ctx.caller.environment != "sandbox":
        raise forbidden("Test clocks exist only in the sandbox environment; use an sk_test_ API key")
    return ctx


Sandbox = Annotated[Ctx, Depends(sandbox_only)]


async def locked(ctx: Ctx, id_: str) -> TestClock:
    # FOR UPDATE: advances and deletion of one clock happen one after another.
    row = await ctx.session.scalar(ctx.scoped(TestClock).where(TestClock.id == id_).with_for_update())
    if row is None:
        raise not_found("Test clock", id_)
    return row


@router.post("", status_code=201, response_model=TestClockOut)
async def create_test_clock(body: TestClockCreate, ctx: Sandbox) -> TestClockOut:
    if body.merchant_id is not None:
        ctx.caller.require_merchant(body.merchant_id)
    now = datetime.now(UTC)
    current = body.current_time or now
    if current < now - MAX_PAST:
        raise invalid(
            "currentTime", f"may be at most 1 hour in the past (now is {iso(now)}); start the clock later"
        )
    row = TestClock(
        id=new_id("test_clock"),
        merchant_id=ctx.caller.merchant_id,
        environment=ctx.caller.environment,
        name=body.name,
        description=body.description,
        current_time=current,
    )
    ctx.session.add(row)
    await ctx.session.commit()
    await ctx.session.refresh(row)
    return TestClockOut.of(row)


@router.get("", response_model=ListResponse[TestClockOut])
async def list_test_clocks(
    ctx: Sandbox, page: Paging, merchant_id: Annotated[str | None, Query(alias="merchantId")] = None
) -> ListResponse[TestClockOut]:
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    query = ctx.scoped(TestClock).where(TestClock.deleted_at.is_(None))
    rows, total = await ctx.page(query, page, TestClock.created_at, TestClock.id)
    return list_envelope([TestClockOut.of(r) for r in rows], page, total)


@router.get("/{id}", response_model=TestClockOut)
async def get_test_clock(id: str, ctx: Sandbox) -> TestClockOut:
    return TestClockOut.of(await ctx.owned(TestClock, id, "Test clock"))


@router.patch("/{id}", response_model=TestClockOut)
async def advance_test_clock(id: str, body: TestClockAdvance, request: Request, ctx: Sandbox) -> TestClockOut:
    if (body.current_time is None) == (body.advance_by is None):
        raise invalid(
            "body",
            "give exactly one of currentTime (a later time) or advanceBy (an ISO-8601 duration like P1M)",
        )
    row = await locked(ctx, id)
    if row.deleted_at is not None:
        raise conflict(f"test clock {id} was deleted at {iso(row.deleted_at)} and can no longer be advanced")
    new_time, field = target_time(row.current_time, body)
    try:
        limit = add_duration(row.current_time, MAX_ADVANCE)
    except ValueError:
        limit = datetime.max.replace(tzinfo=UTC)
    if new_time > limit:
        raise invalid(
            field, f"one call may advance the clock at most 5 years, to {iso(limit)}; advance in steps"
        )
    current = row.current_time
    await ctx.session.rollback()  # the clock's workflow writes the row
    following = f"poll GET /v0/testClocks/{id} until advanceStatus is ready"
    catching_up = f"The clock is advancing to {iso(new_time)} and its subscriptions are still catching up"
    try:
        await asyncio.wait_for(drive(request.app, id, current, new_time), ADVANCE_WAIT_SECONDS)
    except WorkflowUpdateFailedError as exc:
        if isinstance(exc.cause, ApplicationError) and exc.cause.type == "ClockMoved":
            raise conflict(
                f"test clock {id} was advanced by another request meanwhile; read it and retry"
            ) from None
        if isinstance(exc.cause, ApplicationError) and exc.cause.type == "ClockDeleted":
            raise conflict(f"test clock {id} was deleted meanwhile and can no longer be advanced") from None
        raise ApiError(503, f"The clock's workflow could not advance it ({exc.cause}); retry") from None
    # wait_for cancels the pending update, which raises RPCTimeoutOrCancelledError instead of TimeoutError.
    except (RPCTimeoutOrCancelledError, TimeoutError):
        raise ApiError(503, f"{catching_up}; {following}") from None
    except (RPCError, RuntimeError, OSError) as exc:
        raise ApiError(503, f"Could not reach the clock's workflow ({exc}); retry the same request") from None
    return TestClockOut.of(await ctx.session.get_one(TestClock, id, populate_existing=True))


async def drive(app: FastAPI, clock_id: str, expected_from: datetime, to: datetime) -> None:
    """The clock's workflow moves it and drives its bound workflows; returns once all have caught up."""
    client = await temporal_client(app)
    await workflow_client.advance_test_clock(
        client, app.state.settings.task_queue, clock_id, expected_from, to
    )


def target_time(current: datetime, body: TestClockAdvance) -> tuple[datetime, str]:
    """The requested new time and the field it came from; it must lie after `current`."""
    if body.advance_by is not None:
        try:
            duration = parse_duration(body.advance_by)
        except DurationFormatError as exc:
            raise invalid("advanceBy", str(exc)) from None
        if duration.is_zero:
            raise invalid("advanceBy", "must move the clock forward; P0D does not")
        try:
            return add_duration(current, duration), "advanceBy"
        except ValueError:
            raise invalid("advanceBy", "moves the clock past the year 9999") from None
    assert body.current_time is not None
    if body.current_time <= current:
        raise invalid("currentTime", f"must be later than the clock's current time {iso(current)}")
    return body.current_time, "currentTime"


@router.delete("/{id}", response_model=TestClockOut)
async def delete_test_clock(id: str, request: Request, ctx: Sandbox) -> TestClockOut:
    """Soft delete; deleting a deleted clock returns it unchanged."""
    row = await locked(ctx, id)
    if row.deleted_at is None:
        bound = list(
            await ctx.session.execute(
                select(Subscription.id, Subscription.status)
                .where(Subscription.test_clock_id == id, Subscription.status != "terminated")
                .order_by(Subscription.created_at, Subscription.id)
            )
        )
        if bound:
            raise conflict(
                f"test clock {id} still drives {len(bound)} subscription(s) that are not terminated; "
                "terminate them first",
                details={
                    "blockers": [
                        {
                            "type": "subscriptions",
                            "count": len(bound),
                            "items": [{"id": s, "status": st} for s, st in bound[:10]],
                        }
                    ]
                },
            )
        row.deleted_at = datetime.now(UTC)
        await ctx.session.commit()
        await ctx.session.refresh(row)
    # Also on a repeated delete, so one that could not reach Temporal the first time ends the workflow now.
    await end_clock_workflow(request.app, id)
    return TestClockOut.of(row)


async def end_clock_workflow(app: FastAPI, clock_id: str) -> None:
    """The deleted clock's idle workflow finishes. Best effort: the deletion is what the caller asked for and
    is done; a workflow left idle (Temporal unreachable) costs nothing and a repeated DELETE ends it."""
    try:
        await workflow_client.end_test_clock_workflow(await temporal_client(app), clock_id)
    except (RPCError, RuntimeError, OSError) as exc:
        log.warning("test clock %s is deleted but its workflow was not told to finish: %s", clock_id, exc)
