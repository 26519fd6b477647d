from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from workflows.client import ensure_search_attributes
from workflows.ping import PingInput, PingResult, PingWorkflow
from workflows.search_attributes import ALL


async def test_ping_reaches_the_database_through_an_activity(
    temporal: Client, worker: Worker, engine: AsyncEngine
) -> None:
    result = await temporal.execute_workflow(
        PingWorkflow.run, PingInput(note="hello"), id=f"ping-{uuid4()}", task_queue=worker.task_queue
    )
    async with engine.connect() as conn:
        version = await conn.scalar(text("show server_version"))
    assert result == PingResult(note="hello", database_ok=True, server_version=str(version))


async def test_ping_history_names_its_activity(temporal: Client, worker: Worker) -> None:
    handle = await temporal.start_workflow(
        PingWorkflow.run, PingInput(), id=f"ping-{uuid4()}", task_queue=worker.task_queue
    )
    await handle.result()
    history = await handle.fetch_history()
    scheduled = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in scheduled] == [
        "check_database"
    ]
    assert scheduled[0].user_metadata.summary.data  # shown in the Temporal UI next to the activity


@workflow.defn(sandboxed=False)
class TagEverything:
    """Upserts every Accrue search attribute: fails its workflow task if any is not registered."""

    @workflow.run
    async def run(self) -> list[str]:
        workflow.upsert_search_attributes([key.value_set(f"v-{key.name}") for key in ALL])
        attributes = workflow.info().typed_search_attributes
        return [str(attributes.get(key)) for key in ALL]


async def test_every_search_attribute_can_be_upserted(temporal: Client) -> None:
    """The session fixture registered them; registering again adds nothing and does not fail."""
    assert await ensure_search_attributes(temporal) == []
    async with Worker(temporal, task_queue=f"tags-{uuid4()}", workflows=[TagEverything]) as tagger:
        values = await temporal.execute_workflow(
            TagEverything.run,
            id=f"tags-{uuid4()}",
            task_queue=tagger.task_queue,
            execution_timeout=timedelta(seconds=10),
        )
    assert values == [f"v-{key.name}" for key in ALL]
