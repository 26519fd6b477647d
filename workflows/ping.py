"""PingWorkflow: proves a worker polls the task queue and reaches the database (used by `accrue dev`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.health import DatabaseCheck, HealthActivities


class PingInput(BaseModel):
    note: str = ""


class PingResult(BaseModel):
    note: str
    database_ok: bool
    server_version: str


@workflow.defn
class PingWorkflow:
    @workflow.run
    async def run(self, request: PingInput) -> PingResult:
        check: DatabaseCheck = await workflow.execute_activity_method(
            HealthActivities.check_database,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary="check database",
        )
        return PingResult(note=request.note, database_ok=True, server_version=check.server_version)
