"""What the sources API tests share: a merchant's product with a USD revenue metric and a USD plan
(World), and installations and source events inserted straight through db.models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from db.merchants import NewMerchant
from db.models import BillableMetric, Plan, Product, SourceEvent, SourceInstallation, Subscription
from domain.ids import new_id
from tests.factories import Factory

PAID = datetime(2026, 3, 1, 12, tzinfo=UTC)


@dataclass
class World:
    """A product with a USD revenue metric and a USD plan, seen through one merchant's API client."""

    http: httpx.AsyncClient
    factory: Factory
    product: Product
    metric: BillableMetric
    plan: Plan

    async def revenue_metric(self, **over: Any) -> BillableMetric:
        values = {
            "name": "revenue_usd",
            "unit": "USD",
            "aggregation": "SUM",
            "value_property": "$.amount",
            "event_type": "stripe.revenue",
            "product_id": self.product.id,
        } | over
        return await self.factory.metric(**values)

    def body(self, **over: Any) -> dict[str, Any]:
        return {
            "name": "Stripe revenue",
            "planId": self.plan.id,
            "type": "stripe_revenue",
            "metadata": {"billableMetricMapping": {"revenue": self.metric.id}},
        } | over

    async def source(self, **over: Any) -> dict[str, Any]:
        response = await self.http.post("/v0/sources", json=self.body(**over))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def rule(self, source_id: str, **over: Any) -> httpx.Response:
        body = {
            "sourceId": source_id,
            "name": "Trusted",
            "conditions": [{"type": "customerEmail", "operator": "domain", "value": "@trusted.com"}],
        } | over
        return await self.http.post("/v0/sourceRules", json=body)


async def make_world(http: httpx.AsyncClient, factory: Factory) -> World:
    product = await factory.product()
    metric = await factory.metric(
        product_id=product.id,
        name="revenue_usd",
        unit="USD",
        aggregation="SUM",
        value_property="$.amount",
        event_type="stripe.revenue",
    )
    plan = await factory.plan(product_id=product.id)
    return World(http, factory, product, metric, plan)


def api_client(api_url: str, merchant: NewMerchant) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    return httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30)


async def installation(
    factory: Factory, source_id: str, subscription: Subscription | None = None, **over: Any
) -> SourceInstallation:
    subscription = subscription or await factory.subscription()
    values = {
        "status": "active",
        "key_sealed": "sealed",
        "key_last4": "4242",
        "key_mode": "test",
        "cursor": int(PAID.timestamp()),
        "connected_at": PAID,
    } | over
    return await factory.add(
        SourceInstallation(
            id=new_id("source_installation"),
            source_id=source_id,
            subscription_id=subscription.id,
            customer_id=subscription.customer_id,
            **factory.tenant,
            **values,
        )
    )


async def event(factory: Factory, inst: SourceInstallation, **over: Any) -> SourceEvent:
    values = {
        "status": "pending",
        "external_event_id": f"in_{new_id('source_event')[4:]}",
        "raw_data": {"object": "invoice", "amount_paid": 12345},
        "amount": Decimal("123.45"),
        "currency": "USD",
        "customer_name": "Buyer",
        "customer_email": "buyer@example.com",
        "paid_at": PAID,
        "usage_at": PAID,
    } | over
    return await factory.add(
        SourceEvent(
            id=new_id("source_event"),
            source_id=inst.source_id,
            installation_id=inst.id,
            customer_id=inst.customer_id,
            subscription_id=inst.subscription_id,
            **factory.tenant,
            **values,
        )
    )
