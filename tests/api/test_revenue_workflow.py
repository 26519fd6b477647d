"""GET /v0/revenue over what the real subscription workflow bills (time-skipping server, production worker,
real database and ledger): a pay-as-you-go subscription whose Invoice 0 carries a prefund, instant usage
against that wallet, a refund and an accepted dispute; the figures add up to the cent against the rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from paygentic_sdk import Paygentic
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from api.usage_refunds import refund_usage_event
from db import ledger as ledger_db
from db.merchants import NewMerchant
from db.models import LineItem, Subscription, UsageEvent
from db.session import session_factory
from settings import Settings
from tests.api.test_disputes import charged_event
from tests.factories import Factory
from tests.workflows.billing_harness import GRACE, Billing, billing_stack
from tests.workflows.conftest import time_skipping_server

JAN31 = datetime(2026, 1, 31, tzinfo=UTC)


@pytest.fixture(scope="module")
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    async for env in time_skipping_server():
        yield env


@pytest.fixture
async def billing(
    workflow_env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    async for stack in billing_stack(workflow_env, engine, settings, merchant):
        yield stack


@pytest.fixture
async def sdk(billing: Billing) -> AsyncIterator[Paygentic]:
    """SDK 0.1.34 on the in-process API."""
    transport = httpx.ASGITransport(app=billing.app)
    async with httpx.AsyncClient(transport=transport, timeout=30) as http:
        yield Paygentic(
            server_url="http://accrue.test", bearer_auth=billing.merchant.api_key, async_client=http
        )


async def test_revenue_of_a_prefunded_pay_as_you_go_subscription(billing: Billing, sdk: Paygentic) -> None:
    plan, _ = await billing.quickstart_catalog(billingVersion=0, defaultTaxRate=10)  # $49 + 10 % in advance
    customer = await billing.customer()
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(plan, customer, JAN31, testClockId=clock, prefundAmount="50.00")
    await billing.activate(sub)
    invoice0 = (await billing.invoices(sub["id"]))[0]
    assert (invoice0.status, invoice0.grand_total, invoice0.issued_at) == ("PAID", Decimal("103.90"), JAN31)

    # Instant usage against the $50 wallet, one refund and one accepted dispute, at the clock's time.
    f = Factory(billing.engine, billing.merchant)
    async with f.sessions() as session:
        subscription = await session.get_one(Subscription, sub["id"])
    events = [
        await charged_event(f, subscription, amount, at=JAN31 + timedelta(days=day))
        for amount, day in (("0.05", 2), ("0.10", 3), ("0.25", 4))
    ]
    await billing.advance(clock, datetime(2026, 2, 10, tzinfo=UTC))
    async with session_factory(billing.engine)() as session:
        merchant = billing.merchant
        await refund_usage_event(
            session,
            merchant.merchant_id,
            "sandbox",
            events[1].id,
            "duplicate",
            datetime(2026, 2, 10, tzinfo=UTC),
        )
        await session.commit()
    dispute = await billing.post(
        "/v0/disputes", {"usageEventId": events[2].id, "message": "These calls never reached the API"}, 201
    )
    accepted = await billing.http.patch(f"/v0/disputes/{dispute['id']}", json={"status": "accepted"})
    assert accepted.status_code == 200, accepted.text

    # Period 1 closes a day after Feb 28: its invoice bills next month's fee (no in-arrears tokens).
    await billing.advance(clock, datetime(2026, 2, 28, tzinfo=UTC) + GRACE)
    invoices = await billing.invoices(sub["id"])
    assert [(i.sequence_number, i.status, i.grand_total) for i in invoices[:2]] == [
        (0, "PAID", Decimal("103.90")),
        (1, "ISSUED", Decimal("53.90")),
    ]

    start, end = datetime(2026, 1, 26, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)  # Mondays
    got = await sdk.revenue.get_async(
        start_time=start, end_time=end, bucket_width="week", customer_id=customer, group_by="plan"
    )
    # What the rows say, computed here independently of db/revenue.py.
    async with session_factory(billing.engine)() as session:
        topups = sum(
            await session.scalars(
                select(LineItem.total).where(
                    LineItem.invoice_id.in_([i.id for i in invoices if i.status == "PAID"]),
                    LineItem.idempotency_key.like("topup:%"),
                )
            ),
            Decimal(0),
        )
        usage = list(await session.scalars(select(UsageEvent).where(UsageEvent.subscription_id == sub["id"])))
        balances = await ledger_db.balances(session, billing.merchant.merchant_id, "sandbox", customer, "USD")
        assert await ledger_db.audit(session, billing.merchant.merchant_id) == []
    issued = [i for i in invoices if i.issued_at is not None and start <= i.issued_at < end]
    paid = sum((i.grand_total for i in issued if i.status == "PAID"), Decimal(0))
    instant = sum((u.instant_amount for u in usage), Decimal(0))
    refunded = sum((u.instant_amount for u in usage if u.refunded_at is not None), Decimal(0))
    assert (topups, instant, refunded) == (Decimal("50.00"), Decimal("0.40"), Decimal("0.35"))
    assert Decimal(got.net_revenue) == paid - topups + instant - refunded == Decimal("53.95")

    assert (got.invoices.issued.count, got.invoices.issued.amount) == (2, "157.80")
    assert (got.invoices.paid.count, got.invoices.paid.amount) == (1, "103.90")
    assert (got.invoices.outstanding.count, got.invoices.outstanding.amount) == (1, "53.90")
    assert got.invoices.written_off.count == 0
    assert [(b.timestamp.date().isoformat(), b.issued_invoices) for b in got.trend] == [
        ("2026-01-26", "103.90"),
        ("2026-02-02", "0.00"),
        ("2026-02-09", "0.00"),
        ("2026-02-16", "0.00"),
        ("2026-02-23", "53.90"),  # issued Sunday Mar 1, 00:00 (the end of the grace period)
        ("2026-03-02", "0.00"),
    ]
    assert got.group_breakdown is not None
    assert [(g.group_key, g.paid.amount, g.outstanding.amount) for g in got.group_breakdown] == [
        (plan, "103.90", "53.90")
    ]
    window = {"startTime": start.isoformat(), "endTime": end.isoformat(), "bucketWidth": "week"}
    raw = await billing.get("/v0/revenue", **window, customerId=customer)
    assert [b["revenue"] for b in raw["trend"]] == ["53.90", "0.40", "-0.35", "0.00", "0.00", "0.00"]
    assert raw["walletFunding"] == {"count": 1, "amount": "50.00"}
    assert raw["instantUsage"] == {"count": 3, "amount": "0.40", "refundCount": 2, "refundAmount": "0.35"}
    # The wallet: $50 prefund − $0.40 charged + $0.35 given back.
    assert balances[("USD", "customer_main")] == 49_950_000_000
