"""SourceInstallationWorkflow's typed messages: one pydantic model per input, signal, update, query and
activity (design rule 3). The clock update reuses the subscription's ClockAdvance → ClockAdvanced."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel

InstallationStatus = Literal["pending", "active", "error", "disconnected"]
ReviewAction = Literal["approve", "reject"]

# The workflow behaviour a state was written for (as SubscriptionState.workflow_version does it).
WORKFLOW_VERSION = 1


class InstallationRef(BaseModel):
    """Who the installation is, for every activity and the Temporal UI."""

    installation_id: str
    merchant_id: str
    environment: str
    source_id: str
    subscription_id: str
    customer_id: str
    test_clock_id: str | None = None  # the subscription's: the installation polls on that clock


class InstallationState(BaseModel):
    """Small and explicit: carried across continue-as-new. The events themselves live in PostgreSQL."""

    ref: InstallationRef
    status: InstallationStatus
    error_message: str | None = None
    # Pending events awaiting review, so an update's validator refuses a non-pending one before anything
    # enters history (design rule 4).
    pending_event_ids: list[str] = []
    polls: int = 0  # over the workflow's lifetime
    last_sync_at: datetime | None = None
    next_poll_at: datetime | None = None
    clock_now: datetime | None = None  # clock-bound: the test clock's reading (pushed by advance_clock)
    workflow_version: int = WORKFLOW_VERSION


class InstallationInput(BaseModel):
    installation_id: str
    poll_interval: timedelta = timedelta(minutes=5)  # Settings.source_poll_interval, from the starter
    polls_per_run: int = 100  # Settings.source_polls_per_run: then continue as new (design rule 5)
    state: InstallationState | None = None  # carried across continue-as-new; loaded on a fresh start


# ---- updates, signals, queries ------------------------------------------------------------------------


class AwaitConnected(BaseModel):
    """Update (sent with the start by the API's connect): returns once the key is validated."""

    installation_id: str


class Connected(BaseModel):
    installation_id: str
    status: InstallationStatus  # active, or error with `error_message`
    error_message: str | None = None


class ReviewEvents(BaseModel):
    """Update `review`: approve or reject pending events of this installation. `single` (one event's
    approve/reject endpoint): the validator refuses a non-pending event (→ 409); a bulk request reports each
    non-pending event as failed instead."""

    action: ReviewAction
    event_ids: list[str]
    processed_by: str  # the approver's user id
    single: bool = False


class ReviewFailure(BaseModel):
    id: str
    error: str


class ReviewResult(BaseModel):
    done: list[str] = []  # processed (approve) or rejected (reject)
    failed: list[ReviewFailure] = []  # approve: usage could not be recorded, or not pending; reject: skipped


class DisconnectRequest(BaseModel):
    """Update: the customer (API or portal) disconnects; polling ends."""

    reason: str = "disconnected by the customer"


class Disconnected(BaseModel):
    installation_id: str
    status: InstallationStatus
    disconnected_at: datetime | None = None


class PollNow(BaseModel):
    """Signal: poll at once (tests, the optional Stripe webhook endpoint, a re-enabled source)."""

    reason: str = ""


# ---- activities ---------------------------------------------------------------------------------------


class LoadInstallation(BaseModel):
    installation_id: str


class ValidateKey(BaseModel):
    ref: InstallationRef
    at: datetime  # the workflow's time (the clock's, when bound): connectedAt


class KeyValidated(BaseModel):
    status: InstallationStatus  # active | error
    error_message: str | None = None


class PollInstallation(BaseModel):
    ref: InstallationRef
    at: datetime  # the workflow's time: lastSyncAt, and usage time of imports when clock-bound
    poll: int  # this poll's number over the workflow's lifetime


class Polled(BaseModel):
    imported: int = 0  # new source events written
    approved: int = 0  # of those, approved at once (automatic mode or a rule)
    failed: int = 0  # approved but failed (currency mismatch)
    new_pending_ids: list[str] = []
    # Set when the poll found the key revoked (Stripe 401): the installation is now `error`.
    status: InstallationStatus = "active"
    error_message: str | None = None
    skipped: str | None = None  # why nothing was imported (source disabled, …)
    summary: str = ""


class ReviewRequest(BaseModel):
    ref: InstallationRef
    action: ReviewAction
    event_ids: list[str]
    processed_by: str
    at: datetime  # processedAt


class DisconnectInstallation(BaseModel):
    ref: InstallationRef
    at: datetime
    reason: str
