"""Source events API without a workflow (behavior §9.3, D16): the list with its filters and paging, and
every review answer decided before the installation's workflow is asked: 404 for an event not in the
source, 409 for a non-pending one, per-item failures for ids of other sources, 400 for bad id lists, and a
503 envelope (nothing changed) when the workflow service cannot be reached. Approvals themselves:
tests/workflows/test_sources_api.py. Installations and events are inserted with tests.factories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import SourceEvent
from db.session import session_factory
from tests.api.source_harness import PAID, World, api_client, event, installation, make_world
from tests.factories import Factory
from tests.helpers import assert_error, field_errors


@pytest.fixture
async def world(api_url: str, engine: AsyncEngine, merchant: NewMerchant) -> AsyncIterator[World]:
    async with api_client(api_url, merchant) as http:
        yield await make_world(http, Factory(engine, merchant))


@pytest.fixture
async def other(api_url: str, engine: AsyncEngine, other_merchant: NewMerchant) -> AsyncIterator[World]:
    async with api_client(api_url, other_merchant) as http:
        yield await make_world(http, Factory(engine, other_merchant))


async def status_of(engine: AsyncEngine, event_id: str) -> str:
    async with session_factory(engine)() as session:
        return (await session.get_one(SourceEvent, event_id)).status


async def test_list_filters_pages_and_is_newest_first(world: World) -> None:
    source = await world.source(processingMode="manual")
    sub_a = await world.factory.subscription(world.plan)
    sub_b = await world.factory.subscription(world.plan)
    inst_a = await installation(world.factory, source["id"], sub_a)
    inst_b = await installation(world.factory, source["id"], sub_b)
    a_events = [await event(world.factory, inst_a) for _ in range(11)]
    processed = await event(
        world.factory,
        inst_b,
        status="processed",
        processed_at=PAID + timedelta(hours=1),
        processed_by="user_1",
        usage_event_ids=["evt_1"],
    )
    url = f"/v0/sources/{source['id']}/events"

    page = (await world.http.get(url)).json()
    assert page["pagination"] == {"limit": 10, "offset": 0, "total": 12, "hasMore": True}
    newest_first = [processed.id] + [e.id for e in reversed(a_events)]
    assert [e["id"] for e in page["data"]] == newest_first[:10]
    rest = (await world.http.get(url, params={"offset": 10})).json()
    assert [e["id"] for e in rest["data"]] == newest_first[10:]

    shown = page["data"][0]
    assert shown == {
        "id": processed.id,
        "object": "sourceEvent",
        "sourceId": source["id"],
        "installationId": inst_b.id,
        "externalEventId": processed.external_event_id,
        "status": "processed",
        "rawData": {"object": "invoice", "amount_paid": 12345},
        "customerId": sub_b.customer_id,
        "subscriptionId": sub_b.id,
        "amount": "123.45",
        "currency": "USD",
        "errorMessage": None,
        "processedAt": "2026-03-01T13:00:00.000Z",
        "processedBy": "user_1",
        "usageEventIds": ["evt_1"],
        "createdAt": shown["createdAt"],
        "updatedAt": shown["updatedAt"],
    }

    def ids(response: Any) -> list[str]:
        return [e["id"] for e in response.json()["data"]]

    assert ids(await world.http.get(url, params={"status": "processed"})) == [processed.id]
    assert len(ids(await world.http.get(url, params={"status": "pending", "limit": 100}))) == 11
    assert ids(await world.http.get(url, params={"status": "rejected"})) == []
    assert ids(await world.http.get(url, params={"customerId": sub_b.customer_id})) == [processed.id]
    assert ids(await world.http.get(url, params={"subscriptionId": sub_b.id})) == [processed.id]
    assert (
        ids(await world.http.get(url, params={"subscriptionId": sub_a.id, "limit": 3})) == newest_first[1:4]
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "approved"}, "status"), ({"limit": 101}, "limit"), ({"limit": 0}, "limit")],
)
async def test_list_rejects_bad_parameters(world: World, params: dict[str, Any], field: str) -> None:
    source = await world.source()
    assert field in field_errors(await world.http.get(f"/v0/sources/{source['id']}/events", params=params))


async def test_events_of_another_tenant_are_not_found(world: World, other: World) -> None:
    theirs = await other.source()
    their_event = await event(other.factory, await installation(other.factory, theirs["id"]))
    base = f"/v0/sources/{theirs['id']}/events"
    assert_error(await world.http.get(base), 404)
    assert_error(await world.http.post(f"{base}/{their_event.id}/approve"), 404)
    assert_error(await world.http.post(f"{base}/{their_event.id}/reject"), 404)
    assert_error(await world.http.post(f"{base}/bulk-approve", json={"eventIds": [their_event.id]}), 404)
    assert_error(await world.http.post(f"{base}/bulk-reject", json={"eventIds": [their_event.id]}), 404)
    # Through the caller's own source, another source's event is not there.
    mine = await world.source()
    message = assert_error(
        await world.http.post(f"/v0/sources/{mine['id']}/events/{their_event.id}/approve"), 404
    )
    assert message["message"] == f"Source event {their_event.id!r} was not found"


async def test_review_of_a_non_pending_event_is_409(world: World, engine: AsyncEngine) -> None:
    source = await world.source(processingMode="manual")
    inst = await installation(world.factory, source["id"])
    for status in ("processed", "rejected", "failed"):
        row = await event(world.factory, inst, status=status)
        for action, verb in (("approve", "approved"), ("reject", "rejected")):
            response = await world.http.post(f"/v0/sources/{source['id']}/events/{row.id}/{action}")
            body = assert_error(response, 409, "conflict")
            assert body["message"] == (
                f"Source event {row.id} is {status}, not pending: only a pending event can be {verb}"
            )
            assert body["details"] == {"status": status}
        assert await status_of(engine, row.id) == status
    assert_error(await world.http.post(f"/v0/sources/{source['id']}/events/sev_unknown/approve"), 404)


async def test_review_without_a_reachable_workflow_service_is_a_503_that_changes_nothing(
    world: World, engine: AsyncEngine
) -> None:
    source = await world.source(processingMode="manual")
    row = await event(world.factory, await installation(world.factory, source["id"]))
    base = f"/v0/sources/{source['id']}/events"
    for response in (
        await world.http.post(f"{base}/{row.id}/approve"),
        await world.http.post(f"{base}/{row.id}/reject"),
        await world.http.post(f"{base}/bulk-approve", json={"eventIds": [row.id, "sev_other"]}),
        await world.http.post(f"{base}/bulk-reject", json={"eventIds": [row.id]}),
    ):
        body = assert_error(response, 503, "service_unavailable")
        assert body["message"].startswith("Could not reach the workflow service to ")
    assert await status_of(engine, row.id) == "pending"


async def test_bulk_ids_not_in_the_source_fail_one_by_one(world: World, other: World) -> None:
    source = await world.source(processingMode="manual")
    elsewhere = await world.source(name="another source")
    mine_elsewhere = await event(world.factory, await installation(world.factory, elsewhere["id"]))
    theirs = await event(other.factory, await installation(other.factory, (await other.source())["id"]))
    ids = [mine_elsewhere.id, "sev_unknown", theirs.id, "sev_unknown"]
    base = f"/v0/sources/{source['id']}/events"

    response = await world.http.post(f"{base}/bulk-approve", json={"eventIds": ids})
    assert response.status_code == 200, response.text
    reason = f"not found in source {source['id']}"
    assert response.json() == {
        "processed": 0,
        "failed": 3,
        "details": {
            "processed": [],
            "failed": [
                {"id": mine_elsewhere.id, "error": reason},
                {"id": "sev_unknown", "error": reason},
                {"id": theirs.id, "error": reason},
            ],
        },
    }
    response = await world.http.post(f"{base}/bulk-reject", json={"eventIds": ids})
    assert response.status_code == 200, response.text
    assert response.json() == {"rejected": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "eventIds"),
        ({"eventIds": []}, "eventIds"),
        ({"eventIds": [f"sev_{i}" for i in range(1001)]}, "eventIds"),
        ({"eventIds": "sev_1"}, "eventIds"),
        ({"eventIds": [1]}, "eventIds.0"),
        ({"eventIds": [""]}, "eventIds.0"),
    ],
)
async def test_bulk_rejects_bad_id_lists(world: World, body: dict[str, Any], field: str) -> None:
    source = await world.source()
    for action in ("bulk-approve", "bulk-reject"):
        response = await world.http.post(f"/v0/sources/{source['id']}/events/{action}", json=body)
        assert field in field_errors(response)


async def test_a_thousand_ids_are_accepted(world: World) -> None:
    source = await world.source()
    ids = [f"sev_{i}" for i in range(1000)]
    response = await world.http.post(
        f"/v0/sources/{source['id']}/events/bulk-approve", json={"eventIds": ids}
    )
    assert response.status_code == 200, response.text
    assert response.json()["failed"] == 1000


async def test_events_imported_together_list_newest_paid_first(world: World) -> None:
    source = await world.source()
    inst = await installation(world.factory, source["id"])
    first, second = sorted(
        [await event(world.factory, inst), await event(world.factory, inst)], key=lambda e: e.id
    )
    # One poll's transaction (one created_at); the smaller id paid later, so id order alone would be wrong.
    later = await world.factory.update(
        first, paid_at=PAID + timedelta(minutes=5), created_at=second.created_at
    )
    listed = (await world.http.get(f"/v0/sources/{source['id']}/events")).json()
    assert [e["id"] for e in listed["data"]] == [later.id, second.id]
