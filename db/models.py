"""Tables of the system of record. Each tenant-scoped row carries merchant_id + environment."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
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


class TestClock(Base, Tenant):
    __tablename__ = "test_clocks"
    __test__ = False  # not a pytest test class

    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    current_time: Mapped[datetime]
    deleted_at: Mapped[datetime | None]
    # Set while TestClockWorkflow drives bound workflows to current_time (GET shows advanceStatus).
    advancing_to: Mapped[datetime | None]


class MeterEvent(Base):
    """Raw meter events (POST /v0/events): append-only, deduplicated per merchant+environment+key."""

    __tablename__ = "meter_events"
    __table_args__ = (
        UniqueConstraint("merchant_id", "environment", "idempotency_key", name="uq_meter_events_key"),
        # Serves the period aggregation and the meter query: one customer's events of one type in a window.
        Index("ix_meter_events_lookup", "merchant_id", "environment", "type", "subject", "timestamp"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(8))
    type: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    timestamp: Mapped[datetime]
    idempotency_key: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Subscription(Base, Tenant):
    """Read model of a subscription; its SubscriptionWorkflow is the writer after creation."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("status in ('pending_payment', 'active', 'terminated')", name="status"),
        # One live subscription per customer and plan: a repeated create finds it (200).
        Index(
            "uq_subscriptions_live",
            "merchant_id",
            "environment",
            "customer_id",
            "plan_id",
            unique=True,
            postgresql_where=text("status <> 'terminated'"),
        ),
    )

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"), index=True)
    name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    ending_at: Mapped[datetime | None]
    billing_anchor: Mapped[datetime]
    billing_cadence: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    auto_charge: Mapped[bool] = mapped_column(default=False)
    tax_exempt: Mapped[bool] = mapped_column(default=False)
    minimum_account_balance: Mapped[Decimal | None]
    redirect_urls: Mapped[dict[str, Any] | None] = mapped_column(Json)
    session_expiry_minutes: Mapped[int] = mapped_column(default=240)
    test_clock_id: Mapped[str | None] = mapped_column(ForeignKey("test_clocks.id"), index=True)
    renewal_reminder_enabled: Mapped[bool | None]
    renewal_reminder_days: Mapped[int | None]
    activated_at: Mapped[datetime | None]
    terminated_at: Mapped[datetime | None]
    terminated_by: Mapped[str | None] = mapped_column(String(64))
    termination_reason: Mapped[str | None] = mapped_column(Text)
    current_period: Mapped[int] = mapped_column(default=0)


class Invoice(Base, Tenant):
    """Invoice n of a subscription covers service period n; Invoice 0 gates activation (D10, D11)."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("subscription_id", "sequence_number", name="uq_invoices_period"),
        Index("ix_invoices_tenant_status", "merchant_id", "environment", "status"),
    )

    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    sequence_number: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    billing_anchor: Mapped[datetime]
    billing_cadence: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    grace_period_end: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    auto_approve: Mapped[bool] = mapped_column(default=True)
    is_final: Mapped[bool] = mapped_column(default=False)
    subtotal: Mapped[Decimal] = mapped_column(default=Decimal(0))
    total_tax: Mapped[Decimal] = mapped_column(default=Decimal(0))
    grand_total: Mapped[Decimal] = mapped_column(default=Decimal(0))
    paid_amount: Mapped[Decimal] = mapped_column(default=Decimal(0))
    item_count: Mapped[int] = mapped_column(default=0)
    invoice_number: Mapped[str | None] = mapped_column(String(64))
    issued_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    payment_session_id: Mapped[str | None] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)


class LineItem(Base, Tenant):
    """A billed (or pending) line: fee, metered, manual or discount. Amounts are exact until the invoice
    rounds them (domain.money.round_money); an invoice's totals are sums of its rounded lines."""

    __tablename__ = "line_items"
    __table_args__ = (
        UniqueConstraint("subscription_id", "idempotency_key", name="uq_line_items_key"),
        Index("ix_line_items_invoice", "invoice_id", "position"),
    )

    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    invoice_id: Mapped[str | None] = mapped_column(ForeignKey("invoices.id"))
    position: Mapped[int] = mapped_column(default=0)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    price_id: Mapped[str | None] = mapped_column(String(64))
    billable_metric_id: Mapped[str | None] = mapped_column(String(64))
    fee_id: Mapped[str | None] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(3))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    invoice_at: Mapped[datetime]
    payment_term: Mapped[str | None] = mapped_column(String(16))
    quantity: Mapped[Decimal | None]
    metered_quantity: Mapped[Decimal | None]
    unit_price: Mapped[Decimal]
    subtotal: Mapped[Decimal] = mapped_column(default=Decimal(0))
    tax_rate: Mapped[Decimal] = mapped_column(default=Decimal(0))
    tax_total: Mapped[Decimal] = mapped_column(default=Decimal(0))
    total: Mapped[Decimal] = mapped_column(default=Decimal(0))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    calculated_at: Mapped[datetime | None]


class PaymentSession(Base, Tenant):
    """A sandbox-provider checkout for one invoice: open → completed | declined | expired."""

    __tablename__ = "payment_sessions"

    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    expires_at: Mapped[datetime]
    redirect_urls: Mapped[dict[str, Any] | None] = mapped_column(Json)
    completed_at: Mapped[datetime | None]
    # Migration 0007 (issue 11): the provider that collects it (integrations/payments) and its object there
    # (Stripe: the PaymentIntent pi_…), set once the provider has created it.
    provider: Mapped[str] = mapped_column(String(16), server_default="sandbox", default="sandbox")
    provider_reference: Mapped[str | None] = mapped_column(String(255), unique=True)


class OutboxEvent(Base):
    """Webhook events, written in the same transaction as the state change they report (D18).

    A trigger NOTIFYs `accrue_outbox` on insert, so the relay hears of a row when (and only if) its
    transaction commits. `seq` is the order the relay follows: rows about one resource are written under
    that resource's row lock, so their seq order is the order the changes happened."""

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_unrelayed", "seq", postgresql_where=text("relayed_at is null")),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    merchant_id: Mapped[str] = mapped_column(String(64), index=True)
    environment: Mapped[str] = mapped_column(String(8))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    relayed_at: Mapped[datetime | None]


class WebhookApp(Base, Timestamps):
    """A merchant's webhooks in one environment (0.6.3's `Webhooks`; Svix calls it an application)."""

    __tablename__ = "webhook_apps"
    __table_args__ = (UniqueConstraint("merchant_id", "environment", name="uq_webhook_apps_merchant"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # app_…, the applicationId
    merchant_id: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(8))
    enabled: Mapped[bool]


class WebhookEndpoint(Base, Tenant):
    """Where a merchant's messages go. Secrets are sealed (integrations/secret_box.py), never stored plain."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint("disabled_reason in ('manual', 'failing')", name="disabled_reason"),
        CheckConstraint("rate_limit is null or rate_limit > 0", name="rate_limit"),
    )

    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    filter_types: Mapped[list[str] | None] = mapped_column(Json)  # None: every event type
    disabled: Mapped[bool] = mapped_column(default=False)
    disabled_reason: Mapped[str | None] = mapped_column(String(16))  # manual | failing (5 days of failures)
    rate_limit: Mapped[int | None]  # messages per second
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)  # still signs until previous_secret_expires_at
    previous_secret_expires_at: Mapped[datetime | None]
    failing_since: Mapped[datetime | None]  # first failed attempt since the last success
    deleted_at: Mapped[datetime | None]


class WebhookMessage(Base):
    """One event as sent: the D18 envelope. Its id (msg_…, the svix-id) is the outbox row's it came from."""

    __tablename__ = "webhook_messages"
    __table_args__ = (Index("ix_webhook_messages_merchant", "merchant_id", "environment", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(8))
    event_type: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(64), unique=True)  # evt_…, the envelope's eventId
    resource_key: Mapped[str] = mapped_column(Text)  # e.g. subscription:sub_…; ordering is per resource
    payload: Mapped[dict[str, Any]] = mapped_column(Json)  # {eventType, eventId, timestamp, data}
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WebhookDelivery(Base, Timestamps):
    """One message to one endpoint. `id` is the delivery order: a message about a resource waits for the
    endpoint's earlier undelivered messages about the same resource."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("message_id", "endpoint_id", name="uq_webhook_deliveries_message"),
        CheckConstraint("status in ('pending', 'delivered', 'failed', 'skipped')", name="status"),
        Index(
            "ix_webhook_deliveries_pending",
            "endpoint_id",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("webhook_messages.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    resource_key: Mapped[str] = mapped_column(Text)
    # pending: due at next_attempt_at; skipped: the endpoint or the merchant's webhooks were disabled when
    # the message was relayed (recover sends it); failed: every attempt of the schedule failed.
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)  # all attempts ever, numbering webhook_attempts
    round_attempts: Mapped[int] = mapped_column(default=0)  # attempts since the schedule (re)started
    next_attempt_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """Every delivery attempt, kept for the message log (D18). (delivery_id, attempt) is unique, so a
    retried activity records an attempt once."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        UniqueConstraint("delivery_id", "attempt", name="uq_webhook_attempts_delivery"),
        Index("ix_webhook_attempts_endpoint", "endpoint_id", "created_at"),
        Index("ix_webhook_attempts_message", "message_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # atmpt_…
    delivery_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("webhook_deliveries.id"))
    message_id: Mapped[str] = mapped_column(String(64))
    endpoint_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int]
    trigger: Mapped[str] = mapped_column(String(16))  # scheduled | manual (resend, recover)
    succeeded: Mapped[bool]
    status_code: Mapped[int | None]  # None: no HTTP response (timeout, refused, address not allowed)
    response: Mapped[str] = mapped_column(Text, default="")  # the first KiB of the body, or the error
    duration_ms: Mapped[int]
    created_at: Mapped[datetime]  # when it was made, in the endpoint workflow's time
    next_attempt_at: Mapped[datetime | None]  # None: delivered, or the schedule is exhausted


class Source(Base, Tenant):
    """A plan's revenue source (behavior §9.2): the template each customer's installation follows."""

    __tablename__ = "sources"
    __table_args__ = (CheckConstraint("processing_mode in ('automatic', 'manual')", name="processing_mode"),)

    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))  # stripe_revenue
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    processing_mode: Mapped[str] = mapped_column(String(16))
    # metadata.billableMetricMapping.revenue, checked and kept as a column for the approval's lookup.
    revenue_metric_id: Mapped[str] = mapped_column(ForeignKey("billable_metrics.id"))


class SourceRule(Base, Tenant):
    """An auto-approval rule (D17): all conditions must match; ascending order, ties by created_at."""

    __tablename__ = "source_rules"
    __table_args__ = (CheckConstraint('"order" between 0 and 999', name="order"),)

    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"), index=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    order: Mapped[int] = mapped_column(default=0)
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    evaluation_count: Mapped[int] = mapped_column(default=0)
    match_count: Mapped[int] = mapped_column(default=0)
    last_evaluated_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(64))


class SourceInstallation(Base, Tenant):
    """A source connected to one subscription with the customer's Stripe key (D15). Its
    SourceInstallationWorkflow writes every status change after the API creates it `pending`."""

    __tablename__ = "source_installations"
    __table_args__ = (
        CheckConstraint("status in ('pending', 'active', 'disconnected', 'error')", name="status"),
        CheckConstraint("key_mode in ('test', 'live')", name="key_mode"),
        # One live connection per source and subscription; one in `error` or `disconnected` is replaced by
        # connecting again.
        Index(
            "uq_source_installations_live",
            "source_id",
            "subscription_id",
            unique=True,
            postgresql_where=text("status in ('pending', 'active')"),
        ),
    )

    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"), index=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    provider_type: Mapped[str] = mapped_column(String(16), default="api_key")
    status: Mapped[str] = mapped_column(String(16))
    error_message: Mapped[str | None] = mapped_column(Text)
    last_sync_at: Mapped[datetime | None]
    connected_at: Mapped[datetime | None]
    disconnected_at: Mapped[datetime | None]
    key_sealed: Mapped[str] = mapped_column(Text)  # integrations/secret_box.py; never returned or logged
    key_last4: Mapped[str] = mapped_column(String(4))
    key_mode: Mapped[str] = mapped_column(String(4))
    # Stripe's own time (unix seconds): invoices paid at or after it are imported. Starts at the connect
    # time, or at importFrom for a backfill.
    cursor: Mapped[int] = mapped_column(BigInteger)


class SourceEvent(Base, Tenant):
    """One paid Stripe invoice of an installation (D16): pending → processed | failed | rejected."""

    __tablename__ = "source_events"
    __table_args__ = (
        UniqueConstraint("source_id", "external_event_id", name="uq_source_events_external"),
        CheckConstraint("status in ('pending', 'processed', 'failed', 'rejected')", name="status"),
        Index("ix_source_events_listing", "source_id", "status", "created_at"),
        Index("ix_source_events_installation", "installation_id", "status"),
    )

    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))
    installation_id: Mapped[str] = mapped_column(ForeignKey("source_installations.id"))
    customer_id: Mapped[str] = mapped_column(String(64))
    subscription_id: Mapped[str] = mapped_column(String(64))
    external_event_id: Mapped[str] = mapped_column(String(255))  # the Stripe invoice id
    status: Mapped[str] = mapped_column(String(16))
    raw_data: Mapped[dict[str, Any]] = mapped_column(Json)
    amount: Mapped[Decimal]  # amount paid, in major units of `currency`
    currency: Mapped[str] = mapped_column(String(3))  # upper case
    customer_name: Mapped[str | None] = mapped_column(Text)  # the Stripe invoice's customer, for rules
    customer_email: Mapped[str | None] = mapped_column(Text)
    paid_at: Mapped[datetime]  # Stripe's status_transitions.paid_at
    # When the approved revenue counts: paid_at, or the test clock's time at import for an installation of
    # a clock-bound subscription.
    usage_at: Mapped[datetime]
    error_message: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None]
    processed_by: Mapped[str | None] = mapped_column(String(64))
    usage_event_ids: Mapped[list[str]] = mapped_column(Json, default=list)
    matched_rule_id: Mapped[str | None] = mapped_column(String(64))


class AuthorizationLink(Base, Tenant):
    """A single-use signup link for one plan (seed 000): pending → completed | expired."""

    __tablename__ = "authorization_links"
    __table_args__ = (CheckConstraint("status in ('pending', 'completed', 'expired')", name="status"),)

    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    email: Mapped[str | None] = mapped_column(Text)  # pre-filled on the page when the merchant gave one
    redirect_url: Mapped[str | None] = mapped_column(Text)
    # Sandbox: the subscription the page creates is bound to this test clock and starts at its time.
    test_clock_id: Mapped[str | None] = mapped_column(ForeignKey("test_clocks.id"))
    expires_at: Mapped[datetime]
    customer_id: Mapped[str | None] = mapped_column(String(64))
    subscription_id: Mapped[str | None] = mapped_column(String(64))
    completed_at: Mapped[datetime | None]


# --- Wallets (pay-as-you-go): a double-entry ledger in nanodollars (domain/ledger.py, D13, D14) ---


class LedgerAccount(Base, Tenant):
    """One account of the ledger: a customer's main wallet or reserved funds, or the merchant's revenue,
    platform fee or external funding, per currency. `balance` is kept equal to the sum of its entries
    (db.ledger.audit proves it); customer accounts never go below zero."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint(
            "merchant_id", "environment", "currency", "kind", "owner_id", name="uq_ledger_accounts_owner"
        ),
        CheckConstraint(
            "kind in ('customer_main', 'customer_reserved', 'merchant_revenue', 'platform_fee', "
            "'external_funding')",
            name="kind",
        ),
        CheckConstraint(
            "kind not in ('customer_main', 'customer_reserved') or balance >= 0", name="not_overdrawn"
        ),
    )

    # No index of its own: the unique key leads with it (one index entry less per write on the hot path).
    merchant_id: Mapped[str] = mapped_column(String(64))

    kind: Mapped[str] = mapped_column(String(24))
    owner_id: Mapped[str] = mapped_column(String(64))  # the customer id, or the merchant's organization id
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerTransaction(Base, Tenant):
    """One balanced movement of money; idempotent by (merchant, environment, idempotency_key)."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (
        UniqueConstraint("merchant_id", "environment", "idempotency_key", name="uq_ledger_transactions_key"),
    )

    # No index of its own: the unique key leads with it (one index entry less per write on the hot path).
    merchant_id: Mapped[str] = mapped_column(String(64))

    kind: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    reference_id: Mapped[str | None] = mapped_column(String(64))  # usg_, com_, inv_ …
    description: Mapped[str | None] = mapped_column(Text)


class LedgerEntry(Base):
    """One leg of a transaction. Like meter_events, the hot append-only tables carry no foreign keys: each
    would take a share lock on its parent row (the merchant's revenue account is the parent of every
    charge) for rows only db.ledger writes, from the rows it has just locked; db.ledger.audit checks them."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(64), index=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)  # nanodollars added to the account's balance


class UsageEvent(Base, Tenant):
    """A usage event (POST /v0/usage, Legacy billing): priced at once; its instant part debited from the
    wallet (or a reservation) in the same commit, its in-arrears part billed by the period invoice
    (D3, D4)."""

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("merchant_id", "environment", "idempotency_key", name="uq_usage_events_key"),
        Index("ix_usage_events_customer_time", "merchant_id", "environment", "customer_id", "timestamp"),
        Index("ix_usage_events_subscription_time", "subscription_id", "timestamp"),
    )

    # No index of its own: the unique key leads with it (one index entry less per write on the hot path).
    merchant_id: Mapped[str] = mapped_column(String(64))

    # No foreign keys (see LedgerEntry): the ingestion writes them from the rows it has just read, and a
    # customer with any subscription cannot be deleted.
    customer_id: Mapped[str] = mapped_column(String(64))
    consumer_id: Mapped[str] = mapped_column(String(64))
    subscription_id: Mapped[str] = mapped_column(String(64))
    entitlement_id: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    timestamp: Mapped[datetime]
    # As sent ({billableMetricId, quantity, price?}) plus what pricing found: priceId, paymentTerm, amount.
    properties: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", Json)
    description: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[Decimal]  # exact, before tax: instant + in-arrears parts
    total_tax: Mapped[Decimal] = mapped_column(default=Decimal(0))
    total_amount: Mapped[Decimal]
    instant_amount: Mapped[Decimal] = mapped_column(default=Decimal(0))  # debited at once
    arrears_amount: Mapped[Decimal] = mapped_column(default=Decimal(0))  # billed on the period invoice
    transaction_id: Mapped[str | None] = mapped_column(String(64))  # the ledger charge of the instant part
    invoice_id: Mapped[str | None] = mapped_column(
        String(64)
    )  # the period invoice billing the in-arrears part
    refunded_at: Mapped[datetime | None]
    refund_reason: Mapped[str | None] = mapped_column(Text)
    refund_transaction_id: Mapped[str | None] = mapped_column(String(64))


class Entitlement(Base, Tenant):
    """A v0 entitlement: funds reserved from the customer's wallet for future usage (behavior §7.1); its
    EntitlementWorkflow (`entitlement-<id>`) releases the remainder at `expires_at`."""

    __tablename__ = "entitlements"
    __table_args__ = (
        CheckConstraint("status in ('active', 'exhausted', 'expired', 'released')", name="status"),
        CheckConstraint("remaining_balance >= 0 and remaining_balance <= reserved_amount", name="remaining"),
        Index("ix_entitlements_customer", "merchant_id", "environment", "customer_id", "status"),
    )

    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"))
    plan_id: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    billable_metrics: Mapped[list[dict[str, Any]]] = mapped_column(
        Json
    )  # {billableMetricId, quantity, price}
    reserved_amount: Mapped[int] = mapped_column(BigInteger)  # nanodollars
    remaining_balance: Mapped[int] = mapped_column(BigInteger)  # nanodollars
    used_count: Mapped[int] = mapped_column(default=0)
    max_uses: Mapped[int]
    region: Mapped[str] = mapped_column(String(32), default="global")
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime]
    released_at: Mapped[datetime | None]
    test_clock_id: Mapped[str | None] = mapped_column(String(64))
    reserve_transaction_id: Mapped[str | None] = mapped_column(String(64))
    release_transaction_id: Mapped[str | None] = mapped_column(String(64))


class Dispute(Base, Tenant):
    """A customer's dispute of one usage event (behavior §12.1): pending until the merchant accepts
    (the event is refunded) or declines it."""

    __tablename__ = "disputes"
    __table_args__ = (
        UniqueConstraint("usage_event_id", name="uq_disputes_usage_event_id"),
        CheckConstraint("status in ('pending', 'accepted', 'declined')", name="status"),
        Index("ix_disputes_customer", "merchant_id", "environment", "customer_id", "status"),
    )

    usage_event_id: Mapped[str] = mapped_column(ForeignKey("usage_events.id"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    customer_message: Mapped[str] = mapped_column(Text)
    merchant_message: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    disputed_amount: Mapped[Decimal]
    resolved_at: Mapped[datetime | None]


class Payment(Base, Tenant):
    """A one-off payment (POST /v0/payments, behavior §12.2): pending → processing → completed, or expired
    at `expires_at`; its PaymentWorkflow (`payment-<id>`) owns the expiry timer and records the provider's
    outcome. The id (`pay_` + 24 random base62 characters) is also the hosted page's credential."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(
            "status in ('pending', 'processing', 'completed', 'expired', 'cancelled')", name="status"
        ),
        CheckConstraint("amount > 0", name="amount"),
        # A retried create finds the first one (201 new, 200 existing).
        Index(
            "uq_payments_idempotency_key",
            "merchant_id",
            "environment",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key is not null"),
        ),
        Index("ix_payments_list", "merchant_id", "environment", "created_at"),
        Index("ix_payments_customer", "merchant_id", "environment", "customer_id"),
    )

    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"))
    status: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    reference: Mapped[str | None] = mapped_column(String(255))
    payment_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", Json)
    line_items: Mapped[list[dict[str, Any]] | None] = mapped_column(Json)  # {description, amount, quantity}
    success_redirect_url: Mapped[str | None] = mapped_column(Text)
    failure_redirect_url: Mapped[str | None] = mapped_column(Text)
    save_payment_method: Mapped[bool] = mapped_column(default=False)
    provider: Mapped[str] = mapped_column(String(16), default="sandbox")  # sandbox | stripe
    provider_reference: Mapped[str | None] = mapped_column(String(255))  # e.g. the Stripe PaymentIntent
    payment_url: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    declined_at: Mapped[datetime | None]  # the last declined attempt (the page says so); still payable


# ---- migration 0007: payment providers (issue 11; integrations/payments) ---------------------------------


class StripeEvent(Base):
    """A Stripe webhook event Accrue has acted on (`POST /v0/stripe/webhooks`): one row per Stripe event id,
    inserted in the transaction that signals the owning workflow, so a redelivered event changes nothing."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # evt_…
    type: Mapped[str] = mapped_column(String(64))
    livemode: Mapped[bool]
    object_id: Mapped[str | None] = mapped_column(String(255))  # pi_…
    owner_kind: Mapped[str | None] = mapped_column(String(16))  # subscription | payment (metadata)
    owner_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ProviderCustomer(Base, Timestamps):
    """An Accrue customer's customer object at a payment provider (Stripe cus_…) and the payment method
    saved for off-session charges (autoCharge: saved at Invoice 0 with savePaymentMethod)."""

    __tablename__ = "provider_customers"
    __table_args__ = (
        UniqueConstraint(
            "merchant_id", "environment", "customer_id", "provider", name="uq_provider_customers_customer"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(8))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    provider: Mapped[str] = mapped_column(String(16))
    provider_customer: Mapped[str] = mapped_column(String(255))
    payment_method: Mapped[str | None] = mapped_column(String(255))
