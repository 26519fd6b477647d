"""integrations/payments against the Stripe fake (localstripe) through the real `stripe` library: the seam's
contract for every caller (the subscription workflow, one-off payments, dunning), and secrets kept out of
logs, errors and reprs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from decimal import Decimal
from uuid import uuid4

import pytest
from pydantic import SecretStr

from integrations.payments import (
    OffSessionCharge,
    PaymentDeclinedError,
    PaymentOwner,
    PaymentRequest,
    PaymentStatus,
    ProviderConfigError,
    ProviderRejected,
    SandboxProvider,
    StripeProvider,
    provider_for,
    provider_name_for,
)
from integrations.payments.stripe import WebhookSignatureInvalid, parse_webhook
from settings import Settings, SettingsError, load_settings
from tests.stripe_fake import new_key, revoke_key, stripe_client

OWNER = PaymentOwner("subscription", "sub_test")


def request(our_id: str | None = None, **extra: object) -> PaymentRequest:
    fields: dict[str, object] = {
        "our_id": our_id or f"ps_{uuid4().hex[:24]}",
        "merchant_id": "org_test",
        "environment": "sandbox",
        "amount": Decimal("19.99"),
        "currency": "USD",
        "owner": OWNER,
        "description": "Invoice INV-1",
        "page_url": "http://accrue.test/checkout/x",
        "invoice_id": "inv_test",
        "customer_id": "cus_test",
        "customer_email": "payer@acme.example",
    } | extra
    return PaymentRequest(**fields)  # type: ignore[arg-type]


def card_token(base: str, key: str, number: str) -> str:
    card = {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    return str(stripe_client(base, key).v1.tokens.create(params={"card": card}).id)


@pytest.fixture
def key() -> str:
    return new_key()


@pytest.fixture
def provider(stripe_fake: str, key: str) -> StripeProvider:
    return StripeProvider(key, "pk_" + key[3:], stripe_fake)


async def test_create_is_idempotent_by_our_id_and_in_minor_units(
    provider: StripeProvider, stripe_fake: str, key: str
) -> None:
    ask = request(save_payment_method=True)
    first = await provider.create_payment(ask)
    again = await provider.create_payment(ask)
    assert (first.provider, first.reference, first.payment_url) == ("stripe", again.reference, ask.page_url)
    assert first.provider_customer and first.provider_customer == again.provider_customer
    intents = stripe_client(stripe_fake, key).v1.payment_intents.list().data
    assert len(intents) == 1 and intents[0].amount == 1999 and intents[0].currency == "usd"
    state = await provider.retrieve(first.reference)
    assert state.status == PaymentStatus.REQUIRES_PAYMENT
    assert (state.amount, state.currency, state.owner, state.our_id) == (
        Decimal("19.99"),
        "USD",
        OWNER,
        ask.our_id,
    )
    assert (state.invoice_id, state.environment) == ("inv_test", "sandbox")
    # Yen have no minor unit: 500 JPY is 500 at Stripe.
    yen = await provider.create_payment(request(amount=Decimal("500"), currency="JPY"))
    assert (await provider.retrieve(yen.reference)).amount == Decimal("500")


async def test_card_confirm_succeeds_declines_and_saves_the_method(
    provider: StripeProvider, stripe_fake: str, key: str
) -> None:
    created = await provider.create_payment(request(save_payment_method=True))
    with pytest.raises(PaymentDeclinedError) as declined:
        await provider.confirm_with_card_token(
            created.reference, card_token(stripe_fake, key, "4000000000000002"), "a1"
        )
    assert declined.value.code == "card_declined" and "declined" in str(declined.value)
    assert (await provider.retrieve(created.reference)).status != PaymentStatus.SUCCEEDED

    good = card_token(stripe_fake, key, "4242424242424242")
    paid = await provider.confirm_with_card_token(created.reference, good, good)
    assert paid.status == PaymentStatus.SUCCEEDED and paid.payment_method and paid.provider_customer
    # Confirming a paid PaymentIntent again charges nothing more.
    again = await provider.confirm_with_card_token(
        created.reference, card_token(stripe_fake, key, "4242424242424242"), "a3"
    )
    assert again.status == PaymentStatus.SUCCEEDED
    charges = stripe_client(stripe_fake, key).v1.charges.list().data
    assert [c.amount for c in charges if c.status == "succeeded"] == [1999]

    # The saved card pays off-session (autoCharge), once per attempt key.
    charge = OffSessionCharge(
        our_id="inv_test", attempt=1, merchant_id="org_test", environment="sandbox", amount=Decimal("5.00"),
        currency="USD", owner=OWNER, description="Invoice INV-2", provider_customer=paid.provider_customer,
        payment_method=paid.payment_method,
    )  # fmt: skip
    first, retry = await provider.charge_off_session(charge), await provider.charge_off_session(charge)
    assert first.status == PaymentStatus.SUCCEEDED and first.reference == retry.reference
    assert first.amount == Decimal("5.00") and first.owner == OWNER


async def test_an_off_session_charge_that_declines(
    provider: StripeProvider, stripe_fake: str, key: str
) -> None:
    client = stripe_client(stripe_fake, key)
    customer = client.v1.customers.create(params={"source": card_token(stripe_fake, key, "4000000000000341")})
    charge = OffSessionCharge(
        our_id="inv_decl", attempt=1, merchant_id="org_test", environment="sandbox", amount=Decimal("5.00"),
        currency="USD", owner=OWNER, description="x", provider_customer=customer.id,
        payment_method=str(customer.default_source),
    )  # fmt: skip
    with pytest.raises(PaymentDeclinedError) as declined:
        await provider.charge_off_session(charge)
    assert declined.value.code == "card_declined"


async def test_sandbox_provider_keeps_todays_behaviour() -> None:
    sandbox = SandboxProvider()
    ask = request()
    created = await sandbox.create_payment(ask)
    assert (created.provider, created.reference, created.payment_url) == ("sandbox", ask.our_id, ask.page_url)
    assert (await sandbox.retrieve(ask.our_id)).status == PaymentStatus.REQUIRES_PAYMENT
    with pytest.raises(ProviderRejected):
        await sandbox.confirm_with_card_token(ask.our_id, "tok_x", "1")
    ok = OffSessionCharge(
        our_id="inv_x", attempt=1, merchant_id="m", environment="sandbox", amount=Decimal(1), currency="USD",
        owner=OWNER, description="x", provider_customer="", payment_method="pm_sandbox_saved",
    )  # fmt: skip
    assert (await sandbox.charge_off_session(ok)).status == PaymentStatus.SUCCEEDED
    with pytest.raises(PaymentDeclinedError):
        await sandbox.charge_off_session(
            OffSessionCharge(**{**ok.__dict__, "payment_method": "pm_sandbox_decline_1"})
        )


def test_webhook_signatures_verify_with_the_library() -> None:
    secret = "whsec_unit"
    metadata = {"accrue_owner_kind": "payment", "accrue_owner_id": "pay_1", "accrue_id": "pay_1"}
    intent = {"id": "pi_1", "object": "payment_intent", "status": "succeeded", "amount": 1999,
              "currency": "usd", "metadata": metadata}  # fmt: skip
    body = json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "livemode": False,
                       "data": {"object": intent}}).encode()  # fmt: skip
    stamp = int(time.time())
    signature = (
        f"t={stamp},v1=" + hmac.new(secret.encode(), b"%d.%s" % (stamp, body), hashlib.sha256).hexdigest()
    )
    event = parse_webhook(body, signature, ["whsec_other", secret])
    assert (event.id, event.type, event.livemode) == ("evt_1", "payment_intent.succeeded", False)
    assert event.payment is not None and event.payment.owner == PaymentOwner("payment", "pay_1")
    assert event.payment.status == PaymentStatus.SUCCEEDED and event.payment.amount == Decimal("19.99")
    for bad in (None, "", f"t={stamp},v1=00", signature.replace(str(stamp), str(stamp - 3600), 1)):
        with pytest.raises(WebhookSignatureInvalid):
            parse_webhook(body, bad, [secret])
    with pytest.raises(WebhookSignatureInvalid):
        parse_webhook(body, signature, [])
    with pytest.raises(WebhookSignatureInvalid):
        parse_webhook(body + b" ", signature, [secret])


def test_a_key_of_the_wrong_mode_is_refused_and_never_shown() -> None:
    live, test = "sk_live_" + "L" * 24, "sk_test_" + "T" * 24
    for overrides, variable in (
        ({"stripe_secret_key": live}, "ACCRUE_STRIPE_SECRET_KEY"),
        ({"stripe_live_secret_key": test}, "ACCRUE_STRIPE_LIVE_SECRET_KEY"),
        ({"stripe_secret_key": "not-a-key"}, "ACCRUE_STRIPE_SECRET_KEY"),
        ({"stripe_publishable_key": "pk_live_x"}, "ACCRUE_STRIPE_PUBLISHABLE_KEY"),
        ({"payment_provider": "stripe"}, "ACCRUE_STRIPE_SECRET_KEY"),
        ({"live_payment_provider": "stripe"}, "ACCRUE_STRIPE_LIVE_SECRET_KEY"),
    ):
        with pytest.raises(SettingsError) as refused:
            load_settings(**overrides)
        message = str(refused.value)
        assert variable in message and live not in message and test not in message, message
    # From the environment too, the process stops with the variable's name and not the key.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ACCRUE_STRIPE_SECRET_KEY", live)
        with pytest.raises(SettingsError) as refused:
            Settings()
        assert "live-mode key, refused" in str(refused.value) and live not in str(refused.value)

    both = load_settings(
        stripe_secret_key=test, stripe_live_secret_key=live, payment_provider="stripe",
        payment_provider_overrides={"org_sandboxed": "sandbox"},
    )  # fmt: skip
    assert live not in repr(both) and test not in repr(both) and live not in both.model_dump_json()
    assert provider_name_for(both, "org_x", "sandbox") == "stripe"
    assert provider_name_for(both, "org_x", "live") == "stripe"
    assert provider_name_for(both, "org_sandboxed", "sandbox") == "sandbox"
    assert repr(provider_for(both, "org_x", "live")) == "StripeProvider()"
    # Sandbox stays the default for sk_test_ merchants; live without a live key has no provider to pay.
    default = load_settings()
    assert provider_name_for(default, "org_x", "sandbox") == "sandbox"
    assert (
        provider_name_for(
            load_settings(payment_provider_overrides={"org_x": "stripe"}, stripe_secret_key=test),
            "org_x",
            "live",
        )
        == "sandbox"
    )
    # A settings object built around the validation still cannot charge in the wrong mode.
    forged = default.model_copy(update={"stripe_secret_key": SecretStr(live), "payment_provider": "stripe"})
    with pytest.raises(ProviderConfigError) as wrong:
        provider_for(forged, "org_x", "sandbox")
    assert live not in str(wrong.value)


async def test_no_secret_reaches_the_logs(stripe_fake: str, caplog: pytest.LogCaptureFixture) -> None:
    key = new_key()
    provider = StripeProvider(key, "pk_" + key[3:], stripe_fake)
    caplog.set_level(logging.DEBUG)
    created = await provider.create_payment(request())
    state = await provider.retrieve(created.reference)
    assert state.client_secret
    tok = card_token(stripe_fake, key, "4242424242424242")
    await provider.confirm_with_card_token(created.reference, tok, tok)
    with caplog.at_level(logging.WARNING, logger="httpx"):  # the fake's control URL names the key
        revoke_key(stripe_fake, key)
    with pytest.raises(ProviderRejected) as refused:
        await provider.retrieve(created.reference)
    logging.getLogger("test").info("provider %r failed: %s", provider, refused.value)
    text = caplog.text + str(refused.value)
    assert caplog.records, "the stripe library logs at DEBUG"
    assert key not in text and key[8:] not in text
    assert state.client_secret not in text


@pytest.mark.parametrize(
    "payload",
    [b"[]", b"null", b'"evt"', b"{}", b'{"id": "evt_1", "data": []}', b'{"id": "e", "data": {"object": 1}}'],
)
def test_a_signed_payload_that_is_no_event_is_refused(payload: bytes) -> None:
    secret = "whsec_unit"
    stamp = int(time.time())
    digest = hmac.new(secret.encode(), b"%d.%s" % (stamp, payload), hashlib.sha256).hexdigest()
    with pytest.raises(WebhookSignatureInvalid):
        parse_webhook(payload, f"t={stamp},v1={digest}", [secret])
