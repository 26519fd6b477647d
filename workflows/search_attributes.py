"""Search attributes that make Accrue's workflows findable in the Temporal UI (design rule 9).

Workflows upsert these on each transition; the dev stack, compose and the test harness register them with
`ensure_search_attributes` before any worker runs, since Temporal rejects undefined attributes.
"""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

MERCHANT_ID = SearchAttributeKey.for_keyword("AccrueMerchantId")
CUSTOMER_ID = SearchAttributeKey.for_keyword("AccrueCustomerId")
SUBSCRIPTION_STATUS = SearchAttributeKey.for_keyword("AccrueSubscriptionStatus")
PLAN_ID = SearchAttributeKey.for_keyword("AccruePlanId")
TEST_CLOCK_ID = SearchAttributeKey.for_keyword("AccrueTestClockId")

ALL = (MERCHANT_ID, CUSTOMER_ID, SUBSCRIPTION_STATUS, PLAN_ID, TEST_CLOCK_ID)


class SearchAttributeConflict(RuntimeError):
    """A search attribute exists under our name with another type; Temporal cannot change its type."""


def _indexed_type(key: SearchAttributeKey[Any]) -> IndexedValueType.ValueType:
    return IndexedValueType.ValueType(int(key.indexed_value_type))


async def _existing(client: Client, namespace: str) -> dict[str, IndexedValueType.ValueType] | None:
    """Registered custom attributes, or None where the server cannot list them (the time-skipping server)."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.UNIMPLEMENTED:
            return None
        raise
    return dict(listed.custom_attributes)


async def ensure_search_attributes(client: Client, namespace: str = "default") -> list[str]:
    """Register every Accrue search attribute that is missing; returns the names added.

    Idempotent and safe to run concurrently: an attribute that appears meanwhile counts as present.
    """
    existing = await _existing(client, namespace)
    added: list[str] = []
    for key in ALL:
        wanted = _indexed_type(key)
        if existing is not None and key.name in existing:
            if existing[key.name] != wanted:
                raise SearchAttributeConflict(
                    f"search attribute {key.name} exists in namespace {namespace!r} with type "
                    f"{IndexedValueType.Name(existing[key.name])}, expected {IndexedValueType.Name(wanted)}"
                )
            continue
        # One request per attribute: a batch fails as a whole when any one of them already exists.
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes={key.name: wanted})
            )
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise
            continue
        added.append(key.name)
    return added
