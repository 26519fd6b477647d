"""What advancing a test clock sets in motion for the subscriptions bound to it (D19)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.app_state import temporal_client
from api.errors import ApiError
from db.models import Subscription
from workflows.ids import subscription_workflow_id
from workflows.subscription import SubscriptionWorkflow
from workflows.subscription_messages import ClockAdvance

# A subscription stuck on a failing activity must not hang the caller: the clock has moved, the 503 says
# so, and the workflow catches up once the activity succeeds.
CATCH_UP_TIMEOUT = timedelta(seconds=60)


async def advance_bound_subscriptions(
    app: Any, clock_id: str, merchant_id: str, environment: str, new_time: datetime
) -> None:
    """Returns once every subscription bound to the clock has processed what fell due up to new_time.

    Each subscription's workflow walks its own deadlines in time order (period ends, grace windows, payment
    expiry) and answers the update only when it has caught up with the clock. The clock row already holds
    new_time, committed, so a workflow that (re)loads its state reads the new time as well.
    """
    async with app.state.sessions() as session:
        ids = list(
            await session.scalars(
                select(Subscription.id).where(
                    Subscription.test_clock_id == clock_id,
                    Subscription.merchant_id == merchant_id,
                    Subscription.environment == environment,
                )
            )
        )
    if not ids:
        return
    client = await temporal_client(app)

    async def advance(subscription_id: str) -> None:
        handle = client.get_workflow_handle(subscription_workflow_id(subscription_id))
        try:
            await handle.execute_update(SubscriptionWorkflow.advance_clock, ClockAdvance(now=new_time))
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            # The workflow has finished: a terminated subscription with every invoice final.

    try:
        await asyncio.wait_for(asyncio.gather(*(advance(i) for i in ids)), CATCH_UP_TIMEOUT.total_seconds())
    # On timeout the gathered update calls are cancelled, and each raises RPCTimeoutOrCancelledError (not
    # CancelledError), so wait_for passes that on instead of its TimeoutError.
    except (RPCError, WorkflowUpdateFailedError, RPCTimeoutOrCancelledError, TimeoutError) as exc:
        raise ApiError(
            503,
            f"The clock is now {new_time.isoformat()}, but not every subscription bound to it has caught "
            f"up yet ({exc}); they finish on their own — follow them with GET /v0/subscriptions and "
            "GET /v2/invoices",
        ) from None
