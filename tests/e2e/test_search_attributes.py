"""Registering Accrue's search attributes on a real dev server (which, unlike the test server, lists them)."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
    RemoveSearchAttributesRequest,
)

import worker
from settings import Settings
from tests.e2e.dev_server import SPARE_NAMESPACES, DevServer
from workflows.client import SearchAttributeConflict, connect, ensure_search_attributes
from workflows.search_attributes import ALL, PLAN_ID

KEYWORD = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
SPARE_NAMESPACE, CONFLICT_NAMESPACE, WORKER_NAMESPACE = SPARE_NAMESPACES


async def test_registers_missing_attributes_once(temporal_dev_server: DevServer) -> None:
    client = await connect(temporal_dev_server.address, SPARE_NAMESPACE)
    names = [key.name for key in ALL]
    assert await ensure_search_attributes(client, SPARE_NAMESPACE) == names
    assert await ensure_search_attributes(client, SPARE_NAMESPACE) == []
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=SPARE_NAMESPACE)
    )
    assert {name: listed.custom_attributes[name] for name in names} == dict.fromkeys(names, KEYWORD)

    # Only the missing one is added when some already exist.
    await client.operator_service.remove_search_attributes(
        RemoveSearchAttributesRequest(namespace=SPARE_NAMESPACE, search_attributes=[PLAN_ID.name])
    )
    assert await ensure_search_attributes(client, SPARE_NAMESPACE) == [PLAN_ID.name]


async def test_attribute_of_another_type_is_a_clear_error(temporal_dev_server: DevServer) -> None:
    client = await connect(temporal_dev_server.address, CONFLICT_NAMESPACE)
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=CONFLICT_NAMESPACE,
            search_attributes={PLAN_ID.name: IndexedValueType.INDEXED_VALUE_TYPE_INT},
        )
    )
    with pytest.raises(SearchAttributeConflict, match=r"AccruePlanId .* INDEXED_VALUE_TYPE_INT"):
        await ensure_search_attributes(client, CONFLICT_NAMESPACE)


async def test_worker_registers_them_on_start(temporal_dev_server: DevServer, settings: Settings) -> None:
    """How compose and other deployments get them: `accrue worker` registers what is missing, then polls."""
    settings = settings.model_copy(
        update={"temporal_address": temporal_dev_server.address, "temporal_namespace": WORKER_NAMESPACE}
    )
    client = await connect(temporal_dev_server.address, WORKER_NAMESPACE)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(settings, stop))
    try:
        for _ in range(100):
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=WORKER_NAMESPACE)
            )
            if all(key.name in listed.custom_attributes for key in ALL):
                break
            assert not running.done(), running.exception()
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the worker did not register the search attributes")
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
