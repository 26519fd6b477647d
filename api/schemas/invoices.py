"""Wire shapes of /v2/invoices: invoices, their line items (invoice view and billing view), manual lines."""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Annotated, Any, Literal

from pydantic import Strict, StringConstraints, model_serializer
from pydantic.functional_serializers import SerializerFunctionWrapHandler

from api.wire import Id, Name, Timestamp, UtcDatetime, WireModel
from db.invoice_totals import Totals
from db.models import BillableMetric, Fee, Invoice, LineItem
from domain.money import format_amount, format_money, round_money
from domain.status import INVOICE_PAYABLE

# What the payer still owes exists only once the invoice is issued and until it is settled.
OWING_STATUSES: frozenset[str] = INVOICE_PAYABLE

_WIDE = Context(prec=80)


def exact(amount: Decimal, currency: str) -> str:
    """An exact amount (unit prices, unbilled lines): never fewer places than the currency has, and no
    trailing zeros beyond them ("0.000012", "49.00")."""
    rounded = round_money(amount, currency)
    if rounded == amount:
        return format_amount(rounded)
    return format_amount(amount.normalize(context=_WIDE))


def plain(amount: Decimal) -> str:
    """A quantity as written: "2", "0.5", "1500" (no currency padding, no exponent)."""
    return format_amount(amount.normalize(context=_WIDE))


def number(amount: Decimal) -> int | float:
    """A JSON number for fields the contract types as number (quantities, tax rates)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _drop_none(keys: tuple[str, ...], data: dict[str, Any]) -> dict[str, Any]:
    # Deleting the few keys in place, not copying every other key: a /v2/invoices page runs this 100 times.
    for key in keys:
        if key in data and data[key] is None:
            del data[key]
    return data


class InvoiceLineItemOut(WireModel):
    event_type: str
    event_id: str
    event_source_id: str
    billable_metric_id: str
    invoice_display_name: str
    line_item_type: Literal["charge", "refund"]
    meter_event_id: str
    metric_name: str
    metric_description: str
    metric_unit: str
    quantity: int | float
    unit_price: str
    total_price: str
    total_tax: str
    total_amount: str
    tax_rate: int | float
    price_id: str | None
    period_start: Timestamp
    period_end: Timestamp
    payment_term: str | None

    @classmethod
    def of(cls, row: LineItem, source: BillableMetric | Fee | None) -> InvoiceLineItemOut:
        price = round_money(row.subtotal, row.currency)
        tax = round_money(row.tax_total, row.currency)
        total = price + tax
        if isinstance(source, BillableMetric):
            name, description, unit = source.name, source.description, source.unit
        elif isinstance(source, Fee):
            name, description, unit = source.name, source.description, "charge"
        else:
            name, description, unit = row.display_name, row.description or "", "charge"
        source_id = row.billable_metric_id or row.fee_id or row.id
        quantity = row.quantity if row.quantity is not None else row.metered_quantity
        return cls(
            event_type={"metered": "usage", "discount": "discount"}.get(row.type, "fee"),
            event_id=row.id,
            event_source_id=source_id,
            billable_metric_id=source_id,
            invoice_display_name=row.display_name,
            line_item_type="refund" if total < 0 else "charge",
            meter_event_id="",
            metric_name=name,
            metric_description=description,
            metric_unit=unit,
            quantity=number(quantity if quantity is not None else Decimal(0)),
            unit_price=exact(row.unit_price, row.currency),
            total_price=format_amount(price),
            total_tax=format_amount(tax),
            total_amount=format_amount(total),
            tax_rate=number(row.tax_rate),
            price_id=row.price_id,
            period_start=row.period_start,
            period_end=row.period_end,
            payment_term=row.payment_term,
        )


class InvoiceLineItemsOut(WireModel):
    invoice_id: str
    line_items: list[InvoiceLineItemOut]
    total_count: int
    next_page_token: str | None


class InvoiceOut(WireModel):
    id: str
    object: Literal["invoice"] = "invoice"
    merchant_id: str
    subscription_id: str
    customer_id: str
    currency: str
    billing_anchor: Timestamp
    billing_cadence: str
    sequence_number: int
    period_start: Timestamp
    period_end: Timestamp
    grace_period_end: Timestamp
    status: str
    auto_approve: bool
    item_count: int
    subtotal: str
    total_tax: str
    grand_total: str
    paid_amount: str
    unpaid_amount: str
    invoice_number: str | None
    issued_at: Timestamp | None
    paid_at: Timestamp | None
    payment_url: str | None = None
    metadata: dict[str, Any]
    line_items: InvoiceLineItemsOut | None = None
    created_at: Timestamp
    updated_at: Timestamp

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The contract says these keys are present only when they apply, so absent means "does not apply".
        return _drop_none(("paymentUrl", "payment_url", "lineItems", "line_items"), handler(self))

    @classmethod
    def of(
        cls, row: Invoice, totals: Totals, base_url: str, line_items: InvoiceLineItemsOut | None = None
    ) -> InvoiceOut:
        currency = row.currency
        grand_total = round_money(totals.grand_total, currency)
        paid = round_money(row.paid_amount, currency)
        unpaid = max(grand_total - paid, Decimal(0)) if row.status in OWING_STATUSES else Decimal(0)
        payment_url = None
        if row.status == "ISSUED" and unpaid > 0 and row.payment_session_id:
            payment_url = f"{base_url}/checkout/{row.payment_session_id}"
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            subscription_id=row.subscription_id,
            customer_id=row.customer_id,
            currency=currency,
            billing_anchor=row.billing_anchor,
            billing_cadence=row.billing_cadence,
            sequence_number=row.sequence_number,
            period_start=row.period_start,
            period_end=row.period_end,
            grace_period_end=row.grace_period_end,
            status=row.status,
            auto_approve=row.auto_approve,
            item_count=totals.item_count,
            subtotal=format_money(totals.subtotal, currency),
            total_tax=format_money(totals.total_tax, currency),
            grand_total=format_amount(grand_total),
            paid_amount=format_amount(paid),
            unpaid_amount=format_money(unpaid, currency),
            invoice_number=row.invoice_number,
            issued_at=row.issued_at,
            paid_at=row.paid_at,
            payment_url=payment_url,
            metadata=row.metadata_ or {},
            line_items=line_items,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


# ---- billing line items (/v2/invoices/lineItems) ---------------------------------------------------------


class LineItemOut(WireModel):
    id: str
    subscription_id: str
    customer_id: str
    invoice_id: str | None
    price_id: str | None
    type: str
    status: str
    display_name: str
    description: str | None
    currency: str
    period_start: Timestamp
    period_end: Timestamp
    invoice_at: Timestamp
    payment_term: str | None
    quantity: str | None
    metered_quantity: str | None
    unit_price: str
    subtotal: str
    taxes_total: str | None
    total: str
    calculated_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: LineItem, customer_id: str) -> LineItemOut:
        currency = row.currency
        calculated = row.calculated_at is not None
        return cls(
            id=row.id,
            subscription_id=row.subscription_id,
            customer_id=customer_id,
            invoice_id=row.invoice_id,
            price_id=row.price_id,
            type=row.type,
            status=row.status,
            display_name=row.display_name,
            description=row.description,
            currency=currency,
            period_start=row.period_start,
            period_end=row.period_end,
            invoice_at=row.invoice_at,
            payment_term=row.payment_term,
            quantity=plain(row.quantity) if row.quantity is not None else None,
            metered_quantity=plain(row.metered_quantity) if row.metered_quantity is not None else None,
            unit_price=exact(row.unit_price, currency),
            subtotal=exact(row.subtotal, currency),
            taxes_total=exact(row.tax_total, currency) if calculated else None,
            total=exact(row.total, currency),
            calculated_at=row.calculated_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class LineItemsSummary(WireModel):
    fee_subtotal: str
    metered_estimated_subtotal: str
    currency: str


class LineItemsOut(WireModel):
    object: Literal["list"] = "list"
    data: list[LineItemOut]
    total_count: int
    summary: LineItemsSummary


Description = Annotated[str, Strict(), StringConstraints(max_length=1000)]
IdempotencyKey = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]


class ManualLineItemCreate(WireModel):
    """JSON numbers for quantity and unitPrice, as the SDK sends them; the router makes them Decimals."""

    subscription_id: Id | None = None
    invoice_id: Id | None = None
    display_name: Name
    description: Description | None = None
    currency: Annotated[str, Strict()]
    quantity: Annotated[float, Strict()]
    unit_price: Annotated[float, Strict()]
    invoice_at: UtcDatetime | None = None
    period_start: UtcDatetime | None = None
    period_end: UtcDatetime | None = None
    idempotency_key: IdempotencyKey | None = None
