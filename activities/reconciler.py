"""The reconciler's side effect: find subscriptions and source installations whose workflow is missing and
start it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from db import payments as payment_rows
from db.models import Entitlement, Invoice, Payment, SourceEvent, SourceInstallation, Subscription
from db.session import session_factory
from domain import status
from workflows import search_attributes as sa
from workflows.client import start_entitlement_workflow, start_payment_workflow, start_subscription_workflow
from workflows.ids import (
    entitlement_workflow_id,
    payment_workflow_id,
    source_installation_workflow_id,
    subscription_workflow_id,
)
from workflows.reconciler import ReconcilerActivityDefs, ReconcileRequest, ReconcileResult
from workflows.source_installation import SourceInstallationWorkflow
from workflows.source_messages import InstallationInput

CONCURRENCY = 16


class ReconcilerActivities(ReconcilerActivityDefs):
    def __init__(
        self,
        engine: AsyncEngine,
        client: Client,
        task_queue: str,
        poll_interval: timedelta = timedelta(minutes=5),  # Settings.source_poll_interval
        polls_per_run: int = 100,  # Settings.source_polls_per_run
    ) -> None:
        self.sessions = session_factory(engine)
        self.client = client
        self.task_queue = task_queue
        self.poll_interval = poll_interval
        self.polls_per_run = polls_per_run

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

    async def _installations_owing(
        self, min_age: timedelta, merchant_id: str | None
    ) -> list[SourceInstallation]:
        """Installations whose workflow must be running: polling (pending or active), or stopped with events
        still pending (their reviews go through it)."""
        pending = exists().where(
            SourceEvent.installation_id == SourceInstallation.id, SourceEvent.status == "pending"
        )
        query = select(SourceInstallation).where(
            or_(SourceInstallation.status.in_(status.INSTALLATION_POLLING), pending),
            SourceInstallation.created_at <= func.now() - min_age,
        )
        if merchant_id is not None:
            query = query.where(SourceInstallation.merchant_id == merchant_id)
        async with self.sessions() as session:
            return list(await session.scalars(query.order_by(SourceInstallation.id)))

    async def _running(self, workflow_id: str) -> bool:
        try:
            described = await self.client.get_workflow_handle(workflow_id).describe()
            return described.status == WorkflowExecutionStatus.RUNNING
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        return False

    async def _ensure_installation_running(self, row: SourceInstallation) -> bool:
        workflow_id = source_installation_workflow_id(row.id)
        if await self._running(workflow_id):
            return False
        # USE_EXISTING: a start racing with the API's connect finds the same run. A pending row's workflow
        # validates the key, as the connect's would have.
        await self.client.start_workflow(
            SourceInstallationWorkflow.run,
            InstallationInput(
                installation_id=row.id, poll_interval=self.poll_interval, polls_per_run=self.polls_per_run
            ),
            id=workflow_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                sa.installation(row.merchant_id, row.source_id, row.subscription_id, row.status)
            ),
        )
        activity.logger.warning("started the missing workflow of source installation %s", row.id)
        return True

    async def _ensure_running(self, subscription_id: str) -> bool:
        """Starts the subscription's workflow unless it runs; True when it had to."""
        if await self._running(subscription_workflow_id(subscription_id)):
            return False
        # Idempotent: a start racing with the API's (or another reconciler's) finds the same run.
        await start_subscription_workflow(self.client, self.task_queue, subscription_id)
        activity.logger.warning("started the missing workflow of subscription %s", subscription_id)
        return True

    async def _entitlements_owing(self, min_age: timedelta, merchant_id: str | None) -> list[Entitlement]:
        """Active entitlements: their workflow holds the expiry timer that releases the remainder."""
        query = select(Entitlement).where(
            Entitlement.status == "active", Entitlement.created_at <= func.now() - min_age
        )
        if merchant_id is not None:
            query = query.where(Entitlement.merchant_id == merchant_id)
        async with self.sessions() as session:
            return list(await session.scalars(query.order_by(Entitlement.id)))

    async def _ensure_entitlement_running(self, row: Entitlement) -> bool:
        if await self._running(entitlement_workflow_id(row.id)):
            return False
        await start_entitlement_workflow(
            self.client,
            self.task_queue,
            row.id,
            merchant_id=row.merchant_id,
            customer_id=row.customer_id,
            subscription_id=row.subscription_id,
            test_clock_id=row.test_clock_id,
        )
        activity.logger.warning("started the missing workflow of entitlement %s", row.id)
        return True

    async def _payments_owing(self, min_age: timedelta, merchant_id: str | None) -> list[Payment]:
        """Open one-off payments (pending, processing): their workflow holds the expiry timer."""
        async with self.sessions() as session:
            now = await session.scalar(select(func.now()))
            assert now is not None
            return await payment_rows.open_payments(session, now - min_age, merchant_id)

    async def _ensure_payment_running(self, row: Payment) -> bool:
        if await self._running(payment_workflow_id(row.id)):
            return False
        await start_payment_workflow(
            self.client, self.task_queue, row.id, merchant_id=row.merchant_id, customer_id=row.customer_id
        )
        activity.logger.warning("started the missing workflow of payment %s", row.id)
        return True

    @activity.defn
    async def reconcile_subscriptions(self, request: ReconcileRequest) -> ReconcileResult:
        owing = await self._owing(timedelta(seconds=request.min_age_seconds), request.merchant_id)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def check(subscription_id: str) -> bool:
            async with gate:
                activity.heartbeat()
                return await self._ensure_running(subscription_id)

        async def check_installation(row: SourceInstallation) -> bool:
            async with gate:
                activity.heartbeat()
                return await self._ensure_installation_running(row)

        started = await asyncio.gather(*(check(i) for i in owing))
        installations = await self._installations_owing(
            timedelta(seconds=request.min_age_seconds), request.merchant_id
        )
        started_installations = await asyncio.gather(*(check_installation(r) for r in installations))

        async def check_entitlement(row: Entitlement) -> bool:
            async with gate:
                activity.heartbeat()
                return await self._ensure_entitlement_running(row)

        active = await self._entitlements_owing(
            timedelta(seconds=request.min_age_seconds), request.merchant_id
        )
        started_entitlements = await asyncio.gather(*(check_entitlement(r) for r in active))

        async def check_payment(row: Payment) -> bool:
            async with gate:
                activity.heartbeat()
                return await self._ensure_payment_running(row)

        open_payments = await self._payments_owing(
            timedelta(seconds=request.min_age_seconds), request.merchant_id
        )
        started_payments = await asyncio.gather(*(check_payment(r) for r in open_payments))
        return ReconcileResult(
            checked=len(owing) + len(installations) + len(active) + len(open_payments),
            started=[i for i, s in zip(owing, started, strict=True) if s]
            + [r.id for r, s in zip(installations, started_installations, strict=True) if s]
            + [r.id for r, s in zip(active, started_entitlements, strict=True) if s]
            + [r.id for r, s in zip(open_payments, started_payments, strict=True) if s],
        )
