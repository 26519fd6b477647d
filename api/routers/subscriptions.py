"""Subscriptions: creation inserts the row and starts the subscription's workflow with an update that
returns once the workflow wrote Invoice 0 (and, when it is free, the activation); every transition goes
through that workflow."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from temporalio.client import RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.app_state import settings_of, temporal_client
from api.deps import Context, Ctx, Paging
from api.lookups import check_rate_keys, find_or_insert_consumer
from api.problems import ApiError, FieldErrors, conflict, forbidden, invalid, not_found
from api.schemas.customers import DEFAULT_NOTIFICATIONS, store_rates
from api.schemas.subscriptions import SubscriptionCreate, SubscriptionOut, TerminateBody, customer_of
from api.wire import ListResponse, UtcDatetime, list_envelope
from db import subscriptions as records
from db.models import Customer, Organization, Plan, Subscription, TestClock, User
from domain.ids import new_id
from domain.money import parse_decimal
from workflows import search_attributes
from workflows.client import create_subscription as create_subscription_workflow
from workflows.client import start_subscription_workflow
from workflows.ids import subscription_workflow_id
from workflows.subscription import SubscriptionWorkflow
from workflows.subscription_messages import TerminateRequest

router = APIRouter(prefix="/v0/subscriptions", tags=["subscriptions"])

DEFAULT_SESSION_EXPIRY_MINUTES = 240
# How long a create waits for its workflow's Invoice 0 before answering 503 (repeat the request to finish).
CREATE_TIMEOUT_SECONDS = 30.0


@router.post("", status_code=201, response_model=SubscriptionOut, responses={200: {"model": SubscriptionOut}})
async def create_subscription(
    body: SubscriptionCreate, ctx: Context, request: Request, response: Response
) -> SubscriptionOut:
    if (body.customer is None) == (body.customer_id is None):
        raise invalid("customerId", "give exactly one of customerId or customer (name, email, address)")
    if body.ending_at is not None and body.ending_at <= body.started_at:
        raise invalid("endingAt", "must be later than startedAt")
    plan = await ctx.owned(Plan, body.plan_id, "Plan")
    if plan.deleted_at is not None:
        raise not_found("Plan", body.plan_id)
    clock = await _clock(ctx, body.test_clock_id)
    balance = body.minimum_account_balance or body.prefund_amount
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
            minimum_account_balance=parse_decimal(balance) if balance is not None else None,
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
    if existing is not None:
        response.status_code = 200
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
    return await view(ctx, request, sub)  # view re-reads the row the workflow changed


async def start_workflow(request: Request, sub: Subscription, *, unreachable: str | None = None) -> None:
    """Idempotent: a retried create finds the running workflow (and starts it if a crash left none).
    Temporal out of reach is a 503 with `unreachable` as its message (by default the create's)."""
    settings = settings_of(request)
    try:
        client = await temporal_client(request.app)
        await start_subscription_workflow(client, settings.task_queue, sub.id)
    except (RPCError, RuntimeError, OSError) as exc:
        message = unreachable or (
            f"Subscription {sub.id} is stored but its workflow could not be started; "
            "repeat the same request to finish it"
        )
        raise ApiError(503, f"{message} ({exc})") from None


@router.get("", response_model=ListResponse[SubscriptionOut])
async def list_subscriptions(
    ctx: Context,
    request: Request,
    page: Paging,
    merchant_id: Annotated[str | None, Query(alias="merchantId")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    consumer_id: Annotated[str | None, Query(alias="consumerId")] = None,
    status: Annotated[list[str] | None, Query()] = None,
    started_before: Annotated[UtcDatetime | None, Query(alias="startedBefore")] = None,
    include: Annotated[str | None, Query()] = None,
) -> ListResponse[SubscriptionOut]:
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    if include not in (None, "customer"):
        raise invalid("include", 'the only supported value is "customer"')
    statuses = set(status or [])
    if statuses - {"active", "terminated", "pending_payment"}:
        raise invalid("status", "must be one of active, terminated, pending_payment")
    query = ctx.scoped(Subscription)
    if customer_id is not None:
        query = query.where(Subscription.customer_id == customer_id)
    if consumer_id is not None:
        query = query.join(Customer, Customer.id == Subscription.customer_id).where(
            Customer.consumer_id == consumer_id
        )
    if statuses:
        query = query.where(Subscription.status.in_(statuses))
    if started_before is not None:
        moment = started_before if started_before.tzinfo else started_before.replace(tzinfo=UTC)
        query = query.where(Subscription.started_at <= moment)
    rows, total = await ctx.page(query, page, Subscription.created_at.desc(), Subscription.id)
    items = [await view(ctx, request, row, include_customer=include == "customer") for row in rows]
    return list_envelope(items, page, total)


@router.get("/{id}", response_model=SubscriptionOut)
async def get_subscription(id: str, ctx: Context, request: Request) -> SubscriptionOut:
    return await view(ctx, request, await ctx.owned(Subscription, id, "Subscription"))


@router.post("/{id}/termination", response_model=SubscriptionOut)
async def terminate_subscription(
    id: str, body: TerminateBody, ctx: Context, request: Request
) -> SubscriptionOut:
    sub = await ctx.owned(Subscription, id, "Subscription")
    if sub.status == "terminated":
        raise conflict(f"Subscription {id} is already terminated")
    # A create that answered 503 left the row without its workflow; starting it here (a no-op when it runs)
    # lets the termination through instead of failing on a workflow that does not exist. It is also where
    # an unreachable Temporal becomes a 503.
    await start_workflow(request, sub, unreachable="Could not reach the subscription's workflow; retry")
    await ctx.session.rollback()  # release the snapshot: the workflow writes the transition
    client = await temporal_client(request.app)
    handle = client.get_workflow_handle(subscription_workflow_id(id))
    try:
        await handle.execute_update(
            SubscriptionWorkflow.terminate,
            TerminateRequest(reason=body.reason, terminated_by=ctx.caller.merchant_id),
        )
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == "AlreadyTerminated":
            raise conflict(f"Subscription {id} is already terminated") from None
        raise invalid("reason", str(cause)) from None
    except RPCError as exc:
        # A concurrent termination may have finished the workflow between our read and the update.
        ctx.session.expire_all()
        if (await ctx.owned(Subscription, id, "Subscription")).status == "terminated":
            raise conflict(f"Subscription {id} is already terminated") from None
        raise ApiError(503, f"Could not reach the subscription's workflow ({exc}); retry") from None
    ctx.session.expire_all()
    return await view(ctx, request, await ctx.owned(Subscription, id, "Subscription"))


async def view(
    ctx: Ctx, request: Request, sub: Subscription, *, include_customer: bool = False
) -> SubscriptionOut:
    await ctx.session.refresh(sub)
    rows = await records.view_rows(ctx.session, sub)
    customer = rows.customer
    embedded = None
    if include_customer:
        consumer = await ctx.session.get_one(Organization, customer.consumer_id)
        merchant = await ctx.session.get_one(Organization, sub.merchant_id)
        owner = await ctx.session.get(User, ctx.caller.user_id)
        embedded = customer_of(customer, consumer, merchant, owner.email if owner else "")
    base_url = settings_of(request).base_url
    return SubscriptionOut.of(
        sub,
        invoice0=rows.invoice0,
        session=rows.payment,
        base_url=base_url,
        tax_rate=rows.tax_rate,
        customer=embedded,
    )


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
