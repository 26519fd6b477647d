"""The events Accrue emits besides the billing lifecycle's: `subscription.activated.v0` at either kind of
activation, `customer.created.v0` on a real create only, each with the data GET shows, in the outbox of the
transaction that made the change."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from db.models import OutboxEvent
from db.session import session_factory
from tests.workflows.billing_harness import Billing
from tests.workflows.test_subscriptions_api import fee_plan, metered_plan

JAN31 = datetime(2028, 1, 31, tzinfo=UTC)


async def types_about(billing: Billing, resource_id: str) -> list[str]:
    """This merchant's outbox event types about one resource, in outbox (seq) order."""
    async with session_factory(billing.engine)() as session:
        rows = await session.scalars(
            select(OutboxEvent.event_type)
            .where(
                OutboxEvent.merchant_id == billing.merchant.merchant_id,
                OutboxEvent.payload["id"].as_string() == resource_id,
            )
            .order_by(OutboxEvent.seq)
        )
        return list(rows)


async def test_paying_invoice0_activates_with_updated_and_activated(billing: Billing) -> None:
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(
        await fee_plan(billing, "5"), await billing.customer(), JAN31, testClockId=clock
    )
    await billing.activate(sub)
    assert await types_about(billing, sub["id"]) == [
        "subscription.created.v0",
        "subscription.updated.v0",
        "subscription.activated.v0",
    ]
    [activated] = [p for p in await billing.outbox("subscription.activated.v0") if p["id"] == sub["id"]]
    [updated] = [p for p in await billing.outbox("subscription.updated.v0") if p["id"] == sub["id"]]
    assert activated == updated
    # Opening period 1 right after the activation leaves updatedAt alone: GET still shows the event's data.
    assert activated == await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert activated["status"] == "active"


async def test_a_free_subscription_is_created_and_activated_at_once(billing: Billing) -> None:
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(
        await metered_plan(billing), await billing.customer(), JAN31, testClockId=clock
    )
    assert await types_about(billing, sub["id"]) == ["subscription.created.v0", "subscription.activated.v0"]
    [activated] = [p for p in await billing.outbox("subscription.activated.v0") if p["id"] == sub["id"]]
    [created] = [p for p in await billing.outbox("subscription.created.v0") if p["id"] == sub["id"]]
    assert activated == created
    assert activated == sub


async def test_a_customer_create_reports_once_with_what_get_shows(billing: Billing) -> None:
    email = "webhooks-customer@acme.example"
    customer_id = await billing.customer(email=email, externalId="acme-42")
    again = await billing.customer(email=email)  # the idempotent replay (200) reports nothing
    assert again == customer_id
    assert await types_about(billing, customer_id) == ["customer.created.v0"]
    [created] = [p for p in await billing.outbox("customer.created.v0") if p["id"] == customer_id]
    assert created == await billing.get(f"/v0/customers/{customer_id}")
    assert created["externalId"] == "acme-42"


async def test_a_period_invoice_is_issued_with_its_payment_url(billing: Billing) -> None:
    """The event is rendered once its checkout is open: it shows the paymentUrl GET shows."""
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(
        await fee_plan(billing, "5"), await billing.customer(), JAN31, testClockId=clock
    )
    await billing.activate(sub)
    await billing.advance(clock, datetime(2028, 3, 2, tzinfo=UTC))  # past Feb 29 + the 24 h grace window
    [period1] = [i for i in await billing.invoices(sub["id"]) if i.sequence_number == 1]
    [issued] = [p for p in await billing.outbox("invoice.issued.v0") if p["id"] == period1.id]
    shown = await billing.get(f"/v2/invoices/{period1.id}")
    assert issued == shown
    assert issued["status"] == "ISSUED" and issued["paymentUrl"].endswith(
        f"/checkout/{period1.payment_session_id}"
    )
