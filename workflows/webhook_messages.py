"""WebhookEndpointWorkflow's typed messages (one pydantic model per input, signal, query and activity)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class EndpointRef(BaseModel):
    """Enough to start an endpoint's workflow (signal-with-start) and to label it in the Temporal UI."""

    endpoint_id: str
    merchant_id: str
    environment: str


class EndpointInput(BaseModel):
    endpoint: EndpointRef
    batches: int = 0  # batches delivered by earlier runs, carried across continue-as-new
    batches_per_run: int = 200  # then continue as new (design rule 5); tests start runs with fewer


class Wake(BaseModel):
    """Look at the database now: messages arrived, a resend or recover was asked for, or the endpoint was
    changed (enabled, disabled, rate limit) or deleted. The reason is for the history only."""

    reason: str = ""


class DeliverBatch(BaseModel):
    """Activity: attempt the endpoint's deliveries due at `now` (the workflow's time, so attempt times and
    retry times follow Temporal's clock, and time-skipping tests see the schedule's exact offsets)."""

    endpoint: EndpointRef
    now: datetime
    batch: int  # this batch's number over the workflow's lifetime (carried across continue-as-new)
    limit: int = 100  # most deliveries claimed at once


class BatchDelivered(BaseModel):
    """What a batch did, and what the endpoint's backlog looks like after it."""

    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0  # the schedule's last attempt failed
    summary: str = "nothing due"  # "100 messages → 97 delivered, 3 retry in 5 min"
    backlog: int = 0  # pending deliveries left (counted up to BACKLOG_COUNT_CAP)
    backlog_capped: bool = False  # there are more than `backlog`
    oldest_message_id: str | None = None  # the oldest pending delivery's message
    oldest_message_at: datetime | None = None
    next_due_at: datetime | None = None  # earliest scheduled retry; None: nothing scheduled
    more_due: bool = False  # something is due already: run the next batch at once
    gone: bool = False  # the endpoint was deleted: the workflow ends
    disabled: bool = False  # nothing attempted: wait for a wake (re-enable)
    disabled_reason: str | None = None
