"""What a subscription owes for a period: the plan's prices turned into charge lines, priced and taxed.

Used by the API when it creates Invoice 0 and by the period activities when an invoice is calculated. The
math lives in domain/ (pricing, aggregation, tax, invoice); this module reads the rows it needs and writes
the line items and the invoice totals, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, any_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import usage as usage_rows
from db.meter_queries import UsageQuery, period_usages
from db.models import BillableMetric, Customer, Fee, Invoice, LineItem, Plan, PlanPrice, Price, Subscription
from domain import invoice as invoice_math
from domain import tax
from domain.durations import parse_duration
from domain.ids import new_id
from domain.money import EXACT
from domain.periods import period_bounds, period_index_at, period_start
from domain.pricing import PeriodUsage, model_for


@dataclass
class PlanPriceRow:
    price: Price
    metric: BillableMetric | None
    fee: Fee | None


@dataclass
class Charge:
    """One line to bill, before tax and rounding."""

    kind: str  # fee | metered
    price: Price | None  # None: a wallet top-up (db/funding.py), priced by nothing and never taxed
    display_name: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    period_start: datetime
    period_end: datetime
    metric_id: str | None = None
    fee_id: str | None = None
    metered_quantity: Decimal | None = None
    payment_term: str | None = None
    key: str | None = None  # the line's idempotency key, when not `<invoice id>:<position>`
    taxable: bool = True

    @classmethod
    def priced(
        cls,
        kind: str,
        price: Price,
        usage: PeriodUsage,
        start: datetime,
        end: datetime,
        *,
        payment_term: str,
        metric_id: str | None = None,
        fee_id: str | None = None,
    ) -> Charge:
        """`price` priced by its model over `usage`, billing the service period [start, end)."""
        priced = model_for(price.model).price_period(price.properties, usage)
        return cls(
            kind=kind,
            price=price,
            display_name=price.invoice_display_name,
            quantity=priced.quantity,
            unit_price=priced.unit_price,
            amount=priced.amount,
            period_start=start,
            period_end=end,
            metric_id=metric_id,
            fee_id=fee_id,
            metered_quantity=usage.quantity if metric_id is not None else None,
            payment_term=payment_term,
        )


@dataclass
class BillingContext:
    subscription: Subscription
    plan: Plan
    customer: Customer
    prices: list[PlanPriceRow] = field(default_factory=list)


async def load_context(
    session: AsyncSession,
    subscription: Subscription,
    plan: Plan | None = None,
    customer: Customer | None = None,
) -> BillingContext:
    """The subscription's plan, customer and plan prices; pass the plan and customer when already loaded."""
    if plan is None:
        plan = await session.get_one(Plan, subscription.plan_id)
    if customer is None:
        customer = await session.get_one(Customer, subscription.customer_id)
    prices = await _plan_prices(session, [plan.id])
    return BillingContext(subscription, plan, customer, prices[plan.id])


def among(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """`column IN values` with the values as one array parameter: a /v2/invoices page's 100 ids, bound and
    rendered as 100 parameters, cost more Python than the rows the query returns."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


async def load_contexts(
    session: AsyncSession,
    subscriptions: Sequence[Subscription],
    customers: Mapping[str, Customer] | None = None,
) -> list[BillingContext]:
    """load_context of many subscriptions (a /v2/invoices page) in three queries (two with `customers`,
    the subscriptions' customers by id, when the caller loaded them with the subscriptions)."""
    plan_ids = {s.plan_id for s in subscriptions}
    plans = {p.id: p for p in await session.scalars(select(Plan).where(among(Plan.id, plan_ids)))}
    if customers is None:
        customer_ids = {s.customer_id for s in subscriptions}
        customers = {
            c.id: c for c in await session.scalars(select(Customer).where(among(Customer.id, customer_ids)))
        }
    prices = await _plan_prices(session, list(plan_ids))
    return [
        BillingContext(s, plans[s.plan_id], customers[s.customer_id], prices[s.plan_id])
        for s in subscriptions
    ]


async def _plan_prices(session: AsyncSession, plan_ids: Sequence[str]) -> dict[str, list[PlanPriceRow]]:
    rows = await session.execute(
        select(PlanPrice.plan_id, Price, BillableMetric, Fee)
        .join(PlanPrice, PlanPrice.price_id == Price.id)
        .outerjoin(BillableMetric, BillableMetric.id == Price.billable_metric_id)
        .outerjoin(Fee, Fee.id == Price.fee_id)
        .where(among(PlanPrice.plan_id, plan_ids))
        .order_by(PlanPrice.plan_id, PlanPrice.position)
    )
    prices: dict[str, list[PlanPriceRow]] = {plan_id: [] for plan_id in plan_ids}
    for plan_id, price, metric, fee in rows:
        prices[plan_id].append(PlanPriceRow(price, metric, fee))
    return prices


def fee_is_due(row: PlanPriceRow, anchor: datetime, start: datetime, *, first_period: bool) -> bool:
    """A one-time (P0D) fee is due in the first period only; a recurring one at each of its own cadence's
    boundaries, counted from the subscription's anchor (a P1Y fee on a monthly plan: every 12th period)."""
    cadence = parse_duration(row.price.billing_cadence or "P0D")
    if cadence.is_zero:
        return first_period
    return period_start(anchor, cadence, period_index_at(anchor, cadence, start)) == start


def fee_charges(
    ctx: BillingContext, term: str, start: datetime, end: datetime, *, first_period: bool
) -> list[Charge]:
    """The fee prices with payment term `term` due for the service period [start, end)."""
    charges = []
    for row in ctx.prices:
        price = row.price
        if row.fee is None or price.payment_term != term:
            continue
        if not fee_is_due(row, ctx.subscription.billing_anchor, start, first_period=first_period):
            continue
        one = PeriodUsage(quantity=Decimal(1))
        charges.append(Charge.priced("fee", price, one, start, end, payment_term=term, fee_id=row.fee.id))
    return charges


def metered_queries(
    ctx: BillingContext, start: datetime, end: datetime
) -> list[tuple[Price, BillableMetric, UsageQuery]]:
    """The in-arrears metric prices with the UsageQuery each asks of the aggregation engine."""
    subjects = (ctx.customer.id,) + ((ctx.customer.external_id,) if ctx.customer.external_id else ())
    return [
        (
            row.price,
            row.metric,
            UsageQuery(
                merchant_id=ctx.subscription.merchant_id,
                environment=ctx.subscription.environment,
                event_type=row.metric.event_type,
                subjects=subjects,
                start=max(start, row.metric.event_from) if row.metric.event_from is not None else start,
                end=end,
                aggregation=row.metric.aggregation,
                value_property=row.metric.value_property,
                rule=model_for(row.price.model).record_rule(row.price.properties),
            ),
        )
        for row in ctx.prices
        if row.metric is not None and row.price.payment_term == "in_arrears" and row.metric.event_type
    ]


async def metered_charges(
    session: AsyncSession, ctx: BillingContext, start: datetime, end: datetime
) -> list[Charge]:
    """In-arrears metric prices over [start, end): each metric's aggregation of the customer's events (D4),
    and the per-record sums its price model's RecordRule asks for, in one query; priced by the model."""
    (charges,) = await metered_charges_many(session, [(ctx, start, end)])
    return charges


async def metered_charges_many(
    session: AsyncSession, periods: Sequence[tuple[BillingContext, datetime, datetime]]
) -> list[list[Charge]]:
    """metered_charges of many (context, start, end) periods with one aggregation round trip."""
    plans = [(metered_queries(ctx, start, end), start, end) for ctx, start, end in periods]
    usages = iter(await period_usages(session, [q for metered, _, _ in plans for _, _, q in metered]))
    # Legacy (billingVersion 0) plans also bill the period's in-arrears usage events (D4, db/usage.py).
    legacy = [i for i, (ctx, _, _) in enumerate(periods) if ctx.plan.billing_version == 0]
    events = await usage_rows.arrears_usages(
        session, [(periods[i][0].subscription.id, periods[i][1], periods[i][2]) for i in legacy]
    )
    arrears = dict(zip(legacy, events, strict=True))
    result = []
    for n, ((metered, start, end), (ctx, _, _)) in enumerate(zip(plans, periods, strict=True)):
        from_events = arrears.get(n, {})
        if not from_events:
            charges = []
            for price, metric, _ in metered:
                charges.append(
                    Charge.priced(
                        "metered",
                        price,
                        next(usages),
                        start,
                        end,
                        payment_term="in_arrears",
                        metric_id=metric.id,
                    )
                )
            result.append(charges)
            continue
        from_meters = {price.id: next(usages) for price, _, _ in metered}
        charges = []
        for row in ctx.prices:  # plan order; a metric without an eventType bills its usage events alone
            price, billed_metric = row.price, row.metric
            if billed_metric is None or price.payment_term != "in_arrears":
                continue
            if price.id not in from_meters and price.id not in from_events:
                continue
            usage = usage_rows.with_usage_events(from_meters.get(price.id), from_events.get(price.id))
            charges.append(
                Charge.priced(
                    "metered", price, usage, start, end, payment_term="in_arrears", metric_id=billed_metric.id
                )
            )
        result.append(charges)
    return result


def tax_rate(
    subscription: Subscription, plan: Plan, customer: Customer, metric_id: str | None, fee_id: str | None
) -> Decimal:
    """The tax percent for a line of this subscription (precedence in domain.tax.effective_rate)."""
    rates = {k: Decimal(str(v)) for k, v in customer.tax_rates.items()} if customer.tax_rates else None
    return tax.effective_rate(
        tax_exempt=subscription.tax_exempt,
        customer_rates=rates,
        metric_id=metric_id,
        fee_id=fee_id,
        plan_id=plan.id,
        plan_default_rate=plan.default_tax_rate,
    )


async def period_charges(session: AsyncSession, ctx: BillingContext, invoice: Invoice) -> list[Charge]:
    """What period invoice n bills (D11): period n's in-arrears usage and fees, plus period n+1's
    in-advance fees unless it is the final invoice."""
    (charges,) = await period_charges_many(session, [(ctx, invoice)])
    return charges


async def period_charges_many(
    session: AsyncSession, invoices: Sequence[tuple[BillingContext, Invoice]]
) -> list[list[Charge]]:
    """period_charges of many invoices (a /v2/invoices page) with one aggregation round trip."""
    periods = [(ctx, invoice.period_start, invoice.period_end) for ctx, invoice in invoices]
    metered = await metered_charges_many(session, periods)
    return [m + _period_fees(ctx, invoice) for (ctx, invoice), m in zip(invoices, metered, strict=True)]


def _period_fees(ctx: BillingContext, invoice: Invoice) -> list[Charge]:
    sub = ctx.subscription
    start, end = invoice.period_start, invoice.period_end
    first = invoice.sequence_number == 1
    charges = fee_charges(ctx, "in_arrears", start, end, first_period=first)
    # A termination inside this invoice's grace window cut the next period short, not this one: that period
    # had begun, so its in-advance fees are due. Only a termination at or before periodEnd ends the billing.
    ended = sub.terminated_at is not None and sub.terminated_at <= end
    in_advance = any(row.fee is not None and row.price.payment_term == "in_advance" for row in ctx.prices)
    if in_advance and not (invoice.is_final or ended):
        cadence = parse_duration(sub.billing_cadence)
        next_start, next_end = period_bounds(sub.billing_anchor, cadence, invoice.sequence_number)
        charges += fee_charges(ctx, "in_advance", next_start, next_end, first_period=False)
    return charges


async def manual_lines(session: AsyncSession, invoice: Invoice) -> list[LineItem]:
    return (await manual_lines_many(session, [invoice]))[invoice.id]


async def manual_lines_many(session: AsyncSession, invoices: Sequence[Invoice]) -> dict[str, list[LineItem]]:
    """Each invoice's manual lines, in invoice order, in one query."""
    lines: dict[str, list[LineItem]] = {invoice.id: [] for invoice in invoices}
    rows = await session.scalars(
        select(LineItem)
        # Refund lines of usage events (api/usage_refunds.py) are priced like manual ones.
        .where(among(LineItem.invoice_id, lines), LineItem.type.in_(("manual", "refund")))
        .order_by(LineItem.position, LineItem.created_at)
    )
    for row in rows:
        if row.invoice_id is not None:
            lines[row.invoice_id].append(row)
    return lines


def price_lines(
    ctx: BillingContext, invoice: Invoice, charges: list[Charge], manual: list[LineItem]
) -> invoice_math.InvoiceTotals:
    """Tax and round the charges and the manual lines, in that order (D13: totals are sums of lines)."""
    sub, plan = ctx.subscription, ctx.plan

    def rate(metric_id: str | None, fee_id: str | None) -> Decimal:
        return tax_rate(sub, plan, ctx.customer, metric_id, fee_id)

    inputs = [
        invoice_math.LineInput(
            key=str(i),
            description=c.display_name,
            quantity=c.quantity,
            unit_price=c.unit_price,
            amount=c.amount,
            tax_rate_percent=rate(c.metric_id, c.fee_id) if c.taxable else Decimal(0),
            tax_behavior=plan.tax_behavior,
        )
        for i, c in enumerate(charges)
    ] + [
        invoice_math.LineInput(
            key=f"m{i}",
            description=m.display_name,
            quantity=m.quantity or Decimal(0),
            unit_price=m.unit_price,
            amount=EXACT.multiply(m.quantity or Decimal(0), m.unit_price),
            tax_rate_percent=rate(None, None),
            tax_behavior=plan.tax_behavior,
        )
        for i, m in enumerate(manual)
    ]
    return invoice_math.assemble(inputs, invoice.currency)


def charge_line(
    invoice: Invoice, position: int, charge: Charge, line: invoice_math.PricedLine, at: datetime
) -> LineItem:
    """The line item a priced charge becomes at position `position`: what write_invoice stores, and what a
    live invoice lists before it is written (a transient row, id = its idempotency key, still pending)."""
    key = charge.key or f"{invoice.id}:{position}"
    return LineItem(
        id=key,
        merchant_id=invoice.merchant_id,
        environment=invoice.environment,
        subscription_id=invoice.subscription_id,
        invoice_id=invoice.id,
        position=position,
        type=charge.kind,
        status="pending",
        price_id=charge.price.id if charge.price is not None else None,
        billable_metric_id=charge.metric_id,
        fee_id=charge.fee_id,
        display_name=charge.display_name,
        currency=invoice.currency,
        period_start=charge.period_start,
        period_end=charge.period_end,
        invoice_at=at,
        payment_term=charge.payment_term,
        quantity=charge.quantity,
        metered_quantity=charge.metered_quantity,
        unit_price=charge.unit_price,
        subtotal=line.subtotal,
        tax_rate=line.tax_rate,
        tax_total=line.tax,
        total=line.total,
        idempotency_key=key,
    )


async def write_invoice(
    session: AsyncSession, ctx: BillingContext, invoice: Invoice, charges: list[Charge], at: datetime
) -> invoice_math.InvoiceTotals:
    """Write `charges` as the invoice's generated lines, price manual lines alongside, store totals.

    Runs once per invoice: at its creation (Invoice 0) or in the transaction that moves it past CALCULATING
    (finalize_invoice, which checks the status under the row lock), so no generated lines exist before.
    """
    manual = await manual_lines(session, invoice)
    totals = price_lines(ctx, invoice, charges, manual)
    priced = totals.lines
    for position, (charge, line) in enumerate(zip(charges, priced[: len(charges)], strict=True)):
        item = charge_line(invoice, position, charge, line, at)
        item.id, item.status, item.calculated_at = new_id("line_item"), "invoiced", at
        session.add(item)
    for item, line in zip(manual, priced[len(charges) :], strict=True):
        item.status = "invoiced"
        item.subtotal, item.tax_rate, item.tax_total, item.total = (
            line.subtotal,
            line.tax_rate,
            line.tax,
            line.total,
        )
        item.calculated_at = at
    invoice.subtotal, invoice.total_tax = totals.subtotal, totals.total_tax
    invoice.grand_total = totals.grand_total
    invoice.item_count = len(priced)
    if invoice.sequence_number >= 1 and ctx.plan.billing_version == 0:
        # The in-arrears usage events this invoice billed (period_charges read them under its row lock).
        await usage_rows.mark_billed(
            session, invoice.id, invoice.subscription_id, invoice.period_start, invoice.period_end
        )
    return totals
