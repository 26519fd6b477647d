"""The FastAPI application factory: the API's composition root."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from api import errors, log_redaction
from api.app_state import temporal_client
from api.body_limit import RequestGuard
from api.problems import ERROR_RESPONSES
from api.routers import (
    authorization_links,
    billable_metrics,
    customers,
    disputes,
    entitlements,
    events,
    features,
    fees,
    invoices,
    meters,
    one_off_payments,
    payments,
    plans,
    portal,
    portal_sources,
    prices,
    products,
    revenue,
    source_events,
    source_installations,
    source_review_page,
    source_rules,
    sources,
    stripe_checkout,
    stripe_webhooks,
    subscriptions,
    test_clocks,
    topups,
    usage,
    users,
    webhook_portal,
    webhooks,
)
from db.session import create_engine, session_factory
from integrations.secret_box import startup_warning
from settings import Settings

ROUTERS = [
    # First: routes are matched in order, and event ingestion is by far the most frequent request.
    events.router,
    usage.router,  # POST /v0/usage: as hot as event ingestion
    products.router,
    billable_metrics.router,
    fees.router,
    features.router,
    prices.router,
    plans.router,
    authorization_links.router,
    customers.router,
    entitlements.router,
    topups.router,
    users.router,
    subscriptions.router,
    portal.router,
    meters.router,
    invoices.router,
    test_clocks.router,
    payments.router,
    one_off_payments.router,
    stripe_webhooks.router,  # POST /v0/stripe/webhooks (Stripe-Signature, no API key)
    revenue.router,
    disputes.router,
    webhooks.router,
    sources.router,
    source_rules.router,
    source_events.router,
    source_installations.router,
    source_review_page.router,
    # HTML pages for payers, customers and merchants (no API key): hosted checkout, the customer portal and
    # the webhook portal.
    payments.page_router,
    stripe_checkout.router,  # the Stripe checkout page's card routes
    one_off_payments.page_router,
    portal.page_router,
    portal_sources.page_router,
    webhook_portal.page_router,
    source_review_page.page_router,
    authorization_links.page_router,
]


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, settings.db_pool_size)
        if warning := startup_warning(settings.secret_key.get_secret_value()):
            logging.getLogger("accrue.api").warning(warning)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.temporal = None
        events.start(app, engine, lanes=settings.event_writer_lanes, linger=settings.event_writer_linger)
        # What exists now lives as long as the process; frozen, it is left out of the collector's full
        # passes, which otherwise pause every request for tens of ms on this heap (bench/events_ingest.py).
        gc.freeze()
        try:
            yield
        finally:
            await events.stop(app)
            await usage.stop(app)
            await engine.dispose()

    app = FastAPI(
        title="Accrue",
        version="0.1.0",
        summary="Usage-based billing that speaks the Paygentic API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    log_redaction.install()
    for router in ROUTERS:
        app.include_router(router, responses=ERROR_RESPONSES)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["operations"])
    _offline_docs(app)
    app.add_middleware(
        RequestGuard,
        max_bytes=settings.max_request_bytes,
        body_timeout=settings.request_body_timeout,
        direct={("POST", "/v0/events"): events.ingest_event, ("POST", "/v0/usage"): usage.create_usage_event},
    )
    return app


DOCS_ASSETS = "/docs-assets"


def _offline_docs(app: FastAPI) -> None:
    """/docs and /redoc with Swagger UI and ReDoc served from the installed fastapi-offline package: FastAPI's
    defaults load them from a CDN, and the pages stay blank on a machine without internet."""
    app.mount(
        DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets"
    )

    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


async def healthz(request: Request) -> JSONResponse:
    """Whether the database and Temporal answer; 503 when either does not."""
    checks: dict[str, Any] = {}
    try:
        async with request.app.state.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("select 1")), 5)
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": str(exc) or type(exc).__name__}
    try:
        client = await asyncio.wait_for(temporal_client(request.app), 5)
        await asyncio.wait_for(client.service_client.check_health(), 5)
        checks["temporal"] = {"ok": True}
    except Exception as exc:
        request.app.state.temporal = None
        checks["temporal"] = {"ok": False, "error": str(exc) or type(exc).__name__}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ok" if ok else "degraded", **checks}, status_code=200 if ok else 503)
