"""Plans: wire shapes, cadence mapping, and the rules for the prices a plan links."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, StrictBool, StringConstraints

from api.schemas.prices import LinkedPrice, PriceOut, Problems
from api.wire import Id, Name, Text, Timestamp, WireModel
from db.models import Plan
from domain import pricing

Cadence = Literal["P1M", "P3M", "P1Y"]
Interval = Literal["monthly", "quarterly", "yearly", "annual"]
CADENCE_OF_INTERVAL: dict[str, str] = {"monthly": "P1M", "quarterly": "P3M", "yearly": "P1Y", "annual": "P1Y"}
INTERVAL_OF_CADENCE: dict[str, str] = {"P1M": "monthly", "P3M": "quarterly", "P1Y": "yearly"}
MAX_TAX_RATE_DECIMALS = 4
MAX_PRICES = 100
MAX_REMINDER_DAYS = 30


def _tax_rate(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number: a percentage between 0 and 100, such as 8.5")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number between 0 and 100")
    # repr() is the shortest string that round-trips the JSON number, so 8.5 stays exactly 8.5.
    rate = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not Decimal(0) <= rate <= Decimal(100):
        raise ValueError("must be a percentage between 0 and 100")
    exponent = rate.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_TAX_RATE_DECIMALS:
        raise ValueError(f"must have at most {MAX_TAX_RATE_DECIMALS} decimal places")
    return rate


def _billing_version(value: object) -> int:
    if isinstance(value, bool) or value not in (0, 1) or not isinstance(value, int):
        raise ValueError("must be 0 (Legacy billing) or 1 (Standard billing)")
    return value


def _reminder_days(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REMINDER_DAYS:
        raise ValueError(f"must be a whole number of days between 1 and {MAX_REMINDER_DAYS}")
    return value


def _as_number(rate: Decimal) -> int | float:
    """Tax rates are JSON numbers on the wire; only their display leaves Decimal."""
    return int(rate) if rate == rate.to_integral_value() else float(rate)


TaxRate = Annotated[Decimal, BeforeValidator(_tax_rate)]
BillingVersion = Annotated[int, BeforeValidator(_billing_version)]
Currency = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Z]{3}$")]
TaxCode = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=32)]
ReminderDays = Annotated[int, BeforeValidator(_reminder_days)]


class PlanCreate(WireModel):
    merchant_id: Id
    name: Name
    currency: Currency
    billing_cadence: Cadence | None = None
    billing_interval: Interval | None = None
    default_tax_code: TaxCode = "eservice"
    default_tax_rate: TaxRate = Decimal(0)
    description: Text | None = None
    invoice_display_name: Name | None = None
    prices: list[Id] | None = None
    product_id: Id | None = None
    tax_behavior: Literal["exclusive", "inclusive"] = "exclusive"
    renewal_reminder_enabled: StrictBool = True
    renewal_reminder_days: ReminderDays = 3
    # SDK 0.1.34 always sends 0; without a value a new plan gets Standard billing (D3).
    billing_version: BillingVersion = 1


class PlanUpdate(WireModel):
    billing_cadence: Cadence | None = None
    billing_interval: Interval | None = None
    default_tax_code: TaxCode | None = None
    default_tax_rate: TaxRate | None = None
    description: Text | None = None
    invoice_display_name: Name | None = None
    name: Name | None = None
    prices: list[Id] | None = None
    tax_behavior: Literal["exclusive", "inclusive"] | None = None
    renewal_reminder_enabled: StrictBool | None = None
    renewal_reminder_days: ReminderDays | None = None


def cadence_of(cadence: str | None, interval: str | None) -> str | None:
    """billingCadence wins over billingInterval; None when the body named neither."""
    if cadence is not None:
        return cadence
    return CADENCE_OF_INTERVAL[interval] if interval is not None else None


def check_price_ids(price_ids: list[str]) -> None:
    out = Problems()
    if len(price_ids) > MAX_PRICES:
        out.add("prices", f"a plan links at most {MAX_PRICES} prices")
    repeated = sorted({p for p in price_ids if price_ids.count(p) > 1})
    if repeated:
        out.add("prices", f"each price may be linked once; repeated: {', '.join(repeated)}")
    out.raise_any()


def check_links(
    out: Problems,
    prices: list[LinkedPrice],
    *,
    product_id: str,
    billing_version: int,
    currency: str,
    field: str = "prices",
    plan_name: str = "this plan",
) -> None:
    """A plan's prices: its product only, each billable metric once, billing-version and currency fit."""
    seen: dict[str, str] = {}
    for price in prices:
        if price.product_id != product_id:
            out.add(
                field,
                f"price {price.id} belongs to product {price.product_id}, but {plan_name} belongs to "
                f"product {product_id}",
            )
        if price.metric is not None:
            first = seen.setdefault(price.metric.id, price.id)
            if first != price.id:
                out.add(
                    field,
                    f"billable metric {price.metric.id} may be priced once per plan, but prices {first} and "
                    f"{price.id} both price it",
                )
            if pricing.model_for(price.model).prices_money and price.metric.unit != currency:
                out.add(
                    field,
                    f"{price.model} price {price.id} charges a share of {price.metric.unit} amounts, but "
                    f"{plan_name} bills in {currency}",
                )
        if price.payment_term == "instant" and billing_version != 0:
            out.add(
                field,
                f"price {price.id} is instant, which only Legacy billing (billingVersion 0) supports; "
                f"{plan_name} uses Standard billing (billingVersion 1)",
            )


class PlanPaymentTerm(WireModel):
    # The contract spells these keys in snake_case, unlike every other key.
    instant: bool
    in_arrears: bool = Field(alias="in_arrears")
    in_advance: bool = Field(alias="in_advance")


class VersionTransition(WireModel):
    effective_date: Literal["end_of_current_period"] = "end_of_current_period"
    proration: Literal["none"] = "none"


TaxRateOut = Annotated[Decimal, PlainSerializer(_as_number, return_type=float)]


class PlanOut(WireModel):
    id: str
    object: Literal["plan"] = "plan"
    merchant_id: str
    product_id: str
    name: str
    description: str | None
    invoice_display_name: str | None
    currency: str
    billing_cadence: str
    billing_interval: str
    default_tax_code: str
    default_tax_rate: TaxRateOut
    tax_behavior: str
    renewal_reminder_enabled: bool
    renewal_reminder_days: int
    billing_version: int
    payment_term: PlanPaymentTerm
    prices: list[PriceOut]
    # Required by SDK 0.6.3; Accrue has no plan versions, so a change always waits for the period end.
    version_transition: VersionTransition = VersionTransition()
    deleted_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: Plan, prices: list[PriceOut]) -> PlanOut:
        terms = {p.payment_term for p in prices}
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            product_id=row.product_id,
            name=row.name,
            description=row.description,
            invoice_display_name=row.invoice_display_name,
            currency=row.currency,
            billing_cadence=row.billing_cadence,
            billing_interval=INTERVAL_OF_CADENCE.get(row.billing_cadence, row.billing_cadence),
            default_tax_code=row.default_tax_code,
            default_tax_rate=row.default_tax_rate,
            tax_behavior=row.tax_behavior,
            renewal_reminder_enabled=row.renewal_reminder_enabled,
            renewal_reminder_days=row.renewal_reminder_days,
            billing_version=row.billing_version,
            payment_term=PlanPaymentTerm(
                instant="instant" in terms, in_arrears="in_arrears" in terms, in_advance="in_advance" in terms
            ),
            prices=prices,
            deleted_at=row.deleted_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
