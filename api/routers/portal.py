"""Customer portal links (`POST /v0/subscriptions/{id}/portal`) and the read-only page they open.

The link is a signed claim on one subscription (api/portal_tokens.py); the page shows that subscription
only: its state, the current period's usage so far and its invoices, with a pay link for open ones.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request
from fastapi.responses import HTMLResponse
from pydantic import Strict
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api import portal_tokens
from api.app_state import settings_of
from api.checkout import PAYABLE, Checkout
from api.deps import Context, Session
from api.link_lifetime import link_expiry
from api.pages import portal as pages
from api.pages.portal_sources import SourceRow
from api.portal_access import open_portal
from api.wire import Timestamp, WireModel
from db import invoice_totals
from db.billing import load_context, metered_charges
from db.models import (
    BillableMetric,
    Customer,
    Entitlement,
    Invoice,
    LedgerEntry,
    LedgerTransaction,
    Organization,
    PaymentSession,
    Plan,
    Source,
    SourceInstallation,
    Subscription,
    TestClock,
    UsageEvent,
)
from db.subscriptions import wallets
from domain.money import from_nanos
from domain.pricing import Charge as DomainCharge
from domain.pricing import model_for

router = APIRouter(prefix="/v0/subscriptions", tags=["subscriptions"])
page_router = APIRouter(include_in_schema=False)

DEFAULT_EXPIRES_IN = "PT10M"
MAX_EXPIRES_IN = "P7D"


class PortalLinkCreate(WireModel):
    expires_in: Annotated[str, Strict()] | None = None


class SubscriptionPortalOut(WireModel):
    object: Literal["subscriptionPortal"] = "subscriptionPortal"
    url: str
    expires_at: Timestamp


@router.post("/{id}/portal", response_model=SubscriptionPortalOut)
async def generate_portal_link(
    id: str,
    ctx: Context,
    request: Request,
    # Optional: SDK 0.1.34 sends `{}`, other clients may send no body at all.
    body: Annotated[PortalLinkCreate | None, Body()] = None,
) -> SubscriptionPortalOut:
    subscription = await ctx.owned(Subscription, id, "Subscription")
    # Links live in wall-clock time, also for subscriptions on a test clock: they are real URLs. Rounded
    # up to the second the token carries, so a link never lives shorter than asked.
    now = datetime.now(UTC)
    now = now.replace(microsecond=0) + timedelta(seconds=1 if now.microsecond else 0)
    expires_at = link_expiry(
        body.expires_in if body else None, now, default=DEFAULT_EXPIRES_IN, maximum=MAX_EXPIRES_IN
    )
    settings = settings_of(request)
    claim = portal_tokens.PortalClaim(
        subscription_id=subscription.id,
        merchant_id=subscription.merchant_id,
        environment=subscription.environment,
        expires_at=expires_at,
    )
    token = portal_tokens.issue(claim, portal_tokens.signing_key(settings))
    return SubscriptionPortalOut(url=f"{settings.base_url}/portal/{token}", expires_at=expires_at)


@page_router.get("/portal/{token}", response_class=HTMLResponse)
async def portal_page(
    token: str, request: Request, session: Session, notice: str | None = None, failed: int = 0
) -> HTMLResponse:
    opened = await open_portal(token, request, session)
    if isinstance(opened, HTMLResponse):
        return opened
    claim, subscription = opened
    view = await _view(session, subscription, claim.expires_at)
    return pages.portal_page(
        replace(
            view,
            sources=await source_rows(session, subscription, f"/portal/{token}"),
            notice=notice[:1500] if notice else None,
            notice_failed=bool(failed),
        )
    )


async def _view(session: AsyncSession, sub: Subscription, link_expires_at: datetime) -> pages.PortalView:
    plan = await session.get_one(Plan, sub.plan_id)
    merchant = await session.get_one(Organization, sub.merchant_id)
    customer = await session.get_one(Customer, sub.customer_id)
    consumer = await session.get_one(Organization, customer.consumer_id)
    invoices = list(
        await session.scalars(
            select(Invoice).where(Invoice.subscription_id == sub.id).order_by(Invoice.sequence_number)
        )
    )
    active = next((i for i in invoices if i.status == "ACTIVE"), None)
    spending = await _spending(session, sub, plan)
    return pages.PortalView(
        merchant_name=merchant.name,
        customer_name=consumer.name,
        subscription_id=sub.id,
        name=sub.name,
        status=sub.status,
        plan_name=plan.name,
        started_at=sub.started_at,
        terminated_at=sub.terminated_at,
        current_period=(active.period_start, active.period_end) if active else None,
        currency=sub.currency,
        usage=await _usage(session, sub, active) if active else [],
        invoices=await _invoice_rows(session, sub, merchant.name, invoices),
        sandbox=sub.environment == "sandbox",
        link_expires_at=link_expires_at,
        spending=spending,
    )


RECENT = 10  # usage charges and wallet movements the "Track spending" section lists


async def _spending(session: AsyncSession, sub: Subscription, plan: Plan) -> pages.Spending | None:
    """The customer's wallet in the subscription's currency, its reservations and the subscription's
    latest usage charges; None for a Standard plan whose customer never had a wallet."""
    wallet = next(
        iter(await wallets(session, sub.merchant_id, sub.environment, sub.customer_id, sub.currency)), None
    )
    if wallet is None and plan.billing_version != 0:
        return None
    active = await session.scalar(
        select(func.count())
        .select_from(Entitlement)
        .where(
            Entitlement.merchant_id == sub.merchant_id,
            Entitlement.environment == sub.environment,
            Entitlement.customer_id == sub.customer_id,
            Entitlement.currency == sub.currency,
            Entitlement.status == "active",
        )
    )
    events = list(
        await session.scalars(
            select(UsageEvent)
            .where(UsageEvent.subscription_id == sub.id)
            .order_by(UsageEvent.timestamp.desc(), UsageEvent.id.desc())
            .limit(RECENT)
        )
    )
    metric_ids = {p.get("billableMetricId") for ev in events for p in ev.properties or []}
    names = dict(
        (
            await session.execute(
                select(BillableMetric.id, BillableMetric.name).where(BillableMetric.id.in_(metric_ids))
            )
        ).all()
        if metric_ids
        else []
    )
    moves = []
    if wallet is not None:
        rows = await session.execute(
            select(LedgerTransaction.created_at, LedgerTransaction.kind, LedgerEntry.amount)
            .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
            .where(LedgerEntry.account_id == wallet.id)
            .order_by(LedgerEntry.id.desc())
            .limit(RECENT)
        )
        moves = [pages.WalletMove(at, kind, from_nanos(amount)) for at, kind, amount in rows.all()]
    return pages.Spending(
        wallet_id=wallet.id if wallet else None,
        balance=from_nanos(wallet.balance if wallet else 0),
        reserved=from_nanos(wallet.reserved if wallet else 0),
        active_entitlements=int(active or 0),
        charges=[
            pages.UsageCharge(
                at=ev.timestamp,
                description=", ".join(
                    f"{_metric(names, p)} × {p.get('quantity')}" for p in ev.properties or []
                ),
                amount=ev.total_amount,
                paid_from="reservation"
                if ev.entitlement_id
                else ("wallet" if ev.instant_amount > 0 else "invoice"),
                refunded=ev.refunded_at is not None,
            )
            for ev in events
        ],
        moves=moves,
    )


def _metric(names: dict[str, str], item: dict[str, Any]) -> str:
    metric_id = str(item.get("billableMetricId", ""))
    return names.get(metric_id, metric_id)


async def _usage(session: AsyncSession, sub: Subscription, active: Invoice) -> list[pages.Usage]:
    """Each metered price's quantity so far in the current period, priced as the period invoice would."""
    ctx = await load_context(session, sub)
    units = {row.metric.id: row.metric.unit for row in ctx.prices if row.metric is not None}
    charges = await metered_charges(session, ctx, active.period_start, active.period_end)
    return [
        pages.Usage(
            name=c.display_name,
            quantity=c.metered_quantity if c.metered_quantity is not None else c.quantity,
            unit=units.get(c.metric_id or "", ""),
            rate=model_for(c.price.model).rate(
                c.price.properties, DomainCharge(c.quantity, c.unit_price, c.amount)
            ),
            amount=c.amount,
        )
        for c in charges
        if c.price is not None
    ]


async def _invoice_rows(
    session: AsyncSession, sub: Subscription, merchant_name: str, invoices: list[Invoice]
) -> list[pages.InvoiceRow]:
    now = datetime.now(UTC)
    if sub.test_clock_id is not None:
        clock = await session.get(TestClock, sub.test_clock_id)
        now = clock.current_time if clock is not None else now
    rows = []
    for invoice in invoices:
        totals = await invoice_totals.current_totals(session, invoice)
        pay_url = None
        if invoice.payment_session_id:
            payment = await session.get(PaymentSession, invoice.payment_session_id)
            if payment is not None and Checkout(payment, invoice, sub, merchant_name, now).status in PAYABLE:
                pay_url = f"/checkout/{payment.id}"
        rows.append(
            pages.InvoiceRow(
                number=invoice.invoice_number or invoice.id,
                period_start=invoice.period_start,
                period_end=invoice.period_end,
                status=invoice.status,
                total=totals.grand_total,
                pay_url=pay_url,
            )
        )
    return rows


async def source_rows(session: AsyncSession, sub: Subscription, base: str) -> list[SourceRow]:
    """The plan's enabled revenue sources, each with this subscription's latest connection."""
    sources = await session.scalars(
        select(Source).where(Source.plan_id == sub.plan_id, Source.enabled).order_by(Source.created_at)
    )
    rows = []
    for source in sources:
        latest = await session.scalar(
            select(SourceInstallation)
            .where(SourceInstallation.source_id == source.id, SourceInstallation.subscription_id == sub.id)
            .order_by(SourceInstallation.created_at.desc(), SourceInstallation.id.desc())
            .limit(1)
        )
        live = latest is not None and latest.status in ("pending", "active")
        rows.append(
            SourceRow(
                source_id=source.id,
                name=source.name,
                description=source.description,
                connect_action=f"{base}/sources/{source.id}/connect",
                installation=latest,
                disconnect_action=f"{base}/installations/{latest.id}/disconnect" if live and latest else None,
            )
        )
    return rows
