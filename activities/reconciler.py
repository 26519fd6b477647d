"""The reconciler's side effect: find subscriptions whose workflow is missing and start it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from db.models import Invoice, Subscription
from db.session import session_factory
from domain import status
from workflows.client import start_subscription_workflow
from workflows.ids import subscription_workflow_id
from workflows.reconciler import ReconcilerActivityDefs, ReconcileRequest, ReconcileResult

CONCURRENCY = 16


class ReconcilerActivities(ReconcilerActivityDefs):
    def __init__(self, engine: AsyncEngine, client: Client, task_queue: str) -> None:
        self.sessions = session_factory(engine)
        self.client = client
        self.task_queue = task_queue

    async def _owing(self, min_age: timedelta, merchant_id: str | None) -> list[str]:
        """Subscriptions whose workflow must be running: not terminated, or terminated with an invoice the
        workflow has not finalized yet (it finishes only after its last one)."""
        unfinished = exists().where(
            Invoice.subscription_id == Subscription.id, Invoice.status.in_(status.INVOICE_AWAITING_FINALIZE)
        )
        query = select(Subscription.id).where(
            or_(Subscription.status != "terminated", unfinished),
            Subscription.created_at <= func.now() - min_age,
        )
        if merchant_id is not None:
            query = query.where(Subscription.merchant_id == merchant_id)
        async with self.sessions() as session:
            return list(await session.scalars(query.order_by(Subscription.id)))

    async def _ensure_running(self, subscription_id: str) -> bool:
        """Starts the subscription's workflow unless it runs; True when it had to."""
        workflow_id = subscription_workflow_id(subscription_id)
        try:
            described = await self.client.get_workflow_handle(workflow_id).describe()
            if described.status == WorkflowExecutionStatus.RUNNING:
                return False
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        # Idempotent: a start racing with the API's (or another reconciler's) finds the same run.
        await start_subscription_workflow(self.client, self.task_queue, subscription_id)
        activity.logger.warning("started the missing workflow of subscription %s", subscription_id)
        return True

    @activity.defn
    async def reconcile_subscriptions(self, request: ReconcileRequest) -> ReconcileResult:
        owing = await self._owing(timedelta(seconds=request.min_age_seconds), request.merchant_id)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def check(subscription_id: str) -> bool:
            async with gate:
                activity.heartbeat()
                return await self._ensure_running(subscription_id)

        started = await asyncio.gather(*(check(i) for i in owing))
        return ReconcileResult(
            checked=len(owing), started=[i for i, s in zip(owing, started, strict=True) if s]
        )
