"""Activities that check the worker's own dependencies."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from workflows.ping import DatabaseCheck, HealthActivityDefs


class HealthActivities(HealthActivityDefs):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @activity.defn
    async def check_database(self) -> DatabaseCheck:
        async with self.engine.connect() as conn:
            version = await conn.scalar(text("show server_version"))
        return DatabaseCheck(server_version=str(version))
