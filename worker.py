"""The worker's composition root: settings → engine → activities → Temporal Worker."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker

from activities.health import HealthActivities
from db.session import create_engine
from settings import Settings
from workflows.client import connect
from workflows.ping import PingWorkflow

WORKFLOWS = [PingWorkflow]


def build_worker(client: Client, engine: AsyncEngine, task_queue: str) -> Worker:
    health = HealthActivities(engine)
    return Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=[health.check_database])


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Poll until cancelled or `stop` is set; then finish in-flight tasks and close the engine."""
    logging.basicConfig(level=settings.log_level)
    engine = create_engine(settings.database_url, settings.db_pool_size)
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    try:
        worker = build_worker(client, engine, settings.task_queue)
        async with worker:
            await (stop or asyncio.Event()).wait()
    finally:
        await engine.dispose()
