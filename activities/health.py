"""Activities that check the worker's own dependencies."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity


class DatabaseCheck(BaseModel):
    server_version: str


class HealthActivities:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @activity.defn
    async def check_database(self) -> DatabaseCheck:
        async with self.engine.connect() as conn:
            version = await conn.scalar(text("show server_version"))
        return DatabaseCheck(server_version=str(version))
