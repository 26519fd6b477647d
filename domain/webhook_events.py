"""The webhook event catalog (behavior §10.2, D18): every event type Accrue sends or will send.

Each entry names the resource its `data` represents (the resource's API representation at the time of the
event) and carries one realistic example of that `data`. The resource also orders delivery: messages about
one resource (`<resource>:<data.id>`) reach an endpoint in the order they happened.

Types that a later issue starts emitting are listed already, so an endpoint can subscribe to them (and the
API's `filterTypes` accepts them) before the first one is sent:
- `source.*` and `source_event.*`: the revenue-share issue's installations and source events;
- `customer.creation_failed.v0`: the revenue-share issue's signup (authorization) links, the only flow that
  can fail to create a customer. No customer exists then, so its `data` is the failed signup, without an
  `id`; such messages are ordered by nothing but their own id;
- `payment.*`: the payments issue's one-off payments; `invoice.payment_failed.v0`: its auto-charge.
`payment.cancelled.v0` (behavior §10.2 guesses at it) is not listed: no issue cancels a payment by event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EventType:
    name: str  # <resource>.<past_tense_action>.v0
    resource: str  # the `data`'s resource, also the ordering key's prefix
    description: str
    example: dict[str, Any] = field(default_factory=dict)  # one realistic `data`


def _catalog(*types: EventType) -> dict[str, EventType]:
    return {t.name: t for t in types}


EVENT_TYPES: dict[str, EventType] = _catalog(
    EventType("customer.created.v0", "customer", "A customer was created (POST /v0/customers)."),
    EventType(
        "customer.creation_failed.v0",
        "customer",
        "A customer's signup through an authorization link failed; data describes the attempt.",
    ),
    EventType(
        "subscription.created.v0",
        "subscription",
        "A subscription was created, with its Invoice 0 (status pending_payment, or active when nothing "
        "is due up front).",
    ),
    EventType(
        "subscription.activated.v0",
        "subscription",
        "A subscription became active: its Invoice 0 was paid, or it had nothing to pay up front.",
    ),
    EventType(
        "subscription.updated.v0",
        "subscription",
        "A subscription changed (status or settings).",
    ),
    EventType(
        "subscription.cancelled.v0",
        "subscription",
        "A subscription was terminated (by the merchant, at its end date, or because Invoice 0 expired).",
    ),
    EventType("invoice.issued.v0", "invoice", "An invoice was finalized and issued to the customer."),
    EventType("invoice.paid.v0", "invoice", "An invoice was paid in full."),
    EventType(
        "invoice.payment_failed.v0",
        "invoice",
        "Charging an invoice failed (status PAYMENT_FAILED); it is retried on the dunning schedule.",
    ),
    EventType(
        "invoice.cancelled.v0",
        "invoice",
        "An invoice was cancelled (an unpaid Invoice 0 when its subscription ended first).",
    ),
    EventType(
        "source.activated.v0",
        "sourceInstallation",
        "A customer connected their external account (a source installation became active).",
    ),
    EventType(
        "source.activation_failed.v0",
        "sourceInstallation",
        "Connecting a customer's external account failed (for example an invalid API key).",
    ),
    EventType(
        "source.disconnected.v0",
        "sourceInstallation",
        "A source installation was disconnected, by the customer or because its key was revoked.",
    ),
    EventType(
        "source_event.pending.v0",
        "sourceEvent",
        "A new source event awaits review (manual processing mode, no matching rule).",
    ),
    EventType(
        "source_event.processed.v0",
        "sourceEvent",
        "A source event was approved and its revenue recorded for billing.",
    ),
    EventType("source_event.failed.v0", "sourceEvent", "Processing an approved source event failed."),
    EventType("source_event.rejected.v0", "sourceEvent", "A source event was rejected."),
    EventType("payment.completed.v0", "payment", "A one-off payment was completed."),
    EventType("payment.expired.v0", "payment", "A one-off payment expired unpaid."),
)


def resource_of(event_type: str) -> str:
    """The resource an event type's `data` represents; KeyError for a type outside the catalog."""
    return EVENT_TYPES[event_type].resource
