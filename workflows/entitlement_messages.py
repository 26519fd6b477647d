"""EntitlementWorkflow's messages and its activity declarations (one pydantic model per message)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from temporalio import activity

WORKFLOW_VERSION = 1
ADVANCES_PER_RUN = 100  # clock advances answered per run, then continue as new (design rule 5)


class EntitlementState(BaseModel):
    """What the workflow knows of its entitlement (loaded once; carried across continue-as-new)."""

    entitlement_id: str
    merchant_id: str
    environment: str
    customer_id: str
    subscription_id: str
    expires_at: datetime
    status: str  # active, exhausted, expired, released (the row's, as last seen)
    test_clock_id: str | None = None
    clock_now: datetime | None = None  # the test clock's reading, pushed by advance_clock
    workflow_version: int = WORKFLOW_VERSION


class EntitlementInput(BaseModel):
    entitlement_id: str
    state: EntitlementState | None = None  # None: loaded from the database by the first run


class LoadEntitlement(BaseModel):
    entitlement_id: str


class ExpireEntitlement(BaseModel):
    """Release the remainder if the entitlement is still active and `at` ≥ its expiresAt."""

    entitlement_id: str
    merchant_id: str
    environment: str
    at: datetime


class Expired(BaseModel):
    status: str  # the row's status afterwards
    released: int = 0  # nanodollars this call gave back to the wallet (0 when already settled)
    released_at: datetime | None = None


class EntitlementActivityDefs:
    """Declared here, implemented by activities.entitlement.EntitlementActivities (names are the methods')."""

    @activity.defn
    async def load_entitlement(self, request: LoadEntitlement) -> EntitlementState:
        raise NotImplementedError

    @activity.defn
    async def expire_entitlement(self, request: ExpireEntitlement) -> Expired:
        raise NotImplementedError
