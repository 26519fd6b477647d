"""Prices: wire shapes and the rules a price must satisfy, checked on create and on the merged PATCH state."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import StrictBool

from api.problems import FieldErrors
from api.wire import Id, Name, Timestamp, WireModel
from db.models import BillableMetric, Feature, Fee, Price
from domain import pricing
from domain.money import is_currency_code

if TYPE_CHECKING:
    Model = str
else:
    # The registry's names, so the OpenAPI document lists every model and a new one needs no edit here.
    Model = Literal[pricing.NAMES]
PaymentTerm = Literal["instant", "in_advance", "in_arrears"]

# `P0D` (one time) or a positive calendar duration such as P1M, P3M, P1Y, P7D, P2W, P1Y6M.
_CADENCE = re.compile(r"^P(?=\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")
MAX_CADENCE_COUNT = 1000


class PriceFeatureIn(WireModel):
    feature_id: Id
    entitlement_template: dict[str, Any] | None = None


class PriceCreate(WireModel):
    invoice_display_name: Name
    payment_term: PaymentTerm
    # Checked against `model` by `check_price`, so errors can name the model and the exact key.
    properties: dict[str, Any]
    billable_metric_id: Id | None = None
    fee_id: Id | None = None
    model: Model | None = None
    billing_cadence: str | None = None
    feature: PriceFeatureIn | None = None
    grant_discount_enabled: StrictBool = False


class PriceUpdate(WireModel):
    billable_metric_id: Id | None = None
    invoice_display_name: Name | None = None
    model: Model | None = None
    properties: dict[str, Any] | None = None
    payment_term: PaymentTerm | None = None
    billing_cadence: str | None = None
    feature: PriceFeatureIn | None = None
    grant_discount_enabled: StrictBool | None = None


@dataclass(frozen=True)
class PriceDraft:
    """A price before it is checked: a create body, or a stored price with a PATCH applied."""

    billable_metric_id: str | None
    fee_id: str | None
    model: str | None
    payment_term: str
    properties: dict[str, Any]
    billing_cadence: str | None
    invoice_display_name: str
    grant_discount_enabled: bool
    feature_id: str | None
    entitlement_template: dict[str, Any] | None

    @classmethod
    def of_create(cls, body: PriceCreate) -> PriceDraft:
        return cls(
            billable_metric_id=body.billable_metric_id,
            fee_id=body.fee_id,
            # Fee prices only have one model, so it may be left out.
            model=body.model or (pricing.FEE_MODEL if body.fee_id and not body.billable_metric_id else None),
            payment_term=body.payment_term,
            properties=body.properties,
            billing_cadence=body.billing_cadence,
            invoice_display_name=body.invoice_display_name,
            grant_discount_enabled=body.grant_discount_enabled,
            feature_id=body.feature.feature_id if body.feature else None,
            entitlement_template=body.feature.entitlement_template if body.feature else None,
        )

    @classmethod
    def of_row(cls, row: Price) -> PriceDraft:
        return cls(
            billable_metric_id=row.billable_metric_id,
            fee_id=row.fee_id,
            model=row.model,
            payment_term=row.payment_term,
            properties=row.properties,
            billing_cadence=row.billing_cadence,
            invoice_display_name=row.invoice_display_name,
            grant_discount_enabled=row.grant_discount_enabled,
            feature_id=row.feature_id,
            entitlement_template=row.entitlement_template,
        )

    def patched(self, changes: dict[str, Any]) -> PriceDraft:
        draft = self
        for name, value in changes.items():
            if name == "billable_metric_id":
                # A price prices exactly one thing: naming a metric replaces a fee link.
                draft = replace(draft, billable_metric_id=value, fee_id=None)
            elif name == "feature":
                draft = replace(
                    draft,
                    feature_id=value.feature_id if value else None,
                    entitlement_template=value.entitlement_template if value else None,
                )
            else:
                draft = replace(draft, **{name: value})
        return draft


class Problems(pricing.Problems):
    """Field errors collected across every rule, so one response lists all of them."""

    def raise_any(self) -> None:
        if self.items:
            raise FieldErrors(self.items)


def require_one_target(metric_id: str | None, fee_id: str | None) -> None:
    if (metric_id is None) == (fee_id is None):
        message = "exactly one of billableMetricId or feeId is required"
        raise FieldErrors(
            [
                {"field": "billableMetricId", "message": message, "code": "invalid"},
                {"field": "feeId", "message": message, "code": "invalid"},
            ]
        )


def valid_cadence(value: str) -> bool:
    if value == "P0D":
        return True
    match = _CADENCE.match(value)
    if match is None:
        return False
    return all(1 <= int(n) <= MAX_CADENCE_COUNT for n in match.groups() if n is not None)


def check_properties(model: str, props: dict[str, Any], out: Problems) -> dict[str, Any]:
    """The properties `model` needs, as the caller's strings; unrelated keys are dropped."""
    return pricing.model_for(model).check(props, out)


def check_price(draft: PriceDraft, metric: BillableMetric | None) -> dict[str, Any]:
    """Every rule of a price on its own (plans add more); returns the properties to store."""
    out = Problems()
    cadence, model, term = draft.billing_cadence, draft.model, draft.payment_term
    if draft.fee_id is not None:
        if model != pricing.FEE_MODEL:
            out.add("model", f"fee prices only support the {pricing.FEE_MODEL} model, not {model!r}")
        if term == "instant":
            out.add(
                "paymentTerm",
                "instant is for billable-metric prices (Legacy billing); "
                "fee prices are in_advance or in_arrears",
            )
        if cadence is None:
            out.add(
                "billingCadence",
                "is required for fee prices: P0D for a one-time charge, or a recurring duration such as P1M",
                "missing",
            )
    else:
        if model is None:
            out.add(
                "model",
                f"is required for billable-metric prices: {pricing.names_text()}",
                "missing",
            )
        if term == "in_advance":
            message = "in_advance is for fee prices; billable-metric prices are instant or in_arrears"
            out.add("paymentTerm", message)
        if cadence == "P0D":
            out.add(
                "billingCadence",
                "P0D (one time) is for fee prices; omit billingCadence to bill usage every plan period",
            )
    if cadence is not None and not valid_cadence(cadence):
        out.add(
            "billingCadence",
            "must be P0D or an ISO 8601 duration of 1 to 1000 years, months, weeks or days, "
            "such as P1M, P3M, P1Y, P7D or P2W",
        )
    kind = pricing.MODELS.get(model) if model else None
    if draft.grant_discount_enabled and (draft.fee_id is not None or not (kind and kind.discountable)):
        discountable = pricing.names_text(tuple(m.name for m in pricing.MODELS.values() if m.discountable))
        out.add("grantDiscountEnabled", f"can only be true for {discountable} billable-metric prices")
    if kind and kind.prices_money and metric is not None and not is_currency_code(metric.unit):
        out.add(
            "model",
            f"the {model} model charges a share of a money amount, so the billable metric's unit must be "
            f"a 3-letter currency code such as USD; metric {metric.id} has unit {metric.unit!r}",
        )
    properties = check_properties(model, draft.properties, out) if model else {}
    out.raise_any()
    return properties


@dataclass(frozen=True)
class LinkedPrice:
    """What plan rules need to know about one price."""

    id: str
    product_id: str
    metric: BillableMetric | None
    model: str
    payment_term: str


class PriceFeatureDetail(WireModel):
    key: str
    name: str
    type: str


class PriceFeatureOut(WireModel):
    id: str
    feature_id: str
    entitlement_template: dict[str, Any]
    feature: PriceFeatureDetail | None


class PriceTax(WireModel):
    supply_scope: Literal["IN_SCOPE"] = "IN_SCOPE"


class PriceOut(WireModel):
    id: str
    object: Literal["price"] = "price"
    merchant_id: str
    billable_metric_id: str | None
    fee_id: str | None
    model: str
    payment_term: str
    properties: dict[str, Any]
    billing_cadence: str | None
    invoice_display_name: str
    grant_discount_enabled: bool
    features: list[PriceFeatureOut]
    # Required by SDK 0.6.3; Accrue has no tax scoping or fee quantities yet.
    tax: PriceTax = PriceTax()
    quantity: int = 1
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: Price, feature: Feature | None) -> PriceOut:
        properties = pricing.model_for(row.model).view(row.properties)
        features = []
        if row.feature_id is not None and row.price_feature_id is not None:
            detail = None
            if feature is not None:
                detail = PriceFeatureDetail(key=feature.key, name=feature.name, type=feature.type)
            features.append(
                PriceFeatureOut(
                    id=row.price_feature_id,
                    feature_id=row.feature_id,
                    entitlement_template=row.entitlement_template or {},
                    feature=detail,
                )
            )
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            billable_metric_id=row.billable_metric_id,
            fee_id=row.fee_id,
            model=row.model,
            payment_term=row.payment_term,
            properties=properties,
            billing_cadence=row.billing_cadence,
            invoice_display_name=row.invoice_display_name,
            grant_discount_enabled=row.grant_discount_enabled,
            features=features,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass
class PriceLinks:
    """The metrics, fees and features a set of prices points at, loaded together."""

    metrics: dict[str, BillableMetric]
    fees: dict[str, Fee]
    features: dict[str, Feature]

    def linked(self, row: Price) -> LinkedPrice:
        metric = self.metrics.get(row.billable_metric_id) if row.billable_metric_id else None
        product_id = metric.product_id if metric else self.fees[row.fee_id or ""].product_id
        return LinkedPrice(row.id, product_id, metric, row.model, row.payment_term)

    def view(self, row: Price) -> PriceOut:
        return PriceOut.of(row, self.features.get(row.feature_id) if row.feature_id else None)
