"""The worker's composition root: settings → engine → activities → Temporal Worker."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.entitlement import EntitlementActivities
from activities.health import HealthActivities
from activities.heartbeat import HeartbeatInterceptor
from activities.payment import PaymentActivities
from activities.reconciler import ReconcilerActivities
from activities.source_installation import SourceInstallationActivities
from activities.subscription import SubscriptionActivities
from activities.test_clock import TestClockActivities
from activities.webhook_delivery import WebhookDeliveryActivities, http_client
from activities.webhook_relay import WebhookRelayActivities
from db.session import create_engine
from integrations.payments import provider_named
from integrations.payments.sessions import ProviderChoice
from integrations.secret_box import SecretBox, startup_warning
from integrations.stripe_revenue import StripeRevenue
from settings import Settings
from workflows.client import (
    connect,
    ensure_reconciler_schedule,
    ensure_search_attributes,
    ensure_webhook_relay,
)
from workflows.entitlement import EntitlementWorkflow
from workflows.payment import PaymentWorkflow
from workflows.ping import PingWorkflow
from workflows.reconciler import ReconcilerWorkflow
from workflows.source_installation import SourceInstallationWorkflow
from workflows.subscription import SubscriptionWorkflow
from workflows.test_clock import TestClockWorkflow
from workflows.webhook_endpoint import WebhookEndpointWorkflow
from workflows.webhook_relay import WebhookRelayWorkflow

WORKFLOWS = [
    PingWorkflow,
    SubscriptionWorkflow,
    ReconcilerWorkflow,
    TestClockWorkflow,
    WebhookRelayWorkflow,
    WebhookEndpointWorkflow,
    SourceInstallationWorkflow,
    EntitlementWorkflow,
    PaymentWorkflow,
]

log = logging.getLogger(__name__)


def build_worker(
    client: Client,
    engine: AsyncEngine,
    task_queue: str,
    grace_period: timedelta = timedelta(hours=24),
    base_url: str = "http://127.0.0.1:8000",  # the API's (Settings.base_url), for links in outbox payloads
    secret_key: str = "",  # Settings.secret_key: opens the endpoints' sealed signing secrets
    webhook_http: httpx.AsyncClient | None = None,  # run() passes one it closes; tests let the worker own it
    cached_workflows: int = 1000,  # Settings.worker_cached_workflows
    stripe_api_base: str = "",  # Settings.stripe_api_base: customers' Stripe accounts (empty: Stripe's own)
    source_poll_interval: timedelta = timedelta(
        minutes=5
    ),  # Settings.source_poll_interval (reconciler starts)
    source_polls_per_run: int = 100,  # Settings.source_polls_per_run
    # Payment providers and the dunning schedule/policy (issue 11); None: sandbox provider, default dunning.
    payment_settings: Settings | None = None,
) -> Worker:
    health = HealthActivities(engine)
    subscriptions = (
        SubscriptionActivities(engine, grace_period, base_url)
        if payment_settings is None
        else SubscriptionActivities(
            engine,
            grace_period,
            base_url,
            dunning_schedule=payment_settings.dunning_schedule,
            dunning_policy=payment_settings.dunning_policy,
            provider_named=partial(provider_named, payment_settings),
            payment_choice=ProviderChoice(payment_settings),
        )
    )
    reconciler = ReconcilerActivities(engine, client, task_queue, source_poll_interval, source_polls_per_run)
    clocks = TestClockActivities(engine, client)
    relay = WebhookRelayActivities(engine, client, task_queue)
    deliveries = WebhookDeliveryActivities(engine, SecretBox(secret_key), webhook_http or http_client())
    installations = SourceInstallationActivities(
        engine, StripeRevenue(stripe_api_base), SecretBox(secret_key)
    )
    entitlement_activities = EntitlementActivities(engine)
    payment_activities = PaymentActivities(
        engine, partial(provider_named, payment_settings) if payment_settings is not None else None
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[
            health.check_database,
            *subscriptions.all(),
            reconciler.reconcile_subscriptions,
            *clocks.all(),
            relay.relay_outbox,
            *deliveries.all(),
            *installations.all(),
            *entitlement_activities.all(),
            *payment_activities.all(),
        ],
        # Every workflow run pays for a fresh sandbox (about 10 ms
        # of worker CPU, bench/period_close.py). Determinism is checked instead where it is cheap: CI replays
        # every recorded and freshly recorded history through the sandboxed Replayer (test_replay.py).
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_cached_workflows=cached_workflows,
        interceptors=[HeartbeatInterceptor()],
    )


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Poll until cancelled or `stop` is set; then finish in-flight tasks and close the engine."""
    logging.basicConfig(level=settings.log_level)
    if warning := startup_warning(settings.secret_key.get_secret_value()):
        log.warning(warning)
    engine = create_engine(settings.database_url, settings.db_pool_size, pre_ping=False)
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    await register_search_attributes(client, settings.temporal_namespace)
    await ensure_reconciler_schedule(client, settings.task_queue, settings.reconcile_interval)
    await ensure_webhook_relay(client, settings.task_queue)
    try:
        async with http_client() as webhook_http:
            worker = build_worker(
                client,
                engine,
                settings.task_queue,
                settings.invoice_grace_period,
                settings.base_url,
                settings.secret_key.get_secret_value(),
                webhook_http,
                settings.worker_cached_workflows,
                settings.stripe_api_base,
                settings.source_poll_interval,
                settings.source_polls_per_run,
                payment_settings=settings,
            )
            async with worker:
                await (stop or asyncio.Event()).wait()
    finally:
        await engine.dispose()


async def register_search_attributes(client: Client, namespace: str) -> None:
    """Every deployment (compose included) gets them from its first worker; a no-op once they exist."""
    try:
        added = await ensure_search_attributes(client, namespace)
    except RPCError as err:
        if err.status != RPCStatusCode.PERMISSION_DENIED:
            raise
        # Some hosted Temporal setups reserve this for operators: run without, and say what is missing.
        log.warning("cannot register Accrue's search attributes in %r: %s", namespace, err.message)
        return
    if added:
        log.info("registered search attributes %s in %r", ", ".join(added), namespace)
