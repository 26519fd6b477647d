"""WebhookEndpointWorkflow's typed messages (one pydantic model per input, signal, query and activity)."""

from __future__ import annotations

from pydantic import BaseModel


class EndpointRef(BaseModel):
    """Enough to start an endpoint's workflow (signal-with-start) and to label it in the Temporal UI."""

    endpoint_id: str
    merchant_id: str
    environment: str


class EndpointInput(BaseModel):
    endpoint: EndpointRef
    batches: int = 0  # batches delivered by earlier runs, carried across continue-as-new


class Wake(BaseModel):
    """Look at the database now: messages arrived, a resend or recover was asked for, or the endpoint was
    changed (enabled, disabled, rate limit) or deleted. The reason is for the history only."""

    reason: str = ""
