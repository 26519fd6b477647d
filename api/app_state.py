"""What the app holds for its requests: settings and the lazily connected Temporal client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from temporalio.client import Client
from temporalio.service import RPCError

from db.models import WebhookEndpoint
from settings import Settings
from workflows import client as workflow_client
from workflows.client import connect
from workflows.webhook_messages import EndpointRef

log = logging.getLogger(__name__)

# A wake is a nudge after a committed write; the request does not wait long for an unreachable Temporal.
WAKE_TIMEOUT_SECONDS = 5.0


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def temporal_client(app: FastAPI) -> Client:
    """The app's Temporal client, connected on first use so the API starts even while Temporal is down."""
    if app.state.temporal is None:
        settings: Settings = app.state.settings
        app.state.temporal = await connect(settings.temporal_address, settings.temporal_namespace)
    client: Client = app.state.temporal
    return client


async def wake_webhook_endpoints(app: FastAPI, endpoints: Sequence[WebhookEndpoint], reason: str) -> None:
    """Tell each endpoint's workflow to look at its deliveries now, after a committed write gave it work or
    changed it. Best effort: the write stands, so an unreachable Temporal is logged, not answered with an
    error; the relay wakes every endpoint with pending deliveries whenever its listening activity starts
    (every few minutes), so the work is picked up once Temporal is back."""
    if not endpoints:
        return
    refs = [
        EndpointRef(endpoint_id=e.id, merchant_id=e.merchant_id, environment=e.environment) for e in endpoints
    ]
    try:
        client = await asyncio.wait_for(temporal_client(app), WAKE_TIMEOUT_SECONDS)
        await asyncio.wait_for(
            workflow_client.wake_webhook_endpoints(client, app.state.settings.task_queue, refs, reason),
            WAKE_TIMEOUT_SECONDS,
        )
    except (RPCError, RuntimeError, OSError, TimeoutError) as exc:
        ids = ", ".join(r.endpoint_id for r in refs)
        log.warning("webhook endpoint(s) %s not woken (%s): %s; the relay wakes them later", ids, reason, exc)
