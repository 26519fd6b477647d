"""Invoices (v2): reads of period invoices and their lines, and manual line items.

Invoices are written by the subscription workflows; the API only reads them, except that a merchant may add
manual lines to an open period (ACTIVE or CLOSING invoice), idempotently per subscription and key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert

from api.deps import Context as ApiContext
from api.deps import Ctx, Page
from api.problems import ApiError, conflict, forbidden, invalid, not_found
from api.schemas.invoices import (
    InvoiceLineItemOut,
    InvoiceLineItemsOut,
    InvoiceOut,
    LineItemOut,
    LineItemsOut,
    LineItemsSummary,
    ManualLineItemCreate,
)
from api.wire import ListResponse, list_envelope
from db import invoice_totals
from db.invoice_totals import LiveInvoice
from db.models import BillableMetric, Fee, Invoice, LineItem, Plan, Subscription, TestClock
from domain.ids import new_id
from domain.money import (
    MAX_INTEGER_DIGITS,
    MoneyFormatError,
    format_amount,
    is_currency_code,
    parse_decimal,
    round_money,
)
from domain.status import INVOICE_OPEN_FOR_LINES, InvoiceStatus

router = APIRouter(prefix="/v2/invoices", tags=["invoices"])

MAX_LINE_PAGE = 1000
MAX_OFFSET = 10_000
# Manual lines may join an invoice only while its period can still take charges.
OPEN_FOR_LINES: frozenset[str] = INVOICE_OPEN_FOR_LINES
_WIDE = Context(prec=80)


def invoice_paging(
    limit: Annotated[int, Query(ge=1, le=100, description="Invoices to return (1–100).")] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Invoices to skip.")] = 0,
) -> Page:
    return Page(limit, offset)


def base_url(request: Request) -> str:
    url: str = request.app.state.settings.base_url
    return url


@router.get("", response_model=ListResponse[InvoiceOut])
async def list_invoices(
    request: Request,
    ctx: ApiContext,
    page: Annotated[Page, Depends(invoice_paging)],
    status: Annotated[InvoiceStatus | None, Query()] = None,
    subscription_id: Annotated[str | None, Query(alias="subscriptionId")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    merchant_id: Annotated[str | None, Query(alias="merchantId")] = None,
    next_action_at: Annotated[Literal["ready"] | None, Query(alias="nextActionAt")] = None,
) -> ListResponse[InvoiceOut]:
    if next_action_at is not None:
        raise forbidden(
            "nextActionAt=ready is the platform scheduler's work queue and is not available to merchant "
            "API keys; filter by status instead"
        )
    if merchant_id is not None:
        ctx.caller.require_merchant(merchant_id)
    query = ctx.scoped(Invoice)
    if status is not None:
        query = query.where(Invoice.status == status)
    if subscription_id is not None:
        query = query.where(Invoice.subscription_id == subscription_id)
    if customer_id is not None:
        query = query.where(Invoice.customer_id == customer_id)
    rows, total = await ctx.page(
        query, page, Invoice.created_at.desc(), Invoice.sequence_number.desc(), Invoice.id.desc()
    )
    # One pricing pass for the whole page: a live invoice's totals cost no query of its own.
    totals = await invoice_totals.current_totals_many(ctx.session, rows)
    url = base_url(request)
    return list_envelope([InvoiceOut.of(r, t, url) for r, t in zip(rows, totals, strict=True)], page, total)


# ---- billing line items: declared before /{id} so "lineItems" is not taken for an invoice id ----------


@router.get("/lineItems", response_model=LineItemsOut)
async def list_line_items(
    ctx: ApiContext,
    subscription_id: Annotated[str | None, Query(alias="subscriptionId")] = None,
    invoice_id: Annotated[str | None, Query(alias="invoiceId")] = None,
    status: Annotated[Literal["pending", "invoiced"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LINE_PAGE, description="Line items to return.")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Line items to skip.")] = 0,
) -> LineItemsOut:
    if subscription_id is None and invoice_id is None:
        raise invalid("subscriptionId", "give subscriptionId or invoiceId (or both) to choose the line items")
    if status is not None and invoice_id is not None:
        raise invalid("status", "cannot be combined with invoiceId; filter a subscription's lines by status")
    query = ctx.scoped(LineItem)
    if subscription_id is not None:
        subscription = await ctx.owned(Subscription, subscription_id, "Subscription")
        currency, customer_id = subscription.currency, subscription.customer_id
        query = query.where(LineItem.subscription_id == subscription_id)
    if invoice_id is not None:
        invoice = await ctx.owned(Invoice, invoice_id, "Invoice")
        currency, customer_id = invoice.currency, invoice.customer_id
        query = query.where(LineItem.invoice_id == invoice_id)
    if status is not None:
        query = query.where(LineItem.status == status)
    rows, total = await ctx.page(
        query, Page(limit, offset), LineItem.invoice_at, LineItem.position, LineItem.created_at, LineItem.id
    )
    amounts = await ctx.session.execute(
        query.with_only_columns(LineItem.type, LineItem.subtotal).order_by(None)
    )
    fees = metered = round_money(Decimal(0), currency)  # "0.00", not "0", when nothing matches
    for kind, subtotal in amounts:
        rounded = round_money(subtotal, currency)
        if kind == "metered":
            metered += rounded
        else:
            fees += rounded
    summary = LineItemsSummary(
        fee_subtotal=format_amount(fees), metered_estimated_subtotal=format_amount(metered), currency=currency
    )
    return LineItemsOut(
        data=[LineItemOut.of(r, customer_id) for r in rows], total_count=total, summary=summary
    )


CREATED_OR_REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {"model": LineItemOut, "description": "Replay of an idempotency key: the item created before"}
}


@router.post("/lineItems", status_code=201, response_model=LineItemOut, responses=CREATED_OR_REPLAYED)
async def create_line_item(
    body: ManualLineItemCreate,
    ctx: ApiContext,
    response: Response,
    header_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
) -> LineItemOut:
    draft = check_manual_line(body, header_key)
    target = await resolve_target(ctx, body)
    subscription = target.subscription
    # Kept as plain values: a rollback below expires the ORM objects.
    subscription_id, customer_id = subscription.id, subscription.customer_id

    existing = await find_by_key(ctx, subscription_id, draft.key)
    if existing is not None:
        response.status_code = 200
        return replay(existing, draft, customer_id)

    await require_open(ctx, target, draft)
    now = await subscription_now(ctx, subscription)
    invoice_at = now if target.invoice is not None else (draft.invoice_at or now)
    invoice = target.invoice or target.active_invoice
    if target.invoice is None and invoice is not None and invoice_at >= invoice.period_end:
        invoice = None  # due after the current period: the workflow collects it when its period opens
    position = await next_position(ctx, subscription.id, invoice.id if invoice else None)
    line_id = new_id("line_item")
    inserted = await ctx.session.scalar(
        insert(LineItem)
        .values(
            id=line_id,
            merchant_id=ctx.caller.merchant_id,
            environment=ctx.caller.environment,
            subscription_id=subscription.id,
            invoice_id=invoice.id if invoice else None,
            position=position,
            type="manual",
            status="pending",
            display_name=draft.display_name,
            description=draft.description,
            currency=draft.currency,
            period_start=draft.period_start or now,
            period_end=draft.period_end or now,
            invoice_at=invoice_at,
            quantity=draft.quantity,
            unit_price=draft.unit_price,
            subtotal=draft.subtotal,
            tax_rate=Decimal(0),
            tax_total=Decimal(0),
            total=draft.subtotal,
            idempotency_key=stored_key(draft.key),
        )
        # A concurrent request with the same key inserted first: answer as its replay.
        .on_conflict_do_nothing(index_elements=[LineItem.subscription_id, LineItem.idempotency_key])
        .returning(LineItem.id)
    )
    if inserted is None:
        await ctx.session.rollback()
        existing = await find_by_key(ctx, subscription_id, draft.key)
        if existing is None:
            raise conflict("A request with this idempotency key was being processed; retry it")
        response.status_code = 200
        return replay(existing, draft, customer_id)
    await ctx.session.commit()
    row = await ctx.session.get(LineItem, line_id)
    assert row is not None
    return LineItemOut.of(row, customer_id)


# ---- invoices -----------------------------------------------------------------------------------------


@router.get("/{id}", response_model=InvoiceOut)
async def get_invoice(
    id: str,
    request: Request,
    ctx: ApiContext,
    expand: Annotated[str | None, Query(description="Comma-separated; supports lineItems.")] = None,
    line_items_limit: Annotated[int, Query(alias="lineItemsLimit", ge=1, le=MAX_LINE_PAGE)] = 100,
    line_items_page_token: Annotated[str | None, Query(alias="lineItemsPageToken", max_length=2000)] = None,
) -> InvoiceOut:
    row = await ctx.owned(Invoice, id, "Invoice")
    expand_lines = "lineItems" in expansions(expand)
    live = await live_view(ctx, row)
    lines = None
    if expand_lines:
        lines = await line_page(ctx, row, live, line_items_limit, line_items_page_token, "lineItemsPageToken")
    totals = live.totals if live is not None else invoice_totals.stored_totals(row)
    return InvoiceOut.of(row, totals, base_url(request), lines)


@router.get("/{id}/lineItems", response_model=InvoiceLineItemsOut)
async def get_invoice_line_items(
    id: str,
    ctx: ApiContext,
    limit: Annotated[int, Query(ge=1, le=MAX_LINE_PAGE, description="Line items to return.")] = 100,
    page_token: Annotated[str | None, Query(alias="pageToken", max_length=2000)] = None,
) -> InvoiceLineItemsOut:
    row = await ctx.owned(Invoice, id, "Invoice")
    return await line_page(ctx, row, await live_view(ctx, row), limit, page_token, "pageToken")


async def live_view(ctx: Ctx, invoice: Invoice) -> LiveInvoice | None:
    """An open invoice's lines and totals so far (as its period calculation would write them)."""
    return (await invoice_totals.live_invoices(ctx.session, [invoice])).get(invoice.id)


def expansions(expand: str | None) -> set[str]:
    names = {part.strip() for part in (expand or "").split(",") if part.strip()}
    unknown = names - {"lineItems"}
    if unknown:
        raise invalid(
            "expand", f"cannot expand {', '.join(sorted(unknown))}; the only expansion is lineItems"
        )
    return names


# ---- page tokens: the invoice and the last (position, id) returned, so a page never shifts -------------


def encode_token(invoice_id: str, position: int, line_id: str) -> str:
    raw = json.dumps([invoice_id, position, line_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str, invoice_id: str, field: str) -> tuple[int, str]:
    bad = invalid(field, "is not a page token of this invoice; pass nextPageToken from the previous page")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        owner, position, line_id = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise bad from None
    if owner != invoice_id or type(position) is not int or not isinstance(line_id, str):
        raise bad
    return position, line_id


async def line_page(
    ctx: Ctx, invoice: Invoice, live: LiveInvoice | None, limit: int, token: str | None, field: str
) -> InvoiceLineItemsOut:
    """A page of the invoice's lines: its live lines while it is open (quantities so far, the same lines
    its totals count), the stored ones once frozen."""
    after = decode_token(token, invoice.id, field) if token is not None else None
    if live is not None:
        total: int | None = len(live.lines)
        rows = [r for r in live.lines if after is None or (r.position, r.id) > after][: limit + 1]
    else:
        on_invoice = select(LineItem).where(LineItem.invoice_id == invoice.id)
        total = await ctx.session.scalar(select(func.count()).select_from(on_invoice.subquery()))
        query = on_invoice
        if after is not None:
            query = query.where(tuple_(LineItem.position, LineItem.id) > tuple_(*after))
        rows = list(
            await ctx.session.scalars(query.order_by(LineItem.position, LineItem.id).limit(limit + 1))
        )
    more = len(rows) > limit
    rows = rows[:limit]
    metric_ids = {r.billable_metric_id for r in rows if r.billable_metric_id}
    fee_ids = {r.fee_id for r in rows if r.fee_id and not r.billable_metric_id}
    metrics = {
        m.id: m
        for m in await ctx.session.scalars(select(BillableMetric).where(BillableMetric.id.in_(metric_ids)))
    }
    fees = {f.id: f for f in await ctx.session.scalars(select(Fee).where(Fee.id.in_(fee_ids)))}
    items = [
        InvoiceLineItemOut.of(r, metrics.get(r.billable_metric_id or "") or fees.get(r.fee_id or ""))
        for r in rows
    ]
    last = rows[-1] if rows else None
    return InvoiceLineItemsOut(
        invoice_id=invoice.id,
        line_items=items,
        total_count=int(total or 0),
        next_page_token=encode_token(invoice.id, last.position, last.id) if more and last else None,
    )


# ---- manual line items ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManualDraft:
    key: str
    display_name: str
    description: str | None
    currency: str
    quantity: Decimal
    unit_price: Decimal
    subtotal: Decimal
    invoice_at: datetime | None
    period_start: datetime | None
    period_end: datetime | None
    invoice_id: str | None


def exact_number(value: float, field: str) -> Decimal:
    """The JSON number as the decimal the caller wrote (29.99 stays 29.99), within NUMERIC(38, 9)."""
    if not math.isfinite(value):
        raise invalid(field, "must be a finite number")
    try:
        return parse_decimal(format_amount(Decimal(repr(value))))
    except MoneyFormatError:
        raise invalid(
            field, f"must have at most 9 decimal places and {MAX_INTEGER_DIGITS} digits before the point"
        ) from None


def check_manual_line(body: ManualLineItemCreate, header_key: str | None) -> ManualDraft:
    if (body.subscription_id is None) == (body.invoice_id is None):
        raise invalid("subscriptionId", "give exactly one of subscriptionId or invoiceId")
    if header_key is not None and body.idempotency_key is not None and header_key != body.idempotency_key:
        raise invalid(
            "idempotencyKey", "differs from the Idempotency-Key header; send one key, or the same in both"
        )
    if not is_currency_code(body.currency):
        raise invalid("currency", "must be a three-letter ISO 4217 code in capitals, such as USD")
    quantity = exact_number(body.quantity, "quantity")
    if quantity <= 0:
        raise invalid("quantity", "must be greater than 0; use a negative unitPrice for a credit")
    unit_price = exact_number(body.unit_price, "unitPrice")
    subtotal = _WIDE.multiply(quantity, unit_price)
    if abs(subtotal) >= Decimal(10) ** MAX_INTEGER_DIGITS:
        raise invalid("unitPrice", f"quantity × unitPrice must stay below 10^{MAX_INTEGER_DIGITS}")
    if body.period_start and body.period_end and body.period_end < body.period_start:
        raise invalid("periodEnd", "must not be before periodStart")
    return ManualDraft(
        key=header_key or body.idempotency_key or f"auto_{secrets.token_hex(16)}",
        display_name=body.display_name,
        description=body.description,
        currency=body.currency,
        quantity=quantity,
        unit_price=unit_price,
        subtotal=subtotal,
        # invoiceAt only says when a subscription's pending line is collected; an invoice target ignores it.
        invoice_at=body.invoice_at if body.invoice_id is None else None,
        period_start=body.period_start,
        period_end=body.period_end,
        invoice_id=body.invoice_id,
    )


@dataclass
class Target:
    subscription: Subscription
    invoice: Invoice | None  # the invoice named in the request
    active_invoice: Invoice | None  # with subscriptionId: the subscription's open period, if any


async def locked_invoice(ctx: Ctx, query: Any) -> Invoice | None:
    # FOR SHARE: the workflow's status change waits for this request, so a line never joins an invoice
    # that has just started calculating.
    row: Invoice | None = await ctx.session.scalar(query.with_for_update(read=True))
    return row


async def resolve_target(ctx: Ctx, body: ManualLineItemCreate) -> Target:
    if body.invoice_id is not None:
        invoice = await locked_invoice(ctx, ctx.scoped(Invoice).where(Invoice.id == body.invoice_id))
        if invoice is None:
            raise not_found("Invoice", body.invoice_id)
        subscription = await ctx.session.get(Subscription, invoice.subscription_id)
        assert subscription is not None
        return Target(subscription, invoice, None)
    assert body.subscription_id is not None
    subscription = await ctx.owned(Subscription, body.subscription_id, "Subscription")
    # FOR SHARE on the subscription: open_period holds it FOR UPDATE while it creates the next invoice and
    # collects the waiting lines, so either that invoice is committed before this reads the active one, or
    # open_period waits for this line. A line is never left waiting a whole period it belongs to.
    await ctx.session.refresh(subscription, with_for_update={"read": True})
    active = await locked_invoice(
        ctx,
        select(Invoice)
        .where(Invoice.subscription_id == subscription.id, Invoice.status == "ACTIVE")
        .order_by(Invoice.sequence_number.desc())
        .limit(1),
    )
    return Target(subscription, None, active)


async def require_open(ctx: Ctx, target: Target, draft: ManualDraft) -> None:
    subscription = target.subscription
    plan = await ctx.session.get(Plan, subscription.plan_id)
    if plan is None or plan.billing_version != 1:
        raise ApiError(
            422,
            f"subscription {subscription.id} is on a billingVersion 0 (Legacy) plan; manual line items "
            "need a billingVersion 1 plan",
        )
    # A terminated subscription's final invoice may still be CLOSING: it can be named directly.
    if target.invoice is None and subscription.status == "terminated":
        raise conflict(
            f"subscription {subscription.id} is terminated; add the line to its final invoice by invoiceId "
            "while that invoice is still CLOSING"
        )
    if target.invoice is not None and target.invoice.status not in OPEN_FOR_LINES:
        raise conflict(
            f"invoice {target.invoice.id} is {target.invoice.status}; manual line items can only be added "
            "to an ACTIVE or CLOSING invoice",
            details={"status": target.invoice.status},
        )
    currency = target.invoice.currency if target.invoice is not None else subscription.currency
    if draft.currency != currency:
        what = (
            f"invoice {target.invoice.id}"
            if target.invoice is not None
            else f"subscription {subscription.id}"
        )
        raise ApiError(422, f"currency {draft.currency} does not match the {currency} of {what}")


async def subscription_now(ctx: Ctx, subscription: Subscription) -> datetime:
    """A subscription bound to a test clock lives at the clock's time."""
    if subscription.test_clock_id is not None:
        clock = await ctx.session.get(TestClock, subscription.test_clock_id)
        if clock is not None:
            return clock.current_time
    return datetime.now(UTC)


async def next_position(ctx: Ctx, subscription_id: str, invoice_id: str | None) -> int:
    query = select(func.max(LineItem.position)).where(LineItem.subscription_id == subscription_id)
    query = query.where(LineItem.invoice_id == invoice_id if invoice_id else LineItem.invoice_id.is_(None))
    highest = await ctx.session.scalar(query)
    return 0 if highest is None else highest + 1


def stored_key(key: str) -> str:
    """The caller's key in its own namespace: generated lines share the (subscription, key) constraint."""
    stored = f"manual:{key}"
    return stored if len(stored) <= 255 else f"manual:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


async def find_by_key(ctx: Ctx, subscription_id: str, key: str) -> LineItem | None:
    row: LineItem | None = await ctx.session.scalar(
        select(LineItem).where(
            LineItem.subscription_id == subscription_id, LineItem.idempotency_key == stored_key(key)
        )
    )
    return row


def replay(row: LineItem, draft: ManualDraft, customer_id: str) -> LineItemOut:
    """The item an earlier request with this key created, if this request asks for the same item."""
    given: dict[str, tuple[Any, Any]] = {
        "displayName": (row.display_name, draft.display_name),
        "description": (row.description, draft.description),
        "currency": (row.currency, draft.currency),
        "quantity": (row.quantity, draft.quantity),
        "unitPrice": (row.unit_price, draft.unit_price),
    }
    # Fields left to their defaults ("now") are not compared: a retry cannot repeat the first request's now.
    optional = {
        "invoiceId": (row.invoice_id, draft.invoice_id),
        "invoiceAt": (row.invoice_at, draft.invoice_at),
        "periodStart": (row.period_start, draft.period_start),
        "periodEnd": (row.period_end, draft.period_end),
    }
    given |= {name: pair for name, pair in optional.items() if pair[1] is not None}
    differing = sorted(name for name, (stored, asked) in given.items() if stored != asked)
    if row.type != "manual" or differing:
        raise conflict(
            f"idempotency key {draft.key!r} was already used for a different line item"
            + (f" (differs in {', '.join(differing)})" if differing else ""),
            details={"lineItemId": row.id, "differingFields": differing},
        )
    return LineItemOut.of(row, customer_id)
