"""What the app holds for its requests: settings and the lazily connected Temporal client."""

from __future__ import annotations

from fastapi import FastAPI, Request
from temporalio.client import Client

from settings import Settings
from workflows.client import connect


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
