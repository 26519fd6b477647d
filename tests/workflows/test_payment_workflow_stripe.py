"""One-off payments on the Stripe provider, against the Stripe fake (localstripe, tests/stripe_fake.py)
through the real `stripe` library, time-skipping: POST /v0/payments opens a PaymentIntent whose metadata
names the payment's workflow (idempotent on retry); a card paid at Stripe with no webhook arriving is
reconciled by the workflow's timer (completed, payment.completed.v0 once); a signed webhook delivered twice
completes it once; a declined card leaves the payment pending until it expires."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from db.merchants import NewMerchant
from db.models import Payment
from db.session import session_factory
from integrations.payments import provider_named
from integrations.payments.base import (
    PaymentDeclinedError,
    PaymentOwner,
    PaymentRequest,
    PaymentStatus,
)
from settings import Settings
from tests.stripe_fake import new_key, stripe_client
from tests.workflows.billing_harness import GRACE, Billing, billing_stack, eventually
from tests.workflows.conftest import time_skipping_server
from tests.workflows.test_stripe_payments import WEBHOOK_SECRET, event, signed
from worker import build_worker
from workflows.ids import payment_workflow_id
from workflows.payment_messages import RECONCILE_EVERY_SECONDS

GOOD, DECLINED = "4242424242424242", "4000000000000002"


@pytest.fixture
def payments(settings: Settings, stripe_fake: str) -> Settings:
    key = new_key()
    return settings.model_copy(
        update={
            "payment_provider": "stripe",
            "stripe_secret_key": SecretStr(key),
            "stripe_publishable_key": "pk_" + key[3:],
            "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "stripe_api_base": stripe_fake,
            "stripe_js_url": f"{stripe_fake}/js.stripe.com/v3/",
        }
    )


@pytest.fixture
async def own_env() -> AsyncIterator[WorkflowEnvironment]:
    async for env in time_skipping_server():
        yield env


@pytest.fixture
async def billing(
    own_env: WorkflowEnvironment, engine: AsyncEngine, payments: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    async for stack in billing_stack(own_env, engine, payments, merchant, with_worker=False):
        async with build_worker(
            own_env.client, engine, stack.task_queue, GRACE, payments.base_url, payment_settings=payments
        ):
            yield stack


def token(payments: Settings, number: str) -> str:
    fake = stripe_client(payments.stripe_api_base, payments.stripe_secret_key.get_secret_value())
    card = {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    return str(fake.v1.tokens.create(params={"card": card}).id)  # type: ignore[arg-type]


async def row(billing: Billing, payment_id: str) -> Payment:
    async with session_factory(billing.engine)() as session:
        return await session.get_one(Payment, payment_id)


async def create(billing: Billing, **extra: Any) -> dict[str, Any]:
    body = {"amount": "42.50", "currency": "USD", "expiresIn": "P1D"} | extra
    created: dict[str, Any] = await billing.post("/v0/payments", body, 201)
    return created


async def completed_events(billing: Billing, payment_id: str) -> list[dict[str, Any]]:
    return [p for p in await billing.outbox("payment.completed.v0") if p["id"] == payment_id]


async def test_the_payment_intent_names_its_workflow_and_is_opened_once(
    billing: Billing, payments: Settings
) -> None:
    pay = await create(billing, reference="Order 9")
    stored = await row(billing, pay["id"])
    assert (stored.provider, stored.status) == ("stripe", "pending")
    assert stored.provider_reference is not None and stored.provider_reference.startswith("pi_")
    assert pay["paymentUrl"].endswith(f"/pay/{pay['id']}")
    provider = provider_named(payments, "stripe", "sandbox")
    state = await provider.retrieve(stored.provider_reference)
    assert state.owner == PaymentOwner(kind="payment", id=pay["id"])
    assert (state.amount, state.currency, state.status) == (
        Decimal("42.50"),
        "USD",
        PaymentStatus.REQUIRES_PAYMENT,
    )
    # A retried create of the same payment (a lost answer) finds the same PaymentIntent.
    retried = PaymentRequest(
        our_id=pay["id"], merchant_id=billing.merchant.merchant_id, environment="sandbox",
        amount=Decimal("42.50"), currency="USD", owner=PaymentOwner(kind="payment", id=pay["id"]),
        description="Order 9", page_url=pay["paymentUrl"],
    )  # fmt: skip
    again = await provider.create_payment(retried)
    assert again.reference == stored.provider_reference


async def test_a_lost_webhook_is_reconciled_by_the_timer(billing: Billing, payments: Settings) -> None:
    pay = await create(billing)
    reference = (await row(billing, pay["id"])).provider_reference
    assert reference is not None
    # The payer paid at Stripe; no webhook ever reaches Accrue and the page's own signal was lost.
    provider = provider_named(payments, "stripe", "sandbox")
    paid = await provider.confirm_with_card_token(reference, token(payments, GOOD), "try-1")
    assert paid.status == PaymentStatus.SUCCEEDED
    assert (await row(billing, pay["id"])).status == "pending"
    await billing.env.sleep(timedelta(seconds=RECONCILE_EVERY_SECONDS + 60))

    async def completed() -> Payment:
        found = await row(billing, pay["id"])
        assert found.status == "completed"
        return found

    done = await eventually(completed)
    assert done.completed_at is not None and done.completed_at < done.expires_at
    await billing.env.client.get_workflow_handle(payment_workflow_id(pay["id"])).result()
    assert [p["status"] for p in await completed_events(billing, pay["id"])] == ["completed"]
    assert (await billing.get(f"/v0/payments/{pay['id']}"))["status"] == "completed"


async def test_a_declined_card_leaves_it_pending_until_it_expires(
    billing: Billing, payments: Settings
) -> None:
    pay = await create(billing)
    reference = (await row(billing, pay["id"])).provider_reference
    assert reference is not None
    provider = provider_named(payments, "stripe", "sandbox")
    with pytest.raises(PaymentDeclinedError):
        await provider.confirm_with_card_token(reference, token(payments, DECLINED), "try-1")
    await billing.env.sleep(timedelta(seconds=RECONCILE_EVERY_SECONDS * 2 + 60))
    assert (await row(billing, pay["id"])).status == "pending"
    await billing.env.sleep(timedelta(days=1))
    await billing.env.client.get_workflow_handle(payment_workflow_id(pay["id"])).result()
    done = await row(billing, pay["id"])
    assert (done.status, done.expired_at) == ("expired", done.expires_at)
    assert await completed_events(billing, pay["id"]) == []
    assert len([p for p in await billing.outbox("payment.expired.v0") if p["id"] == pay["id"]]) == 1


async def test_a_webhook_delivered_twice_completes_it_once(billing: Billing, payments: Settings) -> None:
    pay = await create(billing)
    reference = (await row(billing, pay["id"])).provider_reference
    assert reference is not None
    provider = provider_named(payments, "stripe", "sandbox")
    await provider.confirm_with_card_token(reference, token(payments, GOOD), "try-1")
    fake = stripe_client(payments.stripe_api_base, payments.stripe_secret_key.get_secret_value())
    intent = fake.v1.payment_intents.retrieve(reference)
    body, signature = signed(event(intent))
    answers = []
    for _ in range(2):
        response = await billing.http.post(
            "/v0/stripe/webhooks",
            content=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json", "Authorization": ""},
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert answers[0].get("signalled") == f"payment {pay['id']}" and answers[1].get("duplicate") is True

    async def completed() -> None:
        assert (await row(billing, pay["id"])).status == "completed"

    await eventually(completed)
    await billing.env.client.get_workflow_handle(payment_workflow_id(pay["id"])).result()
    assert len(await completed_events(billing, pay["id"])) == 1
    forged = await billing.http.post(
        "/v0/stripe/webhooks", content=body, headers={"Stripe-Signature": "t=1,v1=00", "Authorization": ""}
    )
    assert forged.status_code == 400
