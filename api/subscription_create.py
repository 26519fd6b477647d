"""Creating a subscription (POST /v0/subscriptions), shared by the API and the hosted signup page: the row
(with an inline customer when given), then the subscription's workflow, started with an update that returns
once it wrote Invoice 0 (and, when it is free, the activation)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from fastapi import Request
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.service import RPCError

from api.app_state import settings_of, temporal_client
from api.deps import Ctx
from api.lookups import check_rate_keys, find_or_insert_consumer
from api.problems import ApiError, FieldErrors, conflict, forbidden, invalid, not_found
from api.schemas.customers import DEFAULT_NOTIFICATIONS, store_rates
from api.schemas.subscriptions import SubscriptionCreate
from db import subscriptions as records
from db.models import Customer, Plan, Subscription, TestClock
from domain.funding import TopupOutOfBounds, check_minimum_balance
from domain.ids import new_id
from domain.money import parse_decimal
from workflows import search_attributes
from workflows.client import create_subscription as create_subscription_workflow

DEFAULT_SESSION_EXPIRY_MINUTES = 240
# How long a create waits for its workflow's Invoice 0 before answering 503 (repeat the request to finish).
CREATE_TIMEOUT_SECONDS = 30.0


async def create(body: SubscriptionCreate, ctx: Ctx, request: Request) -> tuple[Subscription, bool]:
    """POST /v0/subscriptions for `ctx`'s merchant: the row, then its workflow's Invoice 0 (and activation).
    Returns the subscription and whether this request created it (a live one for the same customer and
    plan is returned as it is). Raises ApiError (400, 404, 409, 503)."""
    if (body.customer is None) == (body.customer_id is None):
        raise invalid("customerId", "give exactly one of customerId or customer (name, email, address)")
    if body.ending_at is not None and body.ending_at <= body.started_at:
        raise invalid("endingAt", "must be later than startedAt")
    plan = await ctx.owned(Plan, body.plan_id, "Plan")
    if plan.deleted_at is not None:
        raise not_found("Plan", body.plan_id)
    clock = await _clock(ctx, body.test_clock_id)
    balance = body.minimum_account_balance or body.prefund_amount
    minimum = _minimum_balance(body, plan.currency)
    if body.customer is not None:
        _require_tax_address(body.customer.address.country, body.customer.address.zip_code)
        customer = await _inline_customer(ctx, body)
    else:
        assert body.customer_id is not None
        customer = await ctx.owned(Customer, body.customer_id, "Customer")

    customer_id, plan_id = customer.id, plan.id  # the rows expire if the insert below rolls back
    existing = await _live(ctx, customer_id, plan_id)
    if existing is None:
        new = records.NewSubscription(
            merchant_id=ctx.caller.merchant_id,
            environment=ctx.caller.environment,
            customer=customer,
            plan=plan,
            name=body.name,
            started_at=body.started_at,
            ending_at=body.ending_at,
            auto_charge=body.auto_charge,
            tax_exempt=body.tax_exempt,
            minimum_account_balance=minimum if balance is not None else None,
            redirect_urls=body.redirect_urls.model_dump(by_alias=True, exclude_none=True)
            if body.redirect_urls
            else None,
            session_expiry_minutes=round(body.session_expiry_minutes or DEFAULT_SESSION_EXPIRY_MINUTES),
            test_clock_id=clock.id if clock is not None else None,
            renewal_reminder_enabled=body.renewal_reminder_enabled,
            renewal_reminder_days=body.renewal_reminder_days,
        )
        try:
            # The live-subscription index already fires at the flush inside insert, not only at commit.
            sub = await records.insert(ctx.session, new)
            await ctx.session.commit()
        except IntegrityError:
            # A concurrent create for the same customer and plan won; answer with its subscription.
            await ctx.session.rollback()
            existing = await _live(ctx, customer_id, plan_id)
            if existing is None:
                raise conflict("The subscription changed while this request ran; retry it") from None
    created = existing is None
    if existing is not None:
        sub = existing
    subscription_id = sub.id
    attributes = search_attributes.subscription(
        sub.merchant_id, sub.customer_id, sub.plan_id, sub.status, sub.test_clock_id
    )
    # End the snapshot before the workflow writes Invoice 0. A commit (of nothing) rather than a rollback:
    # it leaves the loaded plan and customer unexpired, so the view reads neither again.
    await ctx.session.commit()
    retry = f"Subscription {subscription_id} is stored but its workflow has not finished creating it; "
    try:
        client = await temporal_client(request.app)
        await asyncio.wait_for(
            create_subscription_workflow(
                client, settings_of(request).task_queue, subscription_id, attributes
            ),
            CREATE_TIMEOUT_SECONDS,
        )
    # wait_for cancels the pending update, which raises RPCTimeoutOrCancelledError instead of TimeoutError.
    except (RPCError, RPCTimeoutOrCancelledError, WorkflowUpdateFailedError, RuntimeError, OSError) as exc:
        raise ApiError(503, f"{retry}repeat the same request to finish it ({exc or 'timed out'})") from None
    return sub, created


def _minimum_balance(body: SubscriptionCreate, currency: str) -> Decimal:
    """`minimumAccountBalance` (or the deprecated `prefundAmount` it supersedes): Invoice 0 tops the wallet
    up to it (db/funding.py), so it must be an amount the checkout can take."""
    field = "minimumAccountBalance" if body.minimum_account_balance is not None else "prefundAmount"
    given = body.minimum_account_balance or body.prefund_amount
    if given is None:
        return Decimal(0)
    try:
        return check_minimum_balance(parse_decimal(given), currency)
    except TopupOutOfBounds as exc:
        raise invalid(field, str(exc)) from None


async def _live(ctx: Ctx, customer_id: str, plan_id: str) -> Subscription | None:
    return await ctx.session.scalar(
        ctx.scoped(Subscription).where(
            Subscription.customer_id == customer_id,
            Subscription.plan_id == plan_id,
            Subscription.status != "terminated",
        )
    )


async def _clock(ctx: Ctx, test_clock_id: str | None) -> TestClock | None:
    if test_clock_id is None:
        return None
    if ctx.caller.environment != "sandbox":
        raise forbidden("Test clocks exist only in the sandbox environment (sk_test_ keys)")
    clock = await ctx.owned(TestClock, test_clock_id, "Test clock")
    if clock.deleted_at is not None:
        raise not_found("Test clock", test_clock_id)
    return clock


def _require_tax_address(country: str | None, zip_code: str | None) -> None:
    missing = [
        f for f, v in (("customer.address.country", country), ("customer.address.zipCode", zip_code)) if not v
    ]
    if missing:
        raise invalid(missing[0], "is required: the address is used for tax calculation")


async def _inline_customer(ctx: Ctx, body: SubscriptionCreate) -> Customer:
    """The customer of an inline `customer`: reuse the merchant's consumer (by email) and its customer."""
    given = body.customer
    assert given is not None
    if given.tax_rates:
        try:
            await check_rate_keys(ctx, given.tax_rates)
        except FieldErrors as exc:  # name the field where this request has it
            raise FieldErrors([e | {"field": f"customer.{e['field']}"} for e in exc.errors]) from None
    consumer, _ = await find_or_insert_consumer(ctx, given)
    values: dict[str, Any] = {
        "id": new_id("customer"),
        "merchant_id": ctx.caller.merchant_id,
        "environment": ctx.caller.environment,
        "consumer_id": consumer.id,
        "tax_rates": store_rates(given.tax_rates) if given.tax_rates else None,
        "notification_settings": DEFAULT_NOTIFICATIONS,
    }
    await ctx.session.execute(
        insert(Customer).values(**values).on_conflict_do_nothing(constraint="uq_customers_consumer")
    )
    customer = await ctx.session.scalar(ctx.scoped(Customer).where(Customer.consumer_id == consumer.id))
    if customer is None:
        raise conflict("The customer changed while this request ran; retry it")
    return customer
