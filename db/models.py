"""Tables of the system of record. Each tenant-scoped row carries merchant_id + environment."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, Json, Tenant, Timestamps


class Organization(Base, Timestamps):
    """Merchants (sell; own everything) and managed consumers (buy; created through customers)."""

    __tablename__ = "organizations"
    __table_args__ = (
        CheckConstraint("kind in ('merchant', 'consumer')", name="kind"),
        # A managed consumer is reused per merchant + environment by email (customer create idempotency).
        Index(
            "uq_consumer_email",
            "owner_merchant_id",
            "environment",
            func.lower(text("email")),
            unique=True,
            postgresql_where=text("kind = 'consumer'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    address: Mapped[dict[str, Any] | None] = mapped_column(Json)
    owner_merchant_id: Mapped[str | None] = mapped_column(String(64))
    environment: Mapped[str | None] = mapped_column(String(8))


class User(Base, Timestamps):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(Text, unique=True)
    ory_id: Mapped[str] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    date_of_birth: Mapped[date | None]
    address: Mapped[dict[str, Any] | None] = mapped_column(Json)
    type: Mapped[str | None] = mapped_column(String(16))


class Membership(Base, Timestamps):
    __tablename__ = "memberships"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16), default="active")


class ApiKey(Base, Timestamps):
    """Keys are stored as SHA-256 of the secret; the secret is shown once."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("environment in ('sandbox', 'live')", name="environment"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last4: Mapped[str] = mapped_column(String(4))
    revoked_at: Mapped[datetime | None]


class Product(Base, Tenant):
    __tablename__ = "products"

    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)


class BillableMetric(Base, Tenant):
    __tablename__ = "billable_metrics"
    __table_args__ = (Index("ix_billable_metrics_event_type", "merchant_id", "environment", "event_type"),)

    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(Text)
    aggregation: Mapped[str] = mapped_column(String(16))
    event_type: Mapped[str | None] = mapped_column(Text)
    value_property: Mapped[str | None] = mapped_column(Text)
    group_by: Mapped[dict[str, Any] | None] = mapped_column(Json)
    event_from: Mapped[datetime | None]


class Fee(Base, Tenant):
    __tablename__ = "fees"

    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)


class Feature(Base, Tenant):
    __tablename__ = "features"
    __table_args__ = (UniqueConstraint("product_id", "key", name="uq_features_product_key"),)

    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    key: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)


class Price(Base, Tenant):
    __tablename__ = "prices"
    __table_args__ = (
        CheckConstraint("(billable_metric_id is null) <> (fee_id is null)", name="metric_xor_fee"),
    )

    billable_metric_id: Mapped[str | None] = mapped_column(ForeignKey("billable_metrics.id"), index=True)
    fee_id: Mapped[str | None] = mapped_column(ForeignKey("fees.id"), index=True)
    model: Mapped[str] = mapped_column(String(16))
    payment_term: Mapped[str] = mapped_column(String(16))
    properties: Mapped[dict[str, Any]] = mapped_column(Json)
    billing_cadence: Mapped[str | None] = mapped_column(String(32))
    invoice_display_name: Mapped[str] = mapped_column(Text)
    grant_discount_enabled: Mapped[bool] = mapped_column(default=False)
    # At most one feature link per price (PriceFeatureInput); `price_feature_id` is its own id.
    feature_id: Mapped[str | None] = mapped_column(ForeignKey("features.id"))
    price_feature_id: Mapped[str | None] = mapped_column(String(64))
    entitlement_template: Mapped[dict[str, Any] | None] = mapped_column(Json)


class Plan(Base, Tenant):
    __tablename__ = "plans"

    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    invoice_display_name: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(3))
    billing_cadence: Mapped[str] = mapped_column(String(8))
    default_tax_code: Mapped[str] = mapped_column(String(32))
    default_tax_rate: Mapped[Decimal]
    tax_behavior: Mapped[str] = mapped_column(String(16))
    renewal_reminder_enabled: Mapped[bool]
    renewal_reminder_days: Mapped[int]
    billing_version: Mapped[int]
    deleted_at: Mapped[datetime | None]


class PlanPrice(Base):
    """A price linked to a plan, in the order the merchant gave."""

    __tablename__ = "plan_prices"

    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True)
    price_id: Mapped[str] = mapped_column(ForeignKey("prices.id"), primary_key=True, index=True)
    position: Mapped[int]


class Customer(Base, Tenant):
    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("merchant_id", "environment", "consumer_id", name="uq_customers_consumer"),
        UniqueConstraint("merchant_id", "environment", "external_id", name="uq_customers_external_id"),
    )

    consumer_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    external_id: Mapped[str | None] = mapped_column(String(255))
    tax_id: Mapped[str | None] = mapped_column(Text)
    tax_rates: Mapped[dict[str, Any] | None] = mapped_column(Json)
    notification_settings: Mapped[dict[str, Any]] = mapped_column(Json)
