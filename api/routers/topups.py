"""Wallet top-ups for an existing customer (extension, docs/api-extensions.md "Wallets").

`POST /v0/customers/{id}/topups` writes a top-up invoice of the customer's subscription (db/topups.py),
ISSUED with a checkout of the same payment provider Invoice 0 and the period invoices use; the payer pays
on the hosted checkout page (or the sandbox's `POST /v0/paymentSessions/{id}/complete`), the subscription's
workflow records the payment and credits the wallet in that transaction, once (db/funding.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request

from api.app_state import settings_of
from api.checkout import Checkout
from api.deps import Context, Ctx
from api.problems import conflict, invalid, not_found
from api.schemas.invoices import InvoiceOut
from api.schemas.topups import TopupCreate, TopupOut
from db import outbox
from db.invoice_totals import stored_totals
from db.models import Customer, Invoice, PaymentSession, Subscription, TestClock
from db.topups import write_topup_invoice
from domain.funding import TopupOutOfBounds, check_topup
from domain.money import MoneyFormatError, parse_decimal

router = APIRouter(prefix="/v0/customers", tags=["customers"])


@router.post("/{id}/topups", status_code=201, response_model=TopupOut)
async def create_topup(id: str, body: TopupCreate, ctx: Context, request: Request) -> TopupOut:
    customer = await ctx.owned(Customer, id, "Customer")
    sub = await _subscription(ctx, customer, body.subscription_id)
    if body.currency is not None and body.currency.upper() != sub.currency:
        raise invalid("currency", f"must be {sub.currency}, the currency of subscription {sub.id}'s wallet")
    try:
        amount = check_topup(parse_decimal(body.amount), sub.currency)
    except (TopupOutOfBounds, MoneyFormatError) as exc:
        raise invalid("amount", str(exc)) from None
    # The subscription's row lock numbers its invoices; its workflow takes the same lock to write them.
    locked = await ctx.session.get(Subscription, sub.id, with_for_update=True, populate_existing=True)
    assert locked is not None
    if locked.status != "active":
        raise _not_active(locked)
    now = await _now(ctx, locked)
    expires_at = now + timedelta(minutes=locked.session_expiry_minutes)
    redirects = (
        body.redirect_urls.model_dump(by_alias=True, exclude_none=True) if body.redirect_urls else None
    )
    invoice = await write_topup_invoice(ctx.session, locked, amount, now, expires_at, redirects)
    base_url = settings_of(request).base_url
    await ctx.session.flush()
    await ctx.session.refresh(invoice, ["created_at", "updated_at"])
    data = InvoiceOut.of(invoice, stored_totals(invoice), base_url).model_dump(mode="json", by_alias=True)
    outbox.record(ctx.session, locked.merchant_id, locked.environment, "invoice.issued.v0", data)
    payment = await ctx.session.get_one(PaymentSession, invoice.payment_session_id)
    out = TopupOut.of(invoice, payment, payment.status, base_url, invoice.created_at)
    await ctx.session.commit()
    return out


@router.get("/{id}/topups/{topup_id}", response_model=TopupOut)
async def get_topup(id: str, topup_id: str, ctx: Context, request: Request) -> TopupOut:
    customer = await ctx.owned(Customer, id, "Customer")
    invoice = await ctx.session.get(Invoice, topup_id)
    if (
        invoice is None
        or invoice.customer_id != customer.id
        or invoice.sequence_number >= 0
        or invoice.payment_session_id is None
    ):
        raise not_found("Top-up", topup_id)
    sub = await ctx.session.get_one(Subscription, invoice.subscription_id)
    payment = await ctx.session.get_one(PaymentSession, invoice.payment_session_id)
    status = Checkout(payment, invoice, sub, "", await _now(ctx, sub)).status
    return TopupOut.of(invoice, payment, status, settings_of(request).base_url, invoice.created_at)


async def _subscription(ctx: Ctx, customer: Customer, subscription_id: str | None) -> Subscription:
    """The subscription whose wallet currency and checkout the top-up uses: the one named, or the
    customer's only live one."""
    if subscription_id is not None:
        sub = await ctx.owned(Subscription, subscription_id, "Subscription")
        if sub.customer_id != customer.id:
            raise invalid("subscriptionId", f"subscription {sub.id} belongs to another customer")
        return sub
    live = list(
        await ctx.session.scalars(
            ctx.scoped(Subscription)
            .where(Subscription.customer_id == customer.id, Subscription.status != "terminated")
            .order_by(Subscription.created_at, Subscription.id)
            .limit(2)
        )
    )
    if not live:
        raise conflict(
            f"Customer {customer.id} has no active subscription: a top-up is paid through one",
            details={"reason": "no_active_subscription"},
        )
    if len(live) > 1:
        raise invalid("subscriptionId", "the customer has several subscriptions: name the one to top up")
    return live[0]


def _not_active(sub: Subscription) -> Exception:
    if sub.status == "pending_payment":
        return conflict(
            f"Subscription {sub.id} is pending_payment: pay its Invoice 0 first",
            details={"status": sub.status},
        )
    return conflict(
        f"Subscription {sub.id} is {sub.status}: it takes no top-ups", details={"status": sub.status}
    )


async def _now(ctx: Ctx, sub: Subscription) -> datetime:
    """The subscription's time: its test clock's reading when bound to one."""
    if sub.test_clock_id is not None:
        clock = await ctx.session.get(TestClock, sub.test_clock_id)
        if clock is not None:
            return clock.current_time
    return datetime.now(UTC)
