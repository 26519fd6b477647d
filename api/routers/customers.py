"""Customers: the link between the merchant and one managed consumer organization.

Create is idempotent per (merchant, environment, consumer): a repeat returns 200 with the existing id and
changes nothing; a new link returns 201. Consumers are found again by email, case-insensitively.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic.alias_generators import to_camel
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Context, Ctx, Paging
from api.lookups import check_rate_keys, find_or_insert_consumer
from api.problems import ApiError, conflict, forbidden, invalid, not_found
from api.schemas.customers import (
    DEFAULT_NOTIFICATIONS,
    CreateCustomerOut,
    CustomerCreate,
    CustomerOut,
    CustomerUpdate,
    ValidTaxAddress,
    store_rates,
)
from api.wire import ListResponse, changes, contains, list_envelope
from db import disputes, outbox, payments
from db.models import Customer, Organization, Subscription
from db.subscriptions import wallets_of
from domain.ids import new_id

router = APIRouter(prefix="/v0/customers", tags=["customers"])

ALREADY_EXISTS: dict[int | str, dict[str, Any]] = {
    200: {"model": CreateCustomerOut, "description": "Customer already exists"}
}


@router.post("", status_code=201, response_model=CreateCustomerOut, responses=ALREADY_EXISTS)
async def create_customer(body: CustomerCreate, ctx: Context, response: Response) -> CreateCustomerOut:
    ctx.caller.require_merchant(body.merchant_id)
    if (body.consumer is None) == (body.consumer_id is None):
        raise invalid("consumer", "give exactly one of consumer (name, email, address) or consumerId")
    if body.tax_rates:
        await check_rate_keys(ctx, body.tax_rates)

    if body.consumer_id is not None:
        consumer = await managed_consumer(ctx, body.consumer_id)
        is_new_consumer = False
    else:
        assert body.consumer is not None
        consumer, is_new_consumer = await find_or_insert_consumer(ctx, body.consumer)
    address = consumer.address

    stmt = (
        insert(Customer)
        .values(
            id=new_id("customer"),
            merchant_id=ctx.caller.merchant_id,
            environment=ctx.caller.environment,
            consumer_id=consumer.id,
            external_id=body.external_id,
            tax_id=body.tax_id,
            tax_rates=store_rates(body.tax_rates) if body.tax_rates is not None else None,
            notification_settings=DEFAULT_NOTIFICATIONS,
        )
        # The existing link wins a race or a retry; a clash on externalId still raises.
        .on_conflict_do_nothing(constraint="uq_customers_consumer")
        .returning(Customer)
    )
    try:
        customer = await ctx.session.scalar(stmt)
    except IntegrityError:
        await ctx.session.rollback()
        raise external_id_taken(body.external_id) from None

    if customer is None:
        existing = await ctx.session.scalar(
            select(Customer.id).where(
                Customer.merchant_id == ctx.caller.merchant_id,
                Customer.environment == ctx.caller.environment,
                Customer.consumer_id == consumer.id,
            )
        )
        await ctx.session.rollback()
        if existing is None:
            raise conflict("The customer was deleted while this request ran; retry the request")
        response.status_code = 200
        return CreateCustomerOut(customer_id=existing, valid_tax_address=ValidTaxAddress.of(address))

    if body.consumer is not None and not is_new_consumer:
        # A consumer without a customer is one whose customer was deleted: the merchant is describing it
        # afresh, and nobody else can see it, so the new details replace the old ones.
        consumer.name = body.consumer.name
        address = body.consumer.address.stored()
        consumer.address = address
        consumer.phone = body.consumer.phone
    # Only a real create reports it (a replay returned above); it commits, or rolls back, with the row.
    data = CustomerOut.of(customer, consumer).model_dump(mode="json", by_alias=True)
    outbox.record(ctx.session, ctx.caller.merchant_id, ctx.caller.environment, "customer.created.v0", data)
    await ctx.session.commit()
    return CreateCustomerOut(customer_id=customer.id, valid_tax_address=ValidTaxAddress.of(address))


@router.get("", response_model=ListResponse[CustomerOut])
async def list_customers(
    ctx: Context,
    page: Paging,
    organization_id: Annotated[str, Query(alias="organizationId", description="The caller's organization.")],
    name: Annotated[str | None, Query(min_length=3, max_length=255)] = None,
    email: Annotated[str | None, Query(min_length=3, max_length=255)] = None,
    external_id: Annotated[str | None, Query(alias="externalId", max_length=255)] = None,
) -> ListResponse[CustomerOut]:
    ctx.caller.require_merchant(organization_id, field="organizationId")
    query = ctx.scoped(Customer).join(Organization, Organization.id == Customer.consumer_id)
    if name is not None:
        query = query.where(contains(Organization.name, name))
    if email is not None:
        query = query.where(contains(Organization.email, email))
    if external_id is not None:
        query = query.where(Customer.external_id == external_id)
    rows, total = await ctx.page(query, page, Customer.created_at, Customer.id)
    consumers = await consumers_of(ctx.session, rows)
    caller = ctx.caller
    found = await wallets_of(ctx.session, caller.merchant_id, caller.environment, [r.id for r in rows])
    items = [CustomerOut.of(r, consumers[r.consumer_id], found[r.id]) for r in rows]
    return list_envelope(items, page, total)


@router.get("/{id}", response_model=CustomerOut)
async def get_customer(id: str, ctx: Context) -> CustomerOut:
    row = await ctx.owned(Customer, id, "Customer")
    found = await wallets_of(ctx.session, row.merchant_id, row.environment, [row.id])
    return CustomerOut.of(row, (await consumers_of(ctx.session, [row]))[row.consumer_id], found[row.id])


@router.patch("/{id}", response_model=CustomerOut)
async def update_customer(id: str, body: CustomerUpdate, ctx: Context) -> CustomerOut:
    row = await ctx.owned(Customer, id, "Customer")
    fields = changes(body, nullable=frozenset({"tax_id", "external_id"}))
    if "tax_rates" in fields:
        rates = fields["tax_rates"]
        rates = rates if isinstance(rates, dict) else {"default": rates}
        await check_rate_keys(ctx, rates)
        row.tax_rates = store_rates(rates)
    if "notification_settings" in fields:
        patch = fields["notification_settings"]
        for name in patch.model_fields_set:
            if getattr(patch, name) is None:
                raise invalid(f"notificationSettings.{to_camel(name)}", "must be true or false")
        given = patch.model_dump(by_alias=True, exclude_unset=True)
        row.notification_settings = DEFAULT_NOTIFICATIONS | (row.notification_settings or {}) | given
    if "tax_id" in fields:
        row.tax_id = fields["tax_id"]
    if "external_id" in fields:
        row.external_id = fields["external_id"]
    await ctx.commit_or_conflict(external_id_taken(fields.get("external_id")))
    await ctx.session.refresh(row)
    found = await wallets_of(ctx.session, row.merchant_id, row.environment, [row.id])
    return CustomerOut.of(row, (await consumers_of(ctx.session, [row]))[row.consumer_id], found[row.id])


Blocker = dict[str, Any]
BlockerQuery = Callable[[AsyncSession, Customer], Awaitable[Blocker | None]]


async def _subscriptions(session: AsyncSession, customer: Customer) -> Blocker | None:
    # Terminated ones too: they keep the customer's invoices and history, so the row must stay.
    rows = list(
        await session.execute(
            select(Subscription.id, Subscription.status)
            .where(Subscription.customer_id == customer.id)
            .order_by(Subscription.created_at)
        )
    )
    if not rows:
        return None
    return {
        "type": "subscriptions",
        "count": len(rows),
        "items": [{"id": i, "status": st} for i, st in rows[:10]],
    }


# What keeps a customer from being deleted: one query per kind of dependent object, each returning
# {"type": "subscriptions", "count": n, "items": [{"id", "status"}]} or None. Usage events, entitlements and
# wallets need a subscription, so the first query covers them.
BLOCKERS: list[BlockerQuery] = [_subscriptions]


async def _disputes(session: AsyncSession, customer: Customer) -> Blocker | None:
    return await disputes.pending_blocker(session, customer.id)  # pending ones: a resolved dispute is history


BLOCKERS.append(_disputes)


async def _payments(session: AsyncSession, customer: Customer) -> Blocker | None:
    return await payments.customer_blocker(session, customer.id)  # one-off payments of any status


BLOCKERS.append(_payments)


@router.delete("/{id}", status_code=204, response_class=Response)
async def delete_customer(id: str, ctx: Context) -> Response:
    # Row lock: whatever later attaches to a customer (a subscription) must wait for this delete to settle.
    row = await ctx.session.get(Customer, id, with_for_update=True)
    if row is None or (row.merchant_id, row.environment) != (ctx.caller.merchant_id, ctx.caller.environment):
        raise not_found("Customer", id)
    blockers = [b for query in BLOCKERS if (b := await query(ctx.session, row)) is not None]
    if blockers:
        kinds = ", ".join(b["type"] for b in blockers)
        raise conflict(
            f"Customer {id!r} cannot be deleted while it has {kinds}; resolve them first",
            {"blockers": blockers},
        )
    # The consumer organization stays: it is found again by email if the merchant re-creates the customer.
    await ctx.session.delete(row)
    await ctx.session.commit()
    return Response(status_code=204)


async def managed_consumer(ctx: Ctx, consumer_id: str) -> Organization:
    org = await ctx.session.get(Organization, consumer_id)
    if (
        org is None
        or org.kind != "consumer"
        or org.owner_merchant_id != ctx.caller.merchant_id
        or org.environment != ctx.caller.environment
    ):
        raise forbidden(f"consumerId {consumer_id!r} is not a managed consumer of this merchant")
    return org


async def consumers_of(session: AsyncSession, rows: list[Customer]) -> dict[str, Organization]:
    ids = {r.consumer_id for r in rows}
    if not ids:
        return {}
    return {o.id: o for o in await session.scalars(select(Organization).where(Organization.id.in_(ids)))}


def external_id_taken(external_id: str | None) -> ApiError:
    return conflict(f"externalId {external_id!r} is already used by another customer of this merchant")
