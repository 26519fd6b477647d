"""The event catalog (domain/webhook_events.py): names follow `<resource>.<past_tense_action>.v0`, the
outbox accepts exactly its types, and every example is a real representation: the customer, subscription
and invoice examples round-trip through the API's own schemas unchanged (no key missing, none extra), the
later issues' examples carry the keys their contract models require."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel

from api.schemas.customers import CustomerOut
from api.schemas.invoices import InvoiceOut
from api.schemas.subscriptions import SubscriptionOut
from db import outbox
from domain.webhook_events import EVENT_TYPES, resource_of

SCHEMAS: dict[str, type[BaseModel]] = {
    "customer": CustomerOut,
    "subscription": SubscriptionOut,
    "invoice": InvoiceOut,
}
# paygentic-api.md's REQUIRED keys of the models the later issues return (and the installation).
REQUIRED = {
    "sourceEvent": {"id", "createdAt", "externalEventId", "rawData", "sourceId", "status", "updatedAt"},
    "payment": {"id", "amount", "currency", "status", "createdAt"},
    "sourceInstallation": {
        "object", "id", "sourceId", "subscriptionId", "customerId", "providerType", "status", "errorMessage",
        "lastSyncAt", "connectedAt", "disconnectedAt", "keyLast4", "keyMode",
    },
}  # fmt: skip
PREFIX = {"customer": "customer", "subscription": "subscription", "invoice": "invoice",
          "sourceInstallation": "source", "sourceEvent": "source_event", "payment": "payment"}  # fmt: skip


def test_the_outbox_takes_exactly_the_catalog() -> None:
    assert outbox.EVENT_TYPES == set(EVENT_TYPES)
    # The additions to behavior §10.2, and the one Accrue already sent.
    assert {
        "invoice.issued.v0", "invoice.payment_failed.v0", "subscription.activated.v0", "payment.completed.v0",
        "payment.expired.v0", "invoice.cancelled.v0", "customer.creation_failed.v0",
    } <= set(EVENT_TYPES)  # fmt: skip


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_names_follow_the_pattern_of_their_resource(name: str) -> None:
    event = EVENT_TYPES[name]
    assert event.name == name and resource_of(name) == event.resource
    match = re.fullmatch(r"([a-z_]+)\.([a-z_]+)\.v0", name)
    assert match and match.group(1) == PREFIX[event.resource]
    assert event.description.endswith(".")


@pytest.mark.parametrize("name", [n for n, t in EVENT_TYPES.items() if t.resource in SCHEMAS])
def test_examples_are_exactly_the_apis_representation(name: str) -> None:
    event = EVENT_TYPES[name]
    if "id" not in event.example:  # a failed signup: no customer was created
        assert event.name == "customer.creation_failed.v0"
        return
    schema = SCHEMAS[event.resource]
    rendered: dict[str, Any] = schema.model_validate(event.example).model_dump(mode="json", by_alias=True)
    assert rendered == event.example


@pytest.mark.parametrize("name", [n for n, t in EVENT_TYPES.items() if t.resource in REQUIRED])
def test_later_examples_carry_their_models_required_keys(name: str) -> None:
    event = EVENT_TYPES[name]
    assert REQUIRED[event.resource] <= set(event.example)
    assert event.example.get("status") in {
        "source.activated.v0": {"active"}, "source.activation_failed.v0": {"error"},
        "source.disconnected.v0": {"disconnected"}, "source_event.pending.v0": {"pending"},
        "source_event.processed.v0": {"processed"}, "source_event.failed.v0": {"failed"},
        "source_event.rejected.v0": {"rejected"}, "payment.completed.v0": {"completed"},
        "payment.expired.v0": {"expired"},
    }[name]  # fmt: skip


def test_resource_of_an_unknown_type_is_refused() -> None:
    with pytest.raises(KeyError):
        resource_of("invoice.exploded.v0")
