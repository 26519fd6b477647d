"""The Stripe payment provider end to end on the time-skipping server, against the Stripe fake (localstripe,
tests/stripe_fake.py) through the real `stripe` library: Invoice 0's PaymentIntent opened by the workflow's
activities (once, whatever retries), paid or declined on the hosted page with a card token, confirmed by a
signed webhook (acted on once however often it is delivered) or, when the webhook never comes, by the
workflow's own timer asking Stripe.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import httpx
import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from db.merchants import NewMerchant
from db.models import Invoice, OutboxEvent, PaymentSession, StripeEvent
from db.session import session_factory
from integrations.payments import PaymentOwner, PaymentRequest, provider_for
from integrations.payments.sessions import ProviderChoice, open_payment
from settings import Settings
from tests.stripe_fake import new_key, stripe_client
from tests.workflows.billing_harness import GRACE, Billing, billing_stack, eventually
from tests.workflows.conftest import time_skipping_server
from tests.workflows.test_replay import replay, run_chain
from worker import build_worker
from workflows.ids import subscription_workflow_id

SUCCESS = "https://merchant.example/welcome"
FAILURE = "https://merchant.example/payment-failed"
GOOD, DECLINED, AUTH_REQUIRED = "4242424242424242", "4000000000000002", "4000002500003155"
WEBHOOK_SECRET = "whsec_test_accrue"


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
            "payment_reconcile_interval": timedelta(minutes=10),
        }
    )


@pytest.fixture
async def own_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this test's own: its time starts at the wall clock's, which checkouts
    expire by, and env.sleep skips no other test's time."""
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


def fake(payments: Settings) -> Any:
    return stripe_client(payments.stripe_api_base, payments.stripe_secret_key.get_secret_value())


async def pending(billing: Billing, **extra: Any) -> dict[str, Any]:
    """A real-time subscription waiting for its $49 Invoice 0 (its checkout open for an hour)."""
    plan, _ = await billing.quickstart_catalog()
    started = datetime.now(UTC).replace(microsecond=0)
    sub = await billing.subscribe(plan, await billing.customer(), started, sessionExpiryMinutes=60, **extra)
    assert sub["status"] == "pending_payment"
    return sub


async def session_row(billing: Billing, session_id: str) -> PaymentSession:
    async with session_factory(billing.engine)() as session:
        return await session.get_one(PaymentSession, session_id, populate_existing=True)


def token(payments: Settings, number: str) -> str:
    card = {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    return str(fake(payments).v1.tokens.create(params={"card": card}).id)


async def pay_on_page(billing: Billing, session_id: str, tok: str) -> dict[str, Any]:
    response = await billing.http.post(
        f"/checkout/{session_id}/card", json={"token": tok}, headers={"Authorization": ""}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def state(billing: Billing, sub: dict[str, Any]) -> tuple[str, list[str]]:
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    return got["status"], [i.status for i in await billing.invoices(sub["id"])]


async def activated(billing: Billing, sub: dict[str, Any]) -> None:
    async def check() -> None:
        assert await state(billing, sub) == ("active", ["PAID", "ACTIVE"])

    await eventually(check)


def signed(payload: dict[str, Any], secret: str = WEBHOOK_SECRET, at: int | None = None) -> tuple[bytes, str]:
    """A webhook body and its Stripe-Signature header, signed as Stripe (and localstripe) sign them."""
    body = json.dumps(payload).encode()
    stamp = at or int(time.time())
    digest = hmac.new(secret.encode(), b"%d.%s" % (stamp, body), hashlib.sha256).hexdigest()
    return body, f"t={stamp},v1={digest}"


def event(intent: Any, kind: str = "payment_intent.succeeded") -> dict[str, Any]:
    return {
        "id": f"evt_{uuid4().hex[:20]}",
        "object": "event",
        "type": kind,
        "livemode": False,
        "created": int(time.time()),
        "data": {"object": intent.to_dict() if hasattr(intent, "to_dict") else intent},
    }


async def deliver(billing: Billing, payload: dict[str, Any], **sign: Any) -> Any:
    body, signature = signed(payload, **sign)
    return await billing.http.post(
        "/v0/stripe/webhooks",
        content=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json", "Authorization": ""},
    )


def confirm_at_stripe(payments: Settings, reference: str, number: str = GOOD) -> Any:
    """The payer's card confirmed directly at Stripe (as if the page's call never reached Accrue)."""
    client = fake(payments)
    customer = client.v1.customers.create(params={"source": token(payments, number)})
    card = customer.default_source
    client.v1.payment_intents.update(reference, params={"customer": customer.id, "payment_method": card})
    return client.v1.payment_intents.confirm(reference)


async def test_invoice0_opens_one_payment_intent_for_its_grand_total(
    billing: Billing, payments: Settings
) -> None:
    sub = await pending(billing, redirectUrls={"onSuccess": SUCCESS, "onFailure": FAILURE})
    session_id = sub["payment"]["paymentSessionId"]
    row = await session_row(billing, session_id)
    assert row.provider == "stripe" and row.provider_reference and row.provider_reference.startswith("pi_")
    intents = fake(payments).v1.payment_intents.list().data
    assert [i.id for i in intents] == [row.provider_reference]
    intent = intents[0]
    assert (intent.amount, intent.currency, intent.status) == (4900, "usd", "requires_payment_method")
    assert intent.metadata["accrue_owner_kind"] == "subscription"
    assert intent.metadata["accrue_owner_id"] == sub["id"]
    assert intent.metadata["accrue_id"] == session_id
    assert intent.metadata["accrue_invoice_id"] == sub["payment"]["invoiceId"]
    # The payer's URL is still Accrue's hosted checkout.
    assert sub["payment"]["checkoutUrl"].endswith(f"/checkout/{session_id}")

    # Opening it again (a retried activity, the page) finds the same PaymentIntent; so does the provider
    # itself when asked twice for the same session (idempotency key `<ps id>:create`).
    choice = ProviderChoice(payments)
    again = await open_payment(session_factory(billing.engine), choice, session_id, payments.base_url)
    assert again.reference == row.provider_reference
    provider = provider_for(payments, billing.merchant.merchant_id, "sandbox")
    request = PaymentRequest(
        our_id=f"ps_retry{uuid4().hex[:8]}",
        merchant_id=billing.merchant.merchant_id,
        environment="sandbox",
        amount=Decimal("12.34"),
        currency="USD",
        owner=PaymentOwner("subscription", sub["id"]),
        description="retry",
        page_url="http://accrue.test/checkout/x",
    )
    first, second = await provider.create_payment(request), await provider.create_payment(request)
    assert first.reference == second.reference
    assert len(fake(payments).v1.payment_intents.list().data) == 2


async def test_checkout_page_loads_stripe_js_and_a_card_pays_invoice0(
    billing: Billing, payments: Settings
) -> None:
    sub = await pending(billing, redirectUrls={"onSuccess": SUCCESS, "onFailure": FAILURE})
    session_id = sub["payment"]["paymentSessionId"]
    shown = await billing.http.get(f"/checkout/{session_id}", headers={"Authorization": ""})
    assert shown.status_code == 200, shown.text
    html = shown.text
    for text in (
        payments.stripe_js_url,
        payments.stripe_publishable_key,
        "49.00 USD",
        "TEST MODE",
        'id="pay"',
    ):
        assert text in html, text
    assert "Pay (test)" not in html
    assert payments.stripe_secret_key.get_secret_value() not in html
    csp = shown.headers["content-security-policy"]
    assert payments.stripe_api_base in csp and "script-src 'nonce-" in csp

    # The sandbox's buttons and API do not apply to a Stripe checkout.
    buttons = await billing.http.post(f"/checkout/{session_id}/complete", headers={"Authorization": ""})
    assert buttons.status_code == 409
    api = await billing.http.post(f"/v0/paymentSessions/{session_id}/complete")
    assert api.status_code == 409 and api.json()["details"] == {"provider": "stripe"}

    answer = await pay_on_page(billing, session_id, token(payments, GOOD))
    assert answer == {"outcome": "succeeded", "redirect": SUCCESS}
    await activated(billing, sub)
    row = await session_row(billing, session_id)
    assert row.status == "completed"
    intent = fake(payments).v1.payment_intents.retrieve(row.provider_reference)
    assert intent.status == "succeeded" and intent.amount == 4900

    paid = await billing.http.get(f"/checkout/{session_id}", headers={"Authorization": ""})
    assert paid.status_code == 200 and "Payment received" in paid.text and 'id="pay"' not in paid.text
    again = await pay_on_page(billing, session_id, token(payments, GOOD))
    assert again["outcome"] == "ended"
    assert fake(payments).v1.payment_intents.retrieve(row.provider_reference).amount == 4900


async def test_a_declined_card_leaves_invoice0_open_and_another_card_pays(
    billing: Billing, payments: Settings
) -> None:
    sub = await pending(billing, redirectUrls={"onSuccess": SUCCESS})
    session_id = sub["payment"]["paymentSessionId"]
    declined = await pay_on_page(billing, session_id, token(payments, DECLINED))
    assert declined["outcome"] == "declined" and "declined" in declined["message"]
    assert "redirect" not in declined  # no failure URL: the page says so and takes another card
    assert await state(billing, sub) == ("pending_payment", ["ISSUED"])

    async def recorded_declined() -> None:
        assert (await session_row(billing, session_id)).status == "declined"

    await eventually(recorded_declined)
    retry = await billing.http.get(f"/checkout/{session_id}", headers={"Authorization": ""})
    assert retry.status_code == 200 and "was declined" in retry.text

    bad = await billing.http.post(
        f"/checkout/{session_id}/card", json={"token": "4242424242424242"}, headers={"Authorization": ""}
    )
    assert bad.status_code == 400 and bad.json()["error"] == "validation_error"

    paid = await pay_on_page(billing, session_id, token(payments, GOOD))
    assert paid == {"outcome": "succeeded", "redirect": SUCCESS}
    await activated(billing, sub)


async def test_3d_secure_card_asks_the_page_to_authenticate(billing: Billing, payments: Settings) -> None:
    sub = await pending(billing)
    session_id = sub["payment"]["paymentSessionId"]
    answer = await pay_on_page(billing, session_id, token(payments, AUTH_REQUIRED))
    assert answer["outcome"] == "authenticate" and answer["clientSecret"].startswith("pi_")
    # What the page's Stripe.js (confirmCardPayment) does at localstripe when the payer completes 3-D Secure.
    pi = answer["clientSecret"].split("_secret_")[0]
    async with httpx.AsyncClient() as http:
        done = await http.post(
            f"{payments.stripe_api_base}/v1/payment_intents/{pi}/_authenticate?success=true",
            json={"key": payments.stripe_publishable_key, "client_secret": answer["clientSecret"]},
        )
    assert done.status_code == 200, done.text
    checked = await billing.http.post(f"/checkout/{session_id}/card/check", headers={"Authorization": ""})
    assert checked.json()["outcome"] == "succeeded"
    await activated(billing, sub)


async def test_a_webhook_delivered_twice_changes_state_once(billing: Billing, payments: Settings) -> None:
    sub = await pending(billing)
    row = await session_row(billing, sub["payment"]["paymentSessionId"])
    assert row.provider_reference is not None
    intent = confirm_at_stripe(payments, row.provider_reference)
    assert intent.status == "succeeded"

    # Unsigned, wrongly signed and stale deliveries are refused before anything happens.
    payload = event(intent)
    body, _ = signed(payload)
    unsigned = await billing.http.post("/v0/stripe/webhooks", content=body, headers={"Authorization": ""})
    assert unsigned.status_code == 400 and unsigned.json()["code"] == "INVALID_SIGNATURE"
    forged = await deliver(billing, payload, secret="whsec_someone_else")
    assert forged.status_code == 400
    stale = await deliver(billing, payload, at=int(time.time()) - 3600)
    assert stale.status_code == 400
    assert await state(billing, sub) == ("pending_payment", ["ISSUED"])

    first = await deliver(billing, payload)
    assert first.status_code == 200 and first.json()["signalled"] == f"subscription {sub['id']}"
    await activated(billing, sub)
    second = await deliver(billing, payload)
    assert second.status_code == 200 and second.json() == {"received": True, "duplicate": True}
    # A different event about the same payment (Stripe sends several) is acted on and changes nothing.
    other = await deliver(billing, event(intent))
    assert other.status_code == 200

    async with session_factory(billing.engine)() as session:
        paid_events = await session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(
                OutboxEvent.merchant_id == billing.merchant.merchant_id,
                OutboxEvent.event_type == "invoice.paid.v0",
            )
        )
        rows = await session.scalar(
            select(func.count()).select_from(StripeEvent).where(StripeEvent.object_id == intent.id)
        )
        invoice0 = await session.scalar(select(Invoice).where(Invoice.id == sub["payment"]["invoiceId"]))
    assert paid_events == 1 and rows == 2
    assert invoice0 is not None and invoice0.status == "PAID" and invoice0.paid_amount == Decimal("49.00")
    assert await state(billing, sub) == ("active", ["PAID", "ACTIVE"])

    # Events Accrue did not create, or other types, are acknowledged and ignored.
    foreign = await deliver(billing, event({"id": "pi_foreign", "object": "payment_intent", "metadata": {}}))
    assert foreign.status_code == 200 and "ignored" in foreign.json()


async def test_a_failed_payment_webhook_records_the_decline(billing: Billing, payments: Settings) -> None:
    sub = await pending(billing)
    session_id = sub["payment"]["paymentSessionId"]
    row = await session_row(billing, session_id)
    assert row.provider_reference is not None
    intent = fake(payments).v1.payment_intents.retrieve(row.provider_reference).to_dict()
    intent["last_payment_error"] = {"code": "card_declined", "message": "Your card was declined."}
    answered = await deliver(billing, event(intent, "payment_intent.payment_failed"))
    assert answered.status_code == 200 and "signalled" in answered.json()

    async def declined() -> None:
        assert (await session_row(billing, session_id)).status == "declined"

    await eventually(declined)
    assert await state(billing, sub) == ("pending_payment", ["ISSUED"])


async def test_a_lost_webhook_is_reconciled_by_the_workflow_timer(
    billing: Billing, payments: Settings
) -> None:
    sub = await pending(billing)
    row = await session_row(billing, sub["payment"]["paymentSessionId"])
    assert row.provider_reference is not None
    # Paid at Stripe, but neither the page nor a webhook ever tells Accrue.
    assert confirm_at_stripe(payments, row.provider_reference).status == "succeeded"
    await billing.env.sleep(timedelta(minutes=5))
    assert await state(billing, sub) == ("pending_payment", ["ISSUED"])  # not yet: the check is at 10 min
    await billing.env.sleep(timedelta(minutes=6))
    await activated(billing, sub)
    assert (await session_row(billing, row.id)).status == "completed"
    # The run with its provider check (a timer, the reconcile activity) replays in the sandboxed Replayer.
    await replay(await run_chain(billing, subscription_workflow_id(sub["id"])))


async def test_a_declined_charge_found_by_the_timer_is_recorded_once(
    billing: Billing, payments: Settings
) -> None:
    sub = await pending(billing)
    row = await session_row(billing, sub["payment"]["paymentSessionId"])
    assert row.provider_reference is not None
    # localstripe's 4000000000000341 attaches, then declines the charge: the PaymentIntent carries the error.
    with pytest.raises(stripe.CardError):
        confirm_at_stripe(payments, row.provider_reference, "4000000000000341")
    await billing.env.sleep(timedelta(minutes=11))

    async def declined() -> None:
        assert (await session_row(billing, row.id)).status == "declined"

    await eventually(declined)
    await billing.env.sleep(timedelta(minutes=21))  # later checks find the same decline: nothing new
    assert await state(billing, sub) == ("pending_payment", ["ISSUED"])


async def test_a_top_up_is_paid_by_card_and_its_lost_webhook_reconciled(
    billing: Billing, payments: Settings
) -> None:
    """Top-up invoices are written by the API: the page opens their PaymentIntent and tells the workflow to
    watch it, so a payment made at Stripe without the page or a webhook is still found."""
    sub = await pending(billing)
    first = await pay_on_page(billing, sub["payment"]["paymentSessionId"], token(payments, GOOD))
    assert first["outcome"] == "succeeded"
    await activated(billing, sub)
    customer = sub["customerId"]

    topup = await billing.post(f"/v0/customers/{customer}/topups", {"amount": "25.00"}, status=201)
    row = await session_row(billing, topup["paymentSessionId"])
    assert row.provider_reference is None  # not opened until the payer opens the page
    shown = await billing.http.get(f"/checkout/{row.id}", headers={"Authorization": ""})
    assert shown.status_code == 200 and "25.00 USD" in shown.text
    row = await session_row(billing, row.id)
    assert row.provider == "stripe" and row.provider_reference is not None
    assert fake(payments).v1.payment_intents.retrieve(row.provider_reference).amount == 2500

    assert confirm_at_stripe(payments, row.provider_reference).status == "succeeded"
    await billing.env.sleep(timedelta(minutes=11))

    async def credited() -> None:
        assert (await session_row(billing, row.id)).status == "completed"
        got = await billing.get(f"/v0/customers/{customer}")
        assert [w["balance"] for w in got["wallets"]] == ["25.00"], got.get("wallets")

    await eventually(credited)
    await replay(await run_chain(billing, subscription_workflow_id(sub["id"])))  # watch_payments included


async def test_a_period_invoice_is_issued_with_a_payment_intent_and_paid_by_card(
    billing: Billing, payments: Settings
) -> None:
    plan, _ = await billing.quickstart_catalog()
    start = datetime(2026, 1, 31, tzinfo=UTC)
    clock = await billing.clock(start)
    sub = await billing.subscribe(plan, await billing.customer(), start, testClockId=clock)
    paid = await pay_on_page(billing, sub["payment"]["paymentSessionId"], token(payments, GOOD))
    assert paid["outcome"] == "succeeded"
    await activated(billing, sub)

    await billing.advance(clock, datetime(2026, 2, 28, tzinfo=UTC) + GRACE + timedelta(hours=1))
    period1 = next(i for i in await billing.invoices(sub["id"]) if i.sequence_number == 1)
    assert period1.status == "ISSUED" and period1.payment_session_id is not None
    row = await session_row(billing, period1.payment_session_id)
    assert row.provider == "stripe" and row.provider_reference is not None
    intent = fake(payments).v1.payment_intents.retrieve(row.provider_reference)
    assert (
        intent.amount == int(period1.grand_total * 100) and intent.metadata["accrue_invoice_id"] == period1.id
    )

    declined = await pay_on_page(billing, row.id, token(payments, DECLINED))
    assert declined["outcome"] == "declined"

    async def failed() -> None:
        invoice = next(i for i in await billing.invoices(sub["id"]) if i.sequence_number == 1)
        assert invoice.status == "PAYMENT_FAILED"

    await eventually(failed)
    again = await pay_on_page(billing, row.id, token(payments, GOOD))
    assert again["outcome"] == "succeeded"

    async def settled() -> None:
        invoice = next(i for i in await billing.invoices(sub["id"]) if i.sequence_number == 1)
        assert invoice.status == "PAID" and invoice.paid_amount == period1.grand_total

    await eventually(settled)
