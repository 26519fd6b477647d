"""Approving and rejecting source events (D16): the one service behind the events endpoints and the hosted
review page. Events are reviewed by their installation's workflow (an update per installation, validated
there), so a review never races the import that wrote them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.problems import ApiError, conflict
from api.source_temporal import UNREACHABLE, ClientSource, resolve, unavailable
from db.models import Source, SourceEvent
from workflows.client import review_source_events
from workflows.source_messages import ReviewAction, ReviewEvents, ReviewFailure, ReviewResult

# A bulk approval of 1,000 events records 1,000 meter events; past this the answer is a 503 while the
# workflow finishes the review (listing the events shows the outcome).
REVIEW_TIMEOUT_SECONDS = 60.0
_VERB = {"approve": "approved", "reject": "rejected"}
# A pending event whose installation's workflow has ended (the workflow runs while any event is pending, so
# this is a fault to report rather than a state a merchant causes).
_STALLED = "its installation's workflow is not running, so it cannot be reviewed now"


def not_in_source(source_id: str) -> str:
    return f"not found in source {source_id}"


def not_pending(event_id: str, status: str, action: ReviewAction) -> ApiError:
    return conflict(
        f"Source event {event_id} is {status}, not pending: only a pending event can be {_VERB[action]}",
        {"status": status},
    )


async def review(
    session: AsyncSession,
    client: ClientSource,
    source: Source,
    event_ids: Sequence[str],
    action: ReviewAction,
    processed_by: str,
    single: bool,
) -> ReviewResult:
    """Approve or reject `event_ids` of `source`; per-event outcomes in request order (duplicates once).
    Ids not in the source fail with "not found in source …". `single`: a non-pending event is a 409
    (ApiError) instead of a failure. A workflow service out of reach is a 503 (ApiError)."""
    source_id = source.id
    ids = list(dict.fromkeys(event_ids))
    rows = await session.execute(
        select(SourceEvent.id, SourceEvent.installation_id).where(
            SourceEvent.source_id == source_id, SourceEvent.id.in_(ids)
        )
    )
    groups: dict[str, list[str]] = {}
    found = set()
    for event_id, installation_id in rows:
        found.add(event_id)
        groups.setdefault(installation_id, []).append(event_id)
    # End the read before the workflows write the reviews (a commit of nothing keeps `source` loaded).
    await session.commit()
    outcomes: list[ReviewResult | BaseException | None] = []
    if groups:  # ids none of which is in the source need no workflow
        temporal = await resolve(client)
        request = ReviewEvents(action=action, event_ids=[], processed_by=processed_by, single=single)
        outcomes = await asyncio.gather(
            *(
                _review_one(temporal, installation_id, request.model_copy(update={"event_ids": members}))
                for installation_id, members in groups.items()
            ),
            return_exceptions=True,
        )
    merged = ReviewResult(
        failed=[ReviewFailure(id=i, error=not_in_source(source_id)) for i in ids if i not in found]
    )
    gone: list[str] = []
    for members, outcome in zip(groups.values(), outcomes, strict=True):
        if isinstance(outcome, ApiError):
            raise outcome
        if isinstance(outcome, (TimeoutError, RPCTimeoutOrCancelledError)):
            raise ApiError(
                503,
                f"The review is taking longer than {REVIEW_TIMEOUT_SECONDS:.0f} s and goes on in the "
                "background; list the source's events to see the outcome",
            )
        if isinstance(outcome, UNREACHABLE):
            raise unavailable(
                f"{action} the events",
                outcome,
                "events reviewed before it was lost show as not pending when you repeat the request",
            )
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is None:  # the installation's workflow has ended: none of its events is pending any more
            gone += members
            continue
        merged.done += outcome.done
        merged.failed += outcome.failed
    if gone:
        merged.failed += await _not_pending(session, gone, action, single)
    order = {event_id: index for index, event_id in enumerate(ids)}
    merged.done.sort(key=lambda i: order.get(i, len(order)))
    merged.failed.sort(key=lambda f: order.get(f.id, len(order)))
    return merged


async def _review_one(client: Client, installation_id: str, request: ReviewEvents) -> ReviewResult | None:
    """The workflow's result; None when its workflow no longer runs."""
    try:
        return await asyncio.wait_for(
            review_source_events(client, installation_id, request), REVIEW_TIMEOUT_SECONDS
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = str(cause.message if isinstance(cause, ApplicationError) else cause or exc)
        if request.single:
            if isinstance(cause, ApplicationError) and cause.type == "NotPending":
                return None  # answered from the row's status, as for an ended workflow
            raise conflict(
                f"Source event {request.event_ids[0]} could not be {_VERB[request.action]}: {message}"
            ) from None
        return ReviewResult(failed=[ReviewFailure(id=i, error=message) for i in request.event_ids])
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def _not_pending(
    session: AsyncSession, event_ids: list[str], action: ReviewAction, single: bool
) -> list[ReviewFailure]:
    rows = await session.execute(
        select(SourceEvent.id, SourceEvent.status).where(SourceEvent.id.in_(event_ids))
    )
    statuses = {event_id: status for event_id, status in rows}
    await session.commit()
    if single:
        event_id = event_ids[0]
        if statuses.get(event_id) == "pending":
            raise conflict(f"Source event {event_id} could not be {_VERB[action]}: {_STALLED}")
        raise not_pending(event_id, statuses.get(event_id, "unknown"), action)
    return [
        ReviewFailure(
            id=i, error=_STALLED if statuses.get(i) == "pending" else f"is {statuses.get(i)}, not pending"
        )
        for i in event_ids
    ]
