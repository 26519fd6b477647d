"""PingWorkflow: proves a worker polls the task queue and reaches the database (used by `accrue dev`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy


class PingInput(BaseModel):
    note: str = ""


class PingResult(BaseModel):
    note: str
    database_ok: bool
    server_version: str


class DatabaseCheck(BaseModel):
    server_version: str


class HealthActivityDefs:
    """Declared here, implemented by activities.health.HealthActivities (the name is the method's)."""

    @activity.defn
    async def check_database(self) -> DatabaseCheck:
        raise NotImplementedError


@workflow.defn
class PingWorkflow:
    @workflow.run
    async def run(self, request: PingInput) -> PingResult:
        check: DatabaseCheck = await workflow.execute_activity_method(
            HealthActivityDefs.check_database,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary="check database",
        )
        return PingResult(note=request.note, database_ok=True, server_version=check.server_version)
