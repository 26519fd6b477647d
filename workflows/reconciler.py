"""The reconciler: design.md's invariant that every subscription still owing work, and every source
installation still polling or holding pending events, has a running workflow.

A crash between the API's commit and its workflow start, or an operator terminating a workflow by hand, leaves
a subscription without one. A Temporal Schedule (`accrue-reconciler`, workflows/client.py) runs this
workflow every few minutes; its activity starts whatever is missing, idempotently.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

RECONCILER_SCHEDULE_ID = "accrue-reconciler"


class ReconcileRequest(BaseModel):
    # Younger subscriptions may still be inside the API request that starts their workflow.
    min_age_seconds: int = 60
    merchant_id: str | None = None  # only this merchant's subscriptions (an operator's targeted repair)


class ReconcileResult(BaseModel):
    checked: int  # subscriptions and source installations that must have a running workflow
    started: list[str] = []  # the subscription (sub_) and installation (sin_) ids whose workflow was started


class ReconcilerActivityDefs:
    """Declared here, implemented by activities.reconciler.ReconcilerActivities (the name is the method's)."""

    @activity.defn
    async def reconcile_subscriptions(self, request: ReconcileRequest) -> ReconcileResult:
        raise NotImplementedError


@workflow.defn
class ReconcilerWorkflow:
    @workflow.run
    async def run(self, request: ReconcileRequest) -> ReconcileResult:
        return await workflow.execute_activity_method(
            ReconcilerActivityDefs.reconcile_subscriptions,
            request,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary="start missing subscription workflows",
        )
