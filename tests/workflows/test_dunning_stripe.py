"""autoCharge on the Stripe provider against the Stripe fake (localstripe, tests/stripe_fake.py), through the
real `stripe` library: the customer's saved card (provider_customers, as a Stripe Invoice 0 paid with
savePaymentMethod leaves it) is charged off-session when the period invoice is issued. localstripe's card
4000000000000341 attaches but declines every charge (as Stripe's test card does); 4242… succeeds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.subscription import SubscriptionActivities
from db.merchants import NewMerchant
from db.models import Customer
from db.session import session_factory
from integrations.payments import provider_named
from integrations.payments.base import OffSessionCharge, PaymentOwner
from integrations.payments.sessions import remember_customer
from settings import Settings
from tests.stripe_fake import new_key, stripe_client
from tests.workflows.billing_harness import GRACE, Billing, billing_stack, eventually
from worker import build_worker
from workflows.subscription_messages import ChargeInvoice

START = datetime(2028, 1, 31, tzinfo=UTC)
ISSUED_AT = datetime(2028, 2, 29, tzinfo=UTC) + GRACE
DAY = timedelta(days=1)
GOOD, DECLINING = "4242424242424242", "4000000000000341"


@pytest.fixture
def payments(settings: Settings, stripe_fake: str) -> Settings:
    return settings.model_copy(
        update={"stripe_secret_key": SecretStr(new_key()), "stripe_api_base": stripe_fake}
    )


@pytest.fixture
async def billing(
    workflow_env: WorkflowEnvironment,
    engine: AsyncEngine,
    settings: Settings,
    merchant: NewMerchant,
    payments: Settings,
) -> AsyncIterator[Billing]:
    async for stack in billing_stack(workflow_env, engine, settings, merchant, with_worker=False):
        async with build_worker(
            workflow_env.client, engine, stack.task_queue, GRACE, settings.base_url, payment_settings=payments
        ):
            yield stack


def stripe_of(payments: Settings) -> Any:
    return stripe_client(payments.stripe_api_base, payments.stripe_secret_key.get_secret_value())


async def saved_card(billing: Billing, payments: Settings, customer_id: str, number: str) -> tuple[str, str]:
    """A Stripe customer with the card attached, remembered as the Accrue customer's saved method."""
    client = stripe_of(payments)
    customer = client.v1.customers.create(params={"email": "payer@acme.example"})
    card = {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    method = client.v1.payment_methods.create(params={"type": "card", "card": card})
    client.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    async with session_factory(billing.engine)() as session:
        row = await session.get_one(Customer, customer_id)
        await remember_customer(
            session, row.merchant_id, row.environment, row.id, "stripe", customer.id, method.id
        )
        await session.commit()
    return customer.id, method.id


async def auto_charged(
    billing: Billing, payments: Settings, number: str
) -> tuple[dict[str, Any], str, tuple[str, str]]:
    """An autoCharge subscription on a metered-only plan (Invoice 0 is free: active at once) with usage in
    period 1, so invoice 1 has something to charge."""
    product = await billing.product()
    tokens = await billing.metric(product, "llm.tokens")
    usage = await billing.price(
        billableMetricId=tokens, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Tokens",
        properties={"unitPrice": "0.01"},
    )  # fmt: skip
    plan = await billing.plan(product, [usage])
    customer = await billing.customer()
    card = await saved_card(billing, payments, customer, number)
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, customer, START, testClockId=clock, autoCharge=True)
    assert sub["status"] == "active"
    await billing.event(customer, "llm.tokens", START + DAY, value=1234)  # $12.34
    return sub, clock, card


async def invoice1(billing: Billing, sub: dict[str, Any]) -> Any:
    return next(i for i in await billing.invoices(sub["id"]) if i.sequence_number == 1)


async def test_a_saved_card_pays_the_issued_invoice_off_session(billing: Billing, payments: Settings) -> None:
    sub, clock, _ = await auto_charged(billing, payments, GOOD)
    await billing.advance(clock, ISSUED_AT)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAID" and invoice.paid_at == ISSUED_AT
    (charge,) = invoice.metadata_["charges"]
    assert charge["outcome"] == "paid" and charge["reference"].startswith("pi_")
    intent = stripe_of(payments).v1.payment_intents.retrieve(charge["reference"])
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 1234, "usd")
    assert intent.metadata["accrue_invoice_id"] == invoice.id


async def test_a_declining_card_follows_the_dunning_schedule(billing: Billing, payments: Settings) -> None:
    sub, clock, _ = await auto_charged(billing, payments, DECLINING)
    await billing.advance(clock, ISSUED_AT + 10 * DAY)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAYMENT_FAILED"
    charges = invoice.metadata_["charges"]
    assert [datetime.fromisoformat(c["at"]) for c in charges] == [
        ISSUED_AT + d * DAY for d in (0, 1, 3, 5, 7)
    ]
    assert {c["outcome"] for c in charges} == {"failed"} and all("declined" in c["failure"] for c in charges)
    failed = [p for p in await billing.outbox("invoice.payment_failed.v0") if p["id"] == invoice.id]
    assert len(failed) == 5
    assert await billing.status(sub["id"]) == "active"  # the default policy keeps it


async def test_a_retried_charge_makes_no_second_payment_intent(
    billing: Billing, payments: Settings, engine: AsyncEngine
) -> None:
    """The provider call is idempotent by `<invoice id>:charge:<attempt>`: the activity run again for the
    same attempt, after its commit or after a crash between the Stripe call and the commit, charges once."""
    sub, clock, (customer, method) = await auto_charged(billing, payments, GOOD)
    await billing.advance(clock, ISSUED_AT)
    invoice = await invoice1(billing, sub)
    first = invoice.metadata_["charges"][0]["reference"]
    activities = SubscriptionActivities(
        engine, GRACE, "http://accrue.test", provider_named=lambda n, e: provider_named(payments, n, e)
    )
    again = ChargeInvoice(subscription_id=sub["id"], invoice_id=invoice.id, attempt=1, at=ISSUED_AT)
    outcome = await ActivityEnvironment().run(activities.charge_invoice, again)
    assert outcome.status == "PAID" and outcome.charged
    # As if the activity had charged and died before its commit: the same key answers the same intent.
    provider = provider_named(payments, "stripe", "sandbox")
    replay = await provider.charge_off_session(
        OffSessionCharge(
            our_id=invoice.id,
            attempt=1,
            merchant_id=invoice.merchant_id,
            environment="sandbox",
            amount=invoice.grand_total,
            currency="USD",
            owner=PaymentOwner("subscription", sub["id"]),
            description="replay",
            provider_customer=customer,
            payment_method=method,
            invoice_id=invoice.id,
        )
    )
    assert replay.reference == first
    assert len((await invoice1(billing, sub)).metadata_["charges"]) == 1


@pytest.fixture
async def stripe_checkout(
    workflow_env: WorkflowEnvironment,
    engine: AsyncEngine,
    settings: Settings,
    merchant: NewMerchant,
    payments: Settings,
) -> AsyncIterator[tuple[Billing, Settings]]:
    """New checkouts go through Stripe too (ACCRUE_PAYMENT_PROVIDER=stripe)."""
    key = payments.stripe_secret_key.get_secret_value()
    checkout = payments.model_copy(
        update={"payment_provider": "stripe", "stripe_publishable_key": "pk_" + key[3:]}
    )
    async for stack in billing_stack(workflow_env, engine, checkout, merchant, with_worker=False):
        async with build_worker(
            workflow_env.client, engine, stack.task_queue, GRACE, settings.base_url, payment_settings=checkout
        ):
            yield stack, checkout


async def test_the_card_paying_invoice_0_on_the_stripe_page_is_charged_for_the_period_invoice(
    stripe_checkout: tuple[Billing, Settings],
) -> None:
    """Invoice 0 of an autoCharge subscription paid on the Stripe checkout page with a card: the card is
    saved (savePaymentMethod) and charged off-session for invoice 1 when it is issued."""
    billing, payments = stripe_checkout
    plan, _ = await billing.quickstart_catalog()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, await billing.customer(), START, testClockId=clock, autoCharge=True)
    session_id = sub["payment"]["paymentSessionId"]
    client = stripe_of(payments)
    card = {"number": GOOD, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    tok = str(client.v1.tokens.create(params={"card": card}).id)
    page = await billing.http.get(f"/checkout/{session_id}", headers={"Authorization": ""})
    assert page.status_code == 200, page.text
    paid = await billing.http.post(
        f"/checkout/{session_id}/card", json={"token": tok}, headers={"Authorization": ""}
    )
    assert paid.status_code == 200, paid.text

    async def active() -> None:
        assert await billing.status(sub["id"]) == "active"

    await eventually(active)
    invoice0 = next(i for i in await billing.invoices(sub["id"]) if i.sequence_number == 0)
    saved = invoice0.metadata_.get("savedPaymentMethod")
    await billing.advance(clock, ISSUED_AT)
    invoice = await invoice1(billing, sub)
    assert invoice.status == "PAID", (saved, invoice.metadata_)
    (charge,) = invoice.metadata_["charges"]
    intent = client.v1.payment_intents.retrieve(charge["reference"])
    assert intent.status == "succeeded" and intent.amount == 4900  # the next period's fee, no usage
