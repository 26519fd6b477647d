"""GET /healthz: 200 only when both PostgreSQL and Temporal answer, 503 naming what does not."""

from __future__ import annotations

from typing import Any

import httpx

from api.app import create_app
from settings import Settings
from tests.e2e.dev_server import DevServer

UNREACHABLE_TEMPORAL = "127.0.0.1:1"
UNREACHABLE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/accrue"


async def healthz(settings: Settings) -> httpx.Response:
    """The app's own lifespan (engine, state) around one request, without a port."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://accrue") as http:
            return await http.get("/healthz")


def body(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    payload: dict[str, Any] = response.json()
    return payload


async def test_unreachable_temporal_is_reported(settings: Settings) -> None:
    payload = body(await healthz(settings.model_copy(update={"temporal_address": UNREACHABLE_TEMPORAL})), 503)
    assert payload["status"] == "degraded"
    assert payload["database"] == {"ok": True}
    assert payload["temporal"]["ok"] is False and payload["temporal"]["error"]


async def test_healthy_when_database_and_temporal_answer(
    settings: Settings, temporal_dev_server: DevServer
) -> None:
    payload = body(
        await healthz(settings.model_copy(update={"temporal_address": temporal_dev_server.address})), 200
    )
    assert payload == {"status": "ok", "database": {"ok": True}, "temporal": {"ok": True}}


async def test_unreachable_database_is_reported(settings: Settings, temporal_dev_server: DevServer) -> None:
    overrides = {"temporal_address": temporal_dev_server.address, "database_url": UNREACHABLE_DATABASE}
    payload = body(await healthz(settings.model_copy(update=overrides)), 503)
    assert payload["status"] == "degraded"
    assert payload["database"]["ok"] is False and payload["database"]["error"]
    assert payload["temporal"] == {"ok": True}


async def test_temporal_recovers_without_restarting_the_api(
    settings: Settings, temporal_dev_server: DevServer
) -> None:
    """A failed connection is not cached: the next check connects afresh."""
    app = create_app(settings.model_copy(update={"temporal_address": UNREACHABLE_TEMPORAL}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://accrue") as http:
            assert body(await http.get("/healthz"), 503)["temporal"]["ok"] is False
            app.state.settings = app.state.settings.model_copy(
                update={"temporal_address": temporal_dev_server.address}
            )
            assert body(await http.get("/healthz"), 200)["temporal"] == {"ok": True}
