"""The one refund path of a usage event: PATCH /v0/usage/{id} and an accepted dispute both come here.

A refund is irreversible and gives back what the event charged:
- its instant part (debited from the wallet or a reservation) is credited back to the customer's main
  wallet by domain.ledger.refund, ledger key `refund:<usg_id>` (merchant revenue and platform fee return
  their shares);
- its in-arrears part not yet on an invoice simply stops being billed (db.usage.arrears_usages leaves
  refunded events out);
- an in-arrears part an invoice has already billed becomes a refund line (negative amount, shown as
  `lineItemType: "refund"`) on the subscription's open invoice.

Lock order: the invoices concerned (FOR SHARE, so the subscription workflow's calculation either has
finished or waits), then the usage event row (FOR UPDATE), then the ledger accounts (db.ledger.post).
Nothing here commits: the caller commits (or rolls back) together with its own writes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.problems import ApiError, not_found
from db import ledger as records
from db import usage as usage_rows
from db.models import LineItem, UsageEvent
from domain import ledger
from domain.ids import new_id
from domain.money import EXACT


def _has_arrears(event: UsageEvent) -> bool:
    return any(p.get("paymentTerm") == "in_arrears" for p in event.properties)


async def refund_usage_event(
    session: AsyncSession,
    merchant_id: str,
    environment: str,
    usage_event_id: str,
    reason: str | None,
    now: datetime,
) -> UsageEvent:
    """Refund the tenant's usage event `usage_event_id` at `now` with `reason`; returns the updated row.

    Raises api.problems.ApiError: 404 when the tenant has no such event, 422 when it is already refunded
    or its billed in-arrears part has no open invoice to carry the refund line. Commits nothing.
    """
    event = await usage_rows.get(session, merchant_id, environment, usage_event_id)
    if event is None:
        raise not_found("Usage event", usage_event_id)
    open_invoice = None
    if _has_arrears(event):
        # Invoices before the event row: the workflow locks the invoice, then marks its events billed.
        await usage_rows.period_invoice(session, event.subscription_id, event.timestamp, share=True)
        open_invoice = await usage_rows.open_invoice(session, event.subscription_id, share=True)
    event = await usage_rows.get(session, merchant_id, environment, usage_event_id, lock=True)
    assert event is not None
    if event.refunded_at is not None:
        raise ApiError(
            422,
            f"usage event {usage_event_id} was already refunded at {event.refunded_at.isoformat()}; "
            "a refund cannot be repeated or undone",
            code="ALREADY_REFUNDED",
        )
    billed = [p for p in event.properties if p.get("paymentTerm") == "in_arrears"]
    if event.invoice_id is not None and billed:
        if open_invoice is None:
            raise ApiError(
                422,
                f"usage event {usage_event_id} was billed on invoice {event.invoice_id} and the "
                f"subscription {event.subscription_id} has no open invoice to carry the refund line",
                code="NOT_REFUNDABLE",
            )
        await _refund_lines(session, event, billed, open_invoice.id, now)
    if event.transaction_id is not None:
        charge = await usage_rows.charge(session, event.transaction_id)
        posted = await records.post(
            session,
            merchant_id,
            environment,
            ledger.refund(charge),
            idempotency_key=f"refund:{event.id}",
            reference_id=event.id,
            description=f"refund of usage event {event.id}" + (f": {reason}" if reason else ""),
        )
        event.refund_transaction_id = posted.transaction_id
    event.refunded_at, event.refund_reason = now, reason
    await session.flush()
    return event


async def _refund_lines(
    session: AsyncSession,
    event: UsageEvent,
    billed: list[dict[str, object]],
    invoice_id: str,
    now: datetime,
) -> None:
    """One negative line per billed in-arrears property on the open invoice: the quantity negated at the
    unit price the event was charged at (its exact amount when it has no single unit price)."""
    highest = await session.scalar(
        select(func.max(LineItem.position)).where(
            LineItem.subscription_id == event.subscription_id, LineItem.invoice_id == invoice_id
        )
    )
    position = 0 if highest is None else highest + 1
    for n, prop in enumerate(billed):
        quantity = Decimal(str(prop["quantity"]))
        amount = Decimal(str(prop["amount"]))
        unit = Decimal(str(prop["unitPrice"])) if prop.get("unitPrice") is not None else None
        if unit is None or EXACT.multiply(quantity, unit) != amount:
            quantity, unit = Decimal(1), amount
        key = f"refund:{event.id}:{n}"
        session.add(
            LineItem(
                id=new_id("line_item"),
                merchant_id=event.merchant_id,
                environment=event.environment,
                subscription_id=event.subscription_id,
                invoice_id=invoice_id,
                position=position + n,
                # Priced by the invoice like a manual line; negative, it reads as lineItemType "refund".
                type="refund",
                status="pending",
                price_id=str(prop.get("priceId")) if prop.get("priceId") else None,
                billable_metric_id=str(prop["billableMetricId"]),
                display_name=f"Refund of usage event {event.id}",
                description=f"refund of {prop['quantity']} units billed on invoice {event.invoice_id}",
                currency=event.currency,
                period_start=event.timestamp,
                period_end=event.timestamp,
                invoice_at=now,
                payment_term="in_arrears",
                quantity=-quantity,
                unit_price=unit,
                subtotal=-EXACT.multiply(quantity, unit),
                tax_rate=Decimal(0),
                tax_total=Decimal(0),
                total=-EXACT.multiply(quantity, unit),
                idempotency_key=key,
            )
        )
