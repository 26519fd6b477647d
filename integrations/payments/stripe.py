"""The Stripe provider (D14): PaymentIntents on the deployment's own Stripe account, through the `stripe`
library (base URL Settings.stripe_api_base, so tests run against localstripe).

The only module that calls `stripe` for payments. Amounts become minor units here and only here
(domain.money.to_minor_units / from_minor_units). Every call that creates or changes something carries the
idempotency key `<our id>:<step>`; the library retries network failures with the same key.

How a payer pays (api/pages/stripe_checkout.py): the hosted page mounts a Stripe.js card Element, turns the
card into a token in the browser (the card never reaches Accrue), and posts the token to Accrue, which
attaches it to the payment's Stripe customer and confirms the PaymentIntent (`confirm_with_card_token`).
A card that needs 3-D Secure leaves the PaymentIntent `requires_action`; the page then completes it with
Stripe.js and the PaymentIntent's client secret. Stripe's webhook (`parse_webhook`) or the owner's timer
(`retrieve`) reports the outcome to the owning workflow.

Keys are `SecretStr` in the settings and are handed to the library only; no message here contains one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import stripe

from domain.money import from_minor_units, to_minor_units
from integrations.payments.base import (
    META_ENVIRONMENT,
    META_INVOICE_ID,
    META_OUR_ID,
    CreatedPayment,
    OffSessionCharge,
    PaymentDeclinedError,
    PaymentRequest,
    PaymentState,
    PaymentStatus,
    ProviderName,
    ProviderRejected,
    ProviderUnavailable,
    owner_metadata,
    owner_of,
)

# The PaymentIntent events the webhook endpoint acts on; anything else is acknowledged and ignored.
OUTCOME_EVENTS = frozenset(
    {"payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled"}
)


class WebhookSignatureInvalid(Exception):
    """The payload's Stripe-Signature does not verify with any configured webhook secret (or is stale)."""


@dataclass(frozen=True)
class WebhookEvent:
    id: str  # evt_…: the dedupe key
    type: str
    livemode: bool
    payment: PaymentState | None  # the PaymentIntent it is about (None for other objects)


class _NoStripeBodies(logging.Filter):
    """The library logs request and response bodies at DEBUG (card tokens, PaymentIntent client secrets):
    they never reach a handler, whatever ACCRUE_LOG_LEVEL says. Its INFO lines (path, status) stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


_FILTER = _NoStripeBodies()


def _quiet_library_bodies() -> None:
    logger = logging.getLogger("stripe")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def _client(secret_key: str, api_base: str) -> stripe.StripeClient:
    _quiet_library_bodies()
    options: dict[str, Any] = {"max_network_retries": 2, "http_client": stripe.HTTPXClient()}
    if api_base:
        options["base_addresses"] = {"api": api_base}
    return stripe.StripeClient(secret_key, **options)


def _status(intent: dict[str, Any]) -> PaymentStatus:
    status = intent.get("status")
    if status == "succeeded":
        return PaymentStatus.SUCCEEDED
    if status == "canceled":
        return PaymentStatus.CANCELED
    if status in ("processing", "requires_capture"):
        return PaymentStatus.PROCESSING
    if status == "requires_action":
        return PaymentStatus.REQUIRES_ACTION
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        return PaymentStatus.FAILED
    return PaymentStatus.REQUIRES_PAYMENT


def payment_state(intent: dict[str, Any]) -> PaymentState:
    """Our view of a PaymentIntent (as plain JSON)."""
    currency = str(intent.get("currency") or "").upper() or None
    amount = intent.get("amount")
    raw_metadata = intent.get("metadata")
    metadata = {str(k): str(v) for k, v in raw_metadata.items()} if isinstance(raw_metadata, dict) else {}
    error = intent.get("last_payment_error")
    error = error if isinstance(error, dict) else {}
    method = intent.get("payment_method")
    if isinstance(method, dict):
        method = method.get("id")
    customer = intent.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return PaymentState(
        reference=str(intent["id"]),
        status=_status(intent),
        amount=from_minor_units(int(amount), currency) if currency and isinstance(amount, int) else None,
        currency=currency,
        owner=owner_of(metadata),
        our_id=metadata.get(META_OUR_ID),
        invoice_id=metadata.get(META_INVOICE_ID),
        failure_code=error.get("code") or error.get("decline_code"),
        failure_message=error.get("message"),
        payment_method=method if isinstance(method, str) else None,
        provider_customer=customer if isinstance(customer, str) else None,
        client_secret=intent.get("client_secret"),
        environment=metadata.get(META_ENVIRONMENT),
    )


def _plain(obj: Any) -> dict[str, Any]:
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    return dict(obj)


class StripeProvider:
    name: ProviderName = "stripe"

    def __init__(self, secret_key: str, publishable_key: str, api_base: str = "") -> None:
        """`secret_key` of the mode (test or live) this provider serves; provider_for checks the mode."""
        self.publishable_key = publishable_key
        self._client = _client(secret_key, api_base)

    def __repr__(self) -> str:  # never the key
        return "StripeProvider()"

    async def _call(self, what: str, call: Any) -> dict[str, Any]:
        try:
            return _plain(await call)
        except stripe.CardError as exc:
            error = getattr(exc, "error", None)
            intent = getattr(error, "payment_intent", None) if error is not None else None
            code = exc.code or "card_declined"
            state = payment_state(_plain(intent)) if intent else None
            raise PaymentDeclinedError(exc.user_message or "The card was declined.", state, code) from None
        except (stripe.RateLimitError, stripe.APIConnectionError) as exc:
            raise ProviderUnavailable(
                f"Stripe unavailable while trying to {what}: {type(exc).__name__}"
            ) from None
        except stripe.StripeError as exc:
            status = exc.http_status
            if status is None or status == 429 or status >= 500:
                raise ProviderUnavailable(f"Stripe unavailable while trying to {what} ({status})") from None
            raise ProviderRejected(
                f"Stripe refused to {what} ({status}): {exc.user_message or type(exc).__name__}"
            ) from None

    async def _customer(self, request: PaymentRequest) -> str:
        params: dict[str, Any] = {"metadata": {"accrue_customer_id": request.customer_id or ""}}
        if request.customer_email:
            params["email"] = request.customer_email
        if request.customer_name:
            params["name"] = request.customer_name
        # Keyed by the Accrue customer when there is one, so two payments of one customer share it.
        key = f"{request.customer_id}:customer" if request.customer_id else f"{request.our_id}:customer"
        created = await self._call(
            "create a customer",
            self._client.v1.customers.create_async(params=params, options={"idempotency_key": key}),  # type: ignore[arg-type]
        )
        return str(created["id"])

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment:
        if request.amount <= 0:
            raise ProviderRejected("a payment needs a positive amount")
        customer = request.provider_customer
        if customer is None and (request.save_payment_method or request.customer_id):
            customer = await self._customer(request)
        params: dict[str, Any] = {
            "amount": to_minor_units(request.amount, request.currency),
            "currency": request.currency.lower(),
            "payment_method_types": ["card"],
            "description": request.description[:1000],
            "metadata": owner_metadata(request),
        }
        if customer:
            params["customer"] = customer
        if request.save_payment_method:
            params["setup_future_usage"] = "off_session"
        intent = await self._call(
            "create a PaymentIntent",
            self._client.v1.payment_intents.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"{request.our_id}:create"},
            ),
        )
        state = payment_state(intent)
        return CreatedPayment(
            provider="stripe",
            reference=state.reference,
            payment_url=request.page_url,
            status=state.status,
            provider_customer=customer,
        )

    async def retrieve(self, reference: str) -> PaymentState:
        intent = await self._call(
            "read a PaymentIntent", self._client.v1.payment_intents.retrieve_async(reference)
        )
        return payment_state(intent)

    async def confirm_with_card_token(self, reference: str, token: str, attempt: str) -> PaymentState:
        current = await self.retrieve(reference)
        if current.status in (PaymentStatus.SUCCEEDED, PaymentStatus.PROCESSING, PaymentStatus.CANCELED):
            return current
        our_id = current.our_id or reference
        customer = current.provider_customer
        if customer is None:
            created = await self._call(
                "create a customer",
                self._client.v1.customers.create_async(
                    params={"metadata": {"accrue_id": our_id}},
                    options={"idempotency_key": f"{our_id}:customer"},
                ),
            )
            customer = str(created["id"])
        # The token becomes a card of the customer (declined here already when the card cannot be used),
        # the PaymentIntent's method, and is confirmed: one idempotency key per step of this attempt.
        card = await self._call(
            "save the card",
            self._client.v1.customers.payment_sources.create_async(
                customer,
                params={"source": token},
                options={"idempotency_key": f"{our_id}:card:{attempt}"},
            ),
        )
        await self._call(
            "set the PaymentIntent's card",
            self._client.v1.payment_intents.update_async(
                reference,
                params={"customer": customer, "payment_method": str(card["id"])},
                options={"idempotency_key": f"{our_id}:method:{attempt}"},
            ),
        )
        try:
            intent = await self._call(
                "confirm the PaymentIntent",
                self._client.v1.payment_intents.confirm_async(
                    reference, options={"idempotency_key": f"{our_id}:confirm:{attempt}"}
                ),
            )
        except PaymentDeclinedError as exc:
            if exc.state is None:
                state = await self.retrieve(reference)
                raise PaymentDeclinedError(str(exc), state, exc.code) from None
            raise
        return payment_state(intent)

    async def charge_off_session(self, request: OffSessionCharge) -> PaymentState:
        params: dict[str, Any] = {
            "amount": to_minor_units(request.amount, request.currency),
            "currency": request.currency.lower(),
            "customer": request.provider_customer,
            "payment_method": request.payment_method,
            "description": request.description[:1000],
            "metadata": owner_metadata(request),
            "confirm": True,
            "off_session": True,
        }
        intent = await self._call(
            "charge the saved card",
            self._client.v1.payment_intents.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"{request.our_id}:charge:{request.attempt}"},
            ),
        )
        return payment_state(intent)


def parse_webhook(payload: bytes, signature: str | None, secrets: list[str]) -> WebhookEvent:
    """Verify `Stripe-Signature` with each configured webhook secret (stripe.Webhook.construct_event) and
    read the event; raises WebhookSignatureInvalid when none verifies (or the payload is not an event)."""
    if not signature or not secrets:
        raise WebhookSignatureInvalid(
            "missing Stripe-Signature" if not signature else "no webhook secret set"
        )
    event = None
    for secret in secrets:
        try:
            event = stripe.Webhook.construct_event(payload, signature, secret)
            break
        except stripe.SignatureVerificationError:
            continue
        except (ValueError, TypeError, AttributeError, KeyError):
            raise WebhookSignatureInvalid("the payload is not a Stripe event") from None
    if event is None:
        raise WebhookSignatureInvalid("Stripe-Signature does not verify with the configured webhook secret")
    body = json.loads(payload)
    data = body.get("data") if isinstance(body, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not isinstance(obj, dict) or not body.get("id"):
        raise WebhookSignatureInvalid("the payload is not a Stripe event")
    payment = payment_state(obj) if obj.get("object") == "payment_intent" and obj.get("id") else None
    return WebhookEvent(
        id=str(body.get("id") or ""),
        type=str(body.get("type") or ""),
        livemode=bool(body.get("livemode")),
        payment=payment,
    )
