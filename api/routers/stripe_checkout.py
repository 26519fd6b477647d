"""The card routes of the Stripe checkout page (api/stripe_checkout.py; the page itself is served at
`/checkout/{id}` with the sandbox checkout's routes, which hand Stripe sessions over).

`POST /checkout/{id}/card {"token": "tok_…"}` confirms the session's PaymentIntent with the card Stripe.js
tokenized; `POST /checkout/{id}/card/check` says where it stands after 3-D Secure. Both answer JSON for
the page's script: `{"outcome": succeeded|declined|authenticate|processing|ended|error, "redirect"?,
"message"?, "clientSecret"?}`. The session id (24 random base62 characters) is the page's only credential,
as with the sandbox checkout.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api import stripe_checkout
from api.app_state import settings_of
from api.checkout import load_checkout
from api.deps import Session
from api.problems import ApiError

router = APIRouter(include_in_schema=False)

MAX_BODY = 4096


async def _checkout(id: str, request: Request, session: Any) -> Any:
    checkout = await load_checkout(session, id)
    if checkout is None:
        raise ApiError(404, f"Checkout {id} not found")
    if not stripe_checkout.at_stripe(settings_of(request), checkout.payment):
        raise ApiError(409, "This checkout does not take cards: it is a sandbox test checkout")
    await session.commit()  # end the read transaction (objects stay loaded) before calling Stripe
    return checkout


@router.post("/checkout/{id}/card")
async def pay_with_card(id: str, request: Request, session: Session) -> JSONResponse:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw and len(raw) <= MAX_BODY else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, 'Send {"token": "tok_…"} as JSON', error="validation_error")
    checkout = await _checkout(id, request, session)
    return JSONResponse(await stripe_checkout.pay_with_token(request, checkout, body.get("token")))


@router.post("/checkout/{id}/card/check")
async def check_card_payment(id: str, request: Request, session: Session) -> JSONResponse:
    checkout = await _checkout(id, request, session)
    return JSONResponse(await stripe_checkout.check(request, checkout))
