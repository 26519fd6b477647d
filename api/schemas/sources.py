"""Requests of the sources, rules, source events and installations endpoints, and the answers that are not
resource representations (those live in api/schemas/source_views.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Strict, StringConstraints

from api.schemas.source_views import SourceRuleOut
from api.wire import Id, Name, OptionalText, UtcDatetime, WireModel

ProcessingMode = Literal["automatic", "manual"]
Flag = Annotated[bool, Strict()]
Order = Annotated[int, Strict(), Field(ge=0, le=999, description="Evaluation priority, 0–999: lowest first.")]
# Checked by domain/source_rules.condition_errors, which names each bad condition (conditions[0].value, …).
Conditions = Annotated[
    list[Any],
    Field(
        description="1–10 conditions {type, operator, value} that must all match (behavior §9.4).",
        json_schema_extra={"items": {"type": "object"}},
    ),
]
MAX_BULK_EVENTS = 1000
EventIds = Annotated[list[Id], Field(min_length=1, max_length=MAX_BULK_EVENTS)]
# A Stripe key is checked by domain/stripe_keys (format and mode) with a message that never echoes it.
StripeKey = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]


class SourceCreate(WireModel):
    name: Name
    plan_id: Id
    type: Literal["stripe_revenue"]
    config: dict[str, Any] | None = None
    description: OptionalText | None = None
    enabled: Flag = True
    metadata: dict[str, Any] | None = None
    processing_mode: ProcessingMode = "automatic"


class SourceUpdate(WireModel):
    name: Name | None = None
    config: dict[str, Any] | None = None
    description: OptionalText | None = None
    enabled: Flag | None = None
    metadata: dict[str, Any] | None = None
    processing_mode: ProcessingMode | None = None


class RuleCreate(WireModel):
    source_id: Id
    name: Name
    conditions: Conditions
    description: OptionalText | None = None
    enabled: Flag = True
    order: Order = 0


class RuleUpdate(WireModel):
    name: Name | None = None
    conditions: Conditions | None = None
    description: OptionalText | None = None
    enabled: Flag | None = None
    order: Order | None = None


class RuleList(WireModel):
    data: list[SourceRuleOut]


class BulkEvents(WireModel):
    event_ids: EventIds


class BulkFailure(WireModel):
    id: str
    error: str


class BulkApproveDetails(WireModel):
    processed: list[str]
    failed: list[BulkFailure]


class BulkApproveOut(WireModel):
    processed: int
    failed: int
    details: BulkApproveDetails


class BulkRejectOut(WireModel):
    rejected: int


class InstallationCreate(WireModel):
    subscription_id: Id
    stripe_secret_key: StripeKey
    import_from: UtcDatetime | None = Field(
        default=None, description="Backfill: import invoices paid since then (at most 90 days back)."
    )
