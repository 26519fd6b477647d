"""A whole billing stack inside one test: the real API app (in-process, over ASGI), the production worker on
the time-skipping test server, and the real database. The API's Temporal client is the test server's, so
subscriptions created through the API run their real workflows here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.clock_advance import advance_bound_subscriptions
from db.merchants import NewMerchant
from db.models import Invoice, LineItem, TestClock
from db.session import session_factory
from domain.ids import new_id
from settings import Settings
from worker import build_worker
from workflows.ids import subscription_workflow_id
from workflows.signals import send_payment_completed, send_payment_declined
from workflows.subscription_messages import PaymentCompleted, PaymentDeclined

GRACE = timedelta(hours=24)


@dataclass
class Billing:
    http: httpx.AsyncClient
    app: FastAPI
    env: WorkflowEnvironment
    engine: AsyncEngine
    merchant: NewMerchant
    task_queue: str

    async def post(self, path: str, body: dict[str, Any], status: int | tuple[int, ...] = (200, 201)) -> Any:
        response = await self.http.post(path, json=body)
        expected = (status,) if isinstance(status, int) else status
        assert response.status_code in expected, response.text
        return response.json()

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def product(self) -> str:
        body = {"merchantId": self.merchant.merchant_id, "name": "LLM Inference", "description": "tokens"}
        return str((await self.post("/v0/products", body))["id"])

    async def metric(
        self, product_id: str, event_type: str, aggregation: str = "SUM", unit: str = "tokens", **extra: Any
    ) -> str:
        body = (
            {
                "merchantId": self.merchant.merchant_id,
                "productId": product_id,
                "name": event_type,
                "description": event_type,
                "unit": unit,
                "aggregation": aggregation,
                "eventType": event_type,
            }
            | ({"valueProperty": "$.value"} if aggregation != "COUNT" else {})
            | extra
        )
        return str((await self.post("/v0/billableMetrics", body))["id"])

    async def fee(self, product_id: str, name: str = "Platform fee") -> str:
        body = {
            "merchantId": self.merchant.merchant_id,
            "productId": product_id,
            "name": name,
            "description": name,
        }
        return str((await self.post("/v0/fees", body))["id"])

    async def price(self, **body: Any) -> str:
        return str((await self.post("/v0/prices", body))["id"])

    async def plan(self, product_id: str, prices: list[str], **extra: Any) -> str:
        body = {
            "merchantId": self.merchant.merchant_id,
            "name": f"Plan {uuid4().hex[:6]}",
            "currency": "USD",
            "productId": product_id,
            "prices": prices,
            "billingVersion": 1,
        } | extra
        return str((await self.post("/v0/plans", body))["id"])

    async def customer(self, email: str | None = None, **extra: Any) -> str:
        body = {
            "merchantId": self.merchant.merchant_id,
            "consumer": {
                "name": "Acme",
                "email": email or f"billing+{uuid4().hex[:8]}@acme.example",
                "address": {"country": "US", "state": "TX", "zipCode": "78701"},
            },
        } | extra
        return str((await self.post("/v0/customers", body))["customerId"])

    async def clock(self, at: datetime) -> str:
        async with session_factory(self.engine)() as session:
            clock = TestClock(
                id=new_id("test_clock"),
                merchant_id=self.merchant.merchant_id,
                environment="sandbox",
                current_time=at,
                name="test",
            )
            session.add(clock)
            await session.commit()
            return clock.id

    async def advance(self, clock_id: str, to: datetime) -> None:
        """What PATCH /v0/testClocks/{id} does: move the clock, then wait for every bound subscription."""
        async with session_factory(self.engine)() as session:
            await session.execute(update(TestClock).where(TestClock.id == clock_id).values(current_time=to))
            await session.commit()
        await advance_bound_subscriptions(self.app, clock_id, self.merchant.merchant_id, "sandbox", to)

    async def subscribe(self, plan_id: str, customer_id: str, started_at: datetime, **extra: Any) -> Any:
        body = {
            "name": "Acme - Pro",
            "planId": plan_id,
            "customerId": customer_id,
            "startedAt": started_at.isoformat(),
        } | extra
        return await self.post("/v0/subscriptions", body)

    async def pay(self, subscription: dict[str, Any], succeed: bool = True) -> None:
        payment = subscription["payment"]
        if succeed:
            message: Any = PaymentCompleted(
                invoice_id=payment["invoiceId"], payment_session_id=payment["paymentSessionId"]
            )
            await send_payment_completed(self.env.client, self.task_queue, subscription["id"], message)
        else:
            message = PaymentDeclined(
                invoice_id=payment["invoiceId"], payment_session_id=payment["paymentSessionId"]
            )
            await send_payment_declined(self.env.client, self.task_queue, subscription["id"], message)

    async def event(self, customer_id: str, event_type: str, at: datetime, **data: Any) -> None:
        body = {
            "type": event_type,
            "source": "tests",
            "subject": customer_id,
            "data": data,
            "timestamp": at.isoformat(),
            "idempotencyKey": uuid4().hex,
        }
        await self.post("/v0/events", body, status=202)

    async def invoices(self, subscription_id: str) -> list[Invoice]:
        async with session_factory(self.engine)() as session:
            return list(
                await session.scalars(
                    select(Invoice)
                    .where(Invoice.subscription_id == subscription_id)
                    .order_by(Invoice.sequence_number)
                )
            )

    async def lines(self, invoice_id: str) -> list[LineItem]:
        async with session_factory(self.engine)() as session:
            return list(
                await session.scalars(
                    select(LineItem).where(LineItem.invoice_id == invoice_id).order_by(LineItem.position)
                )
            )

    def handle(self, subscription_id: str) -> Any:
        return self.env.client.get_workflow_handle(subscription_workflow_id(subscription_id))


async def billing_stack(
    env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    task_queue = f"billing-{uuid4()}"
    app = create_app(settings.model_copy(update={"task_queue": task_queue}))
    async with app.router.lifespan_context(app):
        app.state.temporal = env.client
        async with build_worker(env.client, engine, task_queue, GRACE):
            headers = {"Authorization": f"Bearer {merchant.api_key}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://accrue.test", headers=headers
            ) as http:
                yield Billing(http, app, env, engine, merchant, task_queue)
