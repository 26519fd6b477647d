"""A whole billing stack inside one test: the real API app (in-process, over ASGI), the production worker on
the time-skipping test server, and the real database. The API's Temporal client is the test server's, so
subscriptions created through the API run their real workflows here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import uuid4

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from db.merchants import NewMerchant
from db.models import Invoice, LineItem, OutboxEvent, TestClock
from db.session import session_factory
from domain.ids import new_id
from domain.money import round_money
from settings import Settings
from worker import build_worker
from workflows.client import advance_test_clock, send_payment_completed, send_payment_declined
from workflows.ids import subscription_workflow_id
from workflows.subscription_messages import PaymentCompleted, PaymentDeclined

GRACE = timedelta(hours=24)
T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], within: float = 15) -> T:
    """Poll until `check` returns without an AssertionError (signals are processed asynchronously)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


def assert_recomputable(invoice: Invoice, lines: list[LineItem], tax_behavior: str = "exclusive") -> None:
    """D13 from what the invoice stores: each line's tax is its rounded amount × rate, every total is a sum
    of rounded lines, so anyone can recompute the invoice from its lines."""
    zero = round_money(Decimal(0), invoice.currency)
    for line in lines:
        assert line.subtotal == round_money(line.subtotal, invoice.currency), line.display_name
        gross = line.total if tax_behavior == "inclusive" else line.subtotal
        exact_tax = (
            gross - gross / (1 + line.tax_rate) if tax_behavior == "inclusive" else gross * line.tax_rate
        )
        assert line.tax_total == round_money(exact_tax, invoice.currency), line.display_name
        assert line.total == line.subtotal + line.tax_total, line.display_name
    assert invoice.subtotal == sum((line.subtotal for line in lines), zero)
    assert invoice.total_tax == sum((line.tax_total for line in lines), zero)
    assert invoice.grand_total == invoice.subtotal + invoice.total_tax
    assert invoice.item_count == len(lines)


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

    async def quickstart_catalog(self, **plan_extra: Any) -> tuple[str, str]:
        """Seed 002: a $49 monthly platform fee in advance (Invoice 0) and tokens at $0.001 in arrears
        (event type `llm.tokens`, SUM of `$.value`). Returns (plan id, tokens metric id)."""
        product = await self.product()
        tokens = await self.metric(product, "llm.tokens")
        fee = await self.fee(product)
        platform = await self.price(
            feeId=fee, paymentTerm="in_advance", billingCadence="P1M", invoiceDisplayName="Platform fee",
            properties={"unitPrice": "49.00"},
        )  # fmt: skip
        usage = await self.price(
            billableMetricId=tokens, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Tokens",
            properties={"unitPrice": "0.001"},
        )  # fmt: skip
        return await self.plan(product, [platform, usage], **plan_extra), tokens

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
        """What PATCH /v0/testClocks/{id} does: the clock's workflow moves the clock and drives every bound
        subscription to the new time; this returns once all have caught up."""
        async with session_factory(self.engine)() as session:
            current = (await session.get_one(TestClock, clock_id)).current_time
        await advance_test_clock(self.env.client, self.task_queue, clock_id, current, to)

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

    async def status(self, subscription_id: str) -> str:
        return str((await self.get(f"/v0/subscriptions/{subscription_id}"))["status"])

    async def activate(self, subscription: dict[str, Any]) -> None:
        """Pay Invoice 0 through the workflow's signal and wait until the subscription is active."""
        await self.pay(subscription)

        async def active() -> None:
            assert await self.status(subscription["id"]) == "active"

        await eventually(active)

    async def outbox(self, event_type: str) -> list[dict[str, Any]]:
        """The payloads of this merchant's outbox events of one type, oldest first."""
        async with session_factory(self.engine)() as session:
            rows = await session.scalars(
                select(OutboxEvent)
                .where(
                    OutboxEvent.merchant_id == self.merchant.merchant_id,
                    OutboxEvent.event_type == event_type,
                )
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
            )
            return [row.payload for row in rows]


async def billing_stack(
    env: WorkflowEnvironment,
    engine: AsyncEngine,
    settings: Settings,
    merchant: NewMerchant,
    *,
    with_worker: bool = True,
) -> AsyncIterator[Billing]:
    """with_worker=False leaves the task queue without a worker, for tests that run (and kill) their own."""
    task_queue = f"billing-{uuid4()}"
    app = create_app(settings.model_copy(update={"task_queue": task_queue}))
    async with app.router.lifespan_context(app):
        app.state.temporal = env.client
        headers = {"Authorization": f"Bearer {merchant.api_key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://accrue.test", headers=headers
        ) as http:
            billing = Billing(http, app, env, engine, merchant, task_queue)
            if not with_worker:
                yield billing
                return
            async with build_worker(env.client, engine, task_queue, GRACE, settings.base_url):
                yield billing
