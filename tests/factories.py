"""Rows inserted straight through db.models, for tests that need subscriptions, invoices and line items
without running the subscription workflow. Every call commits on its own and returns the refreshed row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from db.base import Base
from db.merchants import NewMerchant
from db.models import (
    BillableMetric,
    Customer,
    Fee,
    Invoice,
    LineItem,
    Organization,
    Plan,
    Product,
    Subscription,
    TestClock,
)
from db.session import session_factory
from domain.ids import new_id

R = TypeVar("R", bound=Base)

ANCHOR = datetime(2026, 1, 31, tzinfo=UTC)
GRACE = timedelta(hours=24)


class Factory:
    """Inserts rows owned by one merchant (and its environment)."""

    def __init__(self, engine: AsyncEngine, merchant: NewMerchant) -> None:
        self.sessions = session_factory(engine)
        self.merchant = merchant
        self._product: Product | None = None

    @property
    def tenant(self) -> dict[str, str]:
        return {"merchant_id": self.merchant.merchant_id, "environment": self.merchant.environment}

    async def add(self, row: R) -> R:
        async with self.sessions() as session:
            session.add(row)
            await session.commit()
            await session.refresh(row)
        return row

    async def update(self, row: R, **values: Any) -> R:
        """Set columns of an existing row (e.g. move an invoice to another status)."""
        async with self.sessions() as session:
            merged = await session.merge(row)
            for key, value in values.items():
                setattr(merged, key, value)
            await session.commit()
            await session.refresh(merged)
        return merged

    # ---- catalog -----------------------------------------------------------------------------------------

    async def product(self, **over: Any) -> Product:
        values = {"name": "API", "description": "Metered API", "metadata_": {}} | over
        return await self.add(Product(id=new_id("product"), **self.tenant, **values))

    async def default_product(self) -> Product:
        if self._product is None:
            self._product = await self.product()
        return self._product

    async def metric(self, **over: Any) -> BillableMetric:
        product_id = over.pop("product_id", None) or (await self.default_product()).id
        values = {
            "name": "API calls",
            "description": "Calls to the API",
            "unit": "calls",
            "aggregation": "COUNT",
            "event_type": "api.call",
        } | over
        return await self.add(
            BillableMetric(id=new_id("billable_metric"), product_id=product_id, **self.tenant, **values)
        )

    async def fee(self, **over: Any) -> Fee:
        product_id = over.pop("product_id", None) or (await self.default_product()).id
        values = {"name": "Platform", "description": "Monthly platform fee"} | over
        return await self.add(Fee(id=new_id("fee"), product_id=product_id, **self.tenant, **values))

    async def plan(self, **over: Any) -> Plan:
        product_id = over.pop("product_id", None) or (await self.default_product()).id
        values = {
            "name": "Pro",
            "currency": "USD",
            "billing_cadence": "P1M",
            "default_tax_code": "eservice",
            "default_tax_rate": Decimal(0),
            "tax_behavior": "exclusive",
            "renewal_reminder_enabled": False,
            "renewal_reminder_days": 3,
            "billing_version": 1,
        } | over
        return await self.add(Plan(id=new_id("plan"), product_id=product_id, **self.tenant, **values))

    async def customer(self, **over: Any) -> Customer:
        consumer = await self.add(
            Organization(
                id=new_id("organization"),
                kind="consumer",
                name="Acme",
                email=f"billing+{new_id('customer')}@acme.test",
                owner_merchant_id=self.merchant.merchant_id,
                environment=self.merchant.environment,
            )
        )
        values = {"notification_settings": {}} | over
        return await self.add(
            Customer(id=new_id("customer"), consumer_id=consumer.id, **self.tenant, **values)
        )

    async def test_clock(self, **over: Any) -> TestClock:
        values = {"name": "clock", "current_time": ANCHOR} | over
        return await self.add(TestClock(id=new_id("test_clock"), **self.tenant, **values))

    # ---- billing -----------------------------------------------------------------------------------------

    async def subscription(
        self, plan: Plan | None = None, customer: Customer | None = None, **over: Any
    ) -> Subscription:
        plan = plan or await self.plan()
        customer = customer or await self.customer()
        values = {
            "name": "Pro for Acme",
            "status": "active",
            "started_at": ANCHOR,
            "billing_anchor": ANCHOR,
            "billing_cadence": plan.billing_cadence,
            "currency": plan.currency,
            "activated_at": ANCHOR,
            "current_period": 1,
        } | over
        return await self.add(
            Subscription(
                id=new_id("subscription"), customer_id=customer.id, plan_id=plan.id, **self.tenant, **values
            )
        )

    async def invoice(self, subscription: Subscription, **over: Any) -> Invoice:
        start = over.pop("period_start", subscription.billing_anchor)
        end = over.pop("period_end", start + timedelta(days=28))
        values = {
            "sequence_number": 1,
            "status": "ACTIVE",
            "currency": subscription.currency,
            "billing_anchor": subscription.billing_anchor,
            "billing_cadence": subscription.billing_cadence,
            "period_start": start,
            "period_end": end,
            "grace_period_end": end + GRACE,
            "metadata_": {},
        } | over
        return await self.add(
            Invoice(
                id=new_id("invoice"),
                subscription_id=subscription.id,
                customer_id=subscription.customer_id,
                **self.tenant,
                **values,
            )
        )

    async def line_item(self, invoice: Invoice | None, subscription: Subscription, **over: Any) -> LineItem:
        """A line; `quantity`, `unit_price` and `tax_rate` (a fraction) give subtotal, tax and total unless
        those are passed too."""
        quantity = over.pop("quantity", Decimal(1))
        unit_price = over.pop("unit_price", Decimal("10"))
        tax_rate = over.pop("tax_rate", Decimal(0))
        subtotal = over.pop("subtotal", quantity * unit_price if quantity is not None else Decimal(0))
        tax_total = over.pop("tax_total", subtotal * tax_rate)
        period_start = invoice.period_start if invoice else subscription.billing_anchor
        period_end = invoice.period_end if invoice else subscription.billing_anchor
        values = {
            "position": 0,
            "type": "fee",
            "status": "invoiced" if invoice else "pending",
            "display_name": "Platform fee",
            "currency": subscription.currency,
            "period_start": period_start,
            "period_end": period_end,
            "invoice_at": period_start,
            "total": subtotal + tax_total,
            "idempotency_key": new_id("line_item"),
        } | over
        return await self.add(
            LineItem(
                id=new_id("line_item"),
                subscription_id=subscription.id,
                invoice_id=invoice.id if invoice else None,
                quantity=quantity,
                unit_price=unit_price,
                subtotal=subtotal,
                tax_rate=tax_rate,
                tax_total=tax_total,
                **self.tenant,
                **values,
            )
        )
