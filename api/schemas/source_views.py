"""The representations of sources, rules, installations and source events: what GET returns and what a
webhook's `data` carries (activities render them, so this module imports no FastAPI). Request models live
beside the routers' other schemas."""

from __future__ import annotations

from typing import Any, Literal

from api.wire import Timestamp, WireModel
from db.models import Source, SourceEvent, SourceInstallation, SourceRule
from domain.money import format_money


class SourceOut(WireModel):
    id: str
    object: Literal["source"] = "source"
    merchant_id: str
    plan_id: str
    type: Literal["stripe_revenue"] = "stripe_revenue"
    name: str
    description: str | None
    config: dict[str, Any]
    metadata: dict[str, Any]
    enabled: bool
    processing_mode: str
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: Source) -> SourceOut:
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            plan_id=row.plan_id,
            name=row.name,
            description=row.description,
            config=row.config or {},
            metadata=row.metadata_ or {},
            enabled=row.enabled,
            processing_mode=row.processing_mode,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class SourceRuleOut(WireModel):
    id: str
    object: Literal["sourceRule"] = "sourceRule"
    source_id: str
    name: str
    description: str
    enabled: bool
    order: int
    conditions: list[dict[str, Any]]
    evaluation_count: int
    match_count: int
    last_evaluated_at: Timestamp | None
    created_by: str | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: SourceRule) -> SourceRuleOut:
        return cls(
            id=row.id,
            source_id=row.source_id,
            name=row.name,
            description=row.description,
            enabled=row.enabled,
            order=row.order,
            conditions=row.conditions,
            evaluation_count=row.evaluation_count,
            match_count=row.match_count,
            last_evaluated_at=row.last_evaluated_at,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class InstallationOut(WireModel):
    """D15's extension resource. The key itself is never returned: its last four characters and mode are."""

    object: Literal["sourceInstallation"] = "sourceInstallation"
    id: str
    source_id: str
    subscription_id: str
    customer_id: str
    provider_type: str
    status: str
    error_message: str | None
    last_sync_at: Timestamp | None
    connected_at: Timestamp | None
    disconnected_at: Timestamp | None
    key_last4: str
    key_mode: str
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: SourceInstallation) -> InstallationOut:
        return cls(
            id=row.id,
            source_id=row.source_id,
            subscription_id=row.subscription_id,
            customer_id=row.customer_id,
            provider_type=row.provider_type,
            status=row.status,
            error_message=row.error_message,
            last_sync_at=row.last_sync_at,
            connected_at=row.connected_at,
            disconnected_at=row.disconnected_at,
            key_last4=row.key_last4,
            key_mode=row.key_mode,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class SourceEventOut(WireModel):
    id: str
    object: Literal["sourceEvent"] = "sourceEvent"
    source_id: str
    installation_id: str
    external_event_id: str
    status: str
    raw_data: dict[str, Any]
    customer_id: str
    subscription_id: str
    amount: str  # major units, as every amount on the wire
    currency: str
    error_message: str | None
    processed_at: Timestamp | None
    processed_by: str | None
    usage_event_ids: list[str]
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: SourceEvent) -> SourceEventOut:
        return cls(
            id=row.id,
            source_id=row.source_id,
            installation_id=row.installation_id,
            external_event_id=row.external_event_id,
            status=row.status,
            raw_data=row.raw_data,
            customer_id=row.customer_id,
            subscription_id=row.subscription_id,
            amount=format_money(row.amount, row.currency),
            currency=row.currency,
            error_message=row.error_message,
            processed_at=row.processed_at,
            processed_by=row.processed_by,
            usage_event_ids=list(row.usage_event_ids or []),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
