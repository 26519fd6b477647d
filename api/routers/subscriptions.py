"""Subscriptions: creation inserts the row and starts the subscription's workflow with an update that
returns once the workflow wrote Invoice 0 (and, when it is free, the activation); every transition goes
through that workflow."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.app_state import settings_of, temporal_client
from api.deps import Context, Ctx, Paging
from api.problems import ApiError, conflict, invalid
from api.schemas.subscriptions import SubscriptionCreate, SubscriptionOut, TerminateBody, customer_of
from api.subscription_create import create
from api.wire import ListResponse, UtcDatetime, list_envelope
from db import subscriptions as records
from db.models import Customer, Organization, Subscription, User
from workflows.client import start_subscription_workflow
from workflows.ids import subscription_workflow_id
from workflows.subscription import SubscriptionWorkflow
from workflows.subscription_messages import TerminateRequest

router = APIRouter(prefix="/v0/subscriptions", tags=["subscriptions"])


@router.post("", status_code=201, response_model=SubscriptionOut, responses={200: {"model": SubscriptionOut}})
async def create_subscription(
    body: SubscriptionCreate, ctx: Context, request: Request, response: Response
) -> SubscriptionOut:
    sub, created = await create(body, ctx, request)
    if not created:
        response.status_code = 200
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
        wallet=rows.wallet,
        wallet_charge=rows.wallet_charge,
    )
