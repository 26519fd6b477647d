"""Search attributes that make Accrue's workflows findable in the Temporal UI (design rule 9).

Workflows upsert these on each transition; the dev stack, compose and the test harness register them with
`workflows.client.ensure_search_attributes` before any worker runs, since Temporal rejects undefined
attributes.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair

MERCHANT_ID = SearchAttributeKey.for_keyword("AccrueMerchantId")
CUSTOMER_ID = SearchAttributeKey.for_keyword("AccrueCustomerId")
SUBSCRIPTION_STATUS = SearchAttributeKey.for_keyword("AccrueSubscriptionStatus")
PLAN_ID = SearchAttributeKey.for_keyword("AccruePlanId")
TEST_CLOCK_ID = SearchAttributeKey.for_keyword("AccrueTestClockId")
SOURCE_ID = SearchAttributeKey.for_keyword("AccrueSourceId")
SUBSCRIPTION_ID = SearchAttributeKey.for_keyword("AccrueSubscriptionId")
INSTALLATION_STATUS = SearchAttributeKey.for_keyword("AccrueInstallationStatus")

ALL = (
    MERCHANT_ID,
    CUSTOMER_ID,
    SUBSCRIPTION_STATUS,
    PLAN_ID,
    TEST_CLOCK_ID,
    SOURCE_ID,
    SUBSCRIPTION_ID,
    INSTALLATION_STATUS,
)


def subscription(
    merchant_id: str, customer_id: str, plan_id: str, status: str, test_clock_id: str | None
) -> list[SearchAttributePair[str]]:
    """A subscription workflow's attributes: the API's create sets them at start, the workflow upserts them
    on each transition."""
    pairs = [
        SearchAttributePair(MERCHANT_ID, merchant_id),
        SearchAttributePair(CUSTOMER_ID, customer_id),
        SearchAttributePair(PLAN_ID, plan_id),
        SearchAttributePair(SUBSCRIPTION_STATUS, status),
    ]
    if test_clock_id:
        pairs.append(SearchAttributePair(TEST_CLOCK_ID, test_clock_id))
    return pairs


def installation(
    merchant_id: str, source_id: str, subscription_id: str, status: str
) -> list[SearchAttributePair[str]]:
    """A source installation workflow's attributes: the API's connect sets them at start, the workflow
    upserts the status on each transition."""
    return [
        SearchAttributePair(MERCHANT_ID, merchant_id),
        SearchAttributePair(SOURCE_ID, source_id),
        SearchAttributePair(SUBSCRIPTION_ID, subscription_id),
        SearchAttributePair(INSTALLATION_STATUS, status),
    ]
