"""`POST /v0/stripe/webhooks`: Stripe's events about the PaymentIntents Accrue created (D14).

Point a Stripe webhook endpoint (test mode and, for live merchants, live mode) at this URL with the events
`payment_intent.succeeded` and `payment_intent.payment_failed`, and set its signing secret in
ACCRUE_STRIPE_WEBHOOK_SECRET (ACCRUE_STRIPE_LIVE_WEBHOOK_SECRET): docs/operations.md.

Each delivery is verified with the library (`stripe.Webhook.construct_event`: the Stripe-Signature header,
HMAC-SHA256 with the secret, five minutes' tolerance) and acted on once per Stripe event id: the event's row
(`stripe_events`, migration 0007) is inserted in the transaction that signals the PaymentIntent's owner
(its metadata names it), and committed only after the signal was sent. A redelivery (Stripe retries until
it gets a 2xx) finds the row and is acknowledged without a second signal; a signal that cannot be sent
rolls the row back and answers 503, so Stripe delivers again. The owner records the outcome idempotently,
so the checkout page's own signal and the owner's timer (which asks Stripe when no webhook came) meet the
same end state.

Answers: 200 `{"received": true, ...}` for every verified event (acted on, duplicate or ignored), 400 for
a payload whose signature does not verify, 503 while Temporal is unreachable.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.dialects.postgresql import insert

from api.app_state import settings_of
from api.payment_outcomes import UnknownOwner, signal_owner
from api.problems import ApiError
from db.models import StripeEvent
from integrations.payments import webhook_secrets
from integrations.payments.stripe import OUTCOME_EVENTS, WebhookSignatureInvalid, parse_webhook

router = APIRouter(tags=["stripe"])
log = logging.getLogger(__name__)

PATH = "/v0/stripe/webhooks"


def _received(**extra: object) -> JSONResponse:
    return JSONResponse({"received": True, **extra})


@router.post(PATH, include_in_schema=False)
async def stripe_webhook(request: Request) -> JSONResponse:
    settings = settings_of(request)
    payload = await request.body()
    try:
        event = parse_webhook(payload, request.headers.get("Stripe-Signature"), webhook_secrets(settings))
    except WebhookSignatureInvalid as exc:
        raise ApiError(400, f"Stripe webhook refused: {exc}", code="INVALID_SIGNATURE") from None
    payment = event.payment
    if event.type not in OUTCOME_EVENTS or payment is None or payment.owner is None:
        return _received(ignored="not about a payment Accrue owns")
    if event.type == "payment_intent.canceled":
        return _received(ignored="a cancelled PaymentIntent: its checkout expires at Accrue")
    if payment.environment is not None and (payment.environment == "live") != event.livemode:
        # A test-mode event about a live payment (or the reverse) is never acted on.
        return _received(ignored="livemode does not match the payment's environment")
    succeeded = event.type == "payment_intent.succeeded"
    async with request.app.state.sessions() as session:
        inserted = await session.execute(
            insert(StripeEvent)
            .values(
                id=event.id,
                type=event.type,
                livemode=event.livemode,
                object_id=payment.reference,
                owner_kind=payment.owner.kind,
                owner_id=payment.owner.id,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(StripeEvent.id)
        )
        if inserted.first() is None:
            return _received(duplicate=True)
        try:
            await signal_owner(request.app, settings.task_queue, payment, succeeded)
        except UnknownOwner as exc:
            await session.commit()  # nothing to retry: remember it as handled
            log.warning("Stripe event %s (%s) ignored: %s", event.id, event.type, exc)
            return _received(ignored=str(exc))
        except ApiError:
            await session.rollback()
            raise
        await session.commit()
    return _received(signalled=f"{payment.owner.kind} {payment.owner.id}")
