"""Test clocks (D19): sandbox only, create/list/get, advancing forward by time or duration (at most 5 years
per call), soft delete blocked by bound subscriptions, and the hook that lets bound subscriptions catch up."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from api.routers import test_clocks as test_clocks_router
from db.merchants import NewMerchant, create_merchant
from db.models import TestClock
from db.session import session_factory
from tests.factories import Factory
from tests.helpers import assert_error, field_errors, sdk063_python

START = datetime(2027, 1, 31, 10, tzinfo=UTC)
START_ISO = "2027-01-31T10:00:00.000Z"


def create(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v0/testClocks", json={"currentTime": START_ISO, "name": "Q1 run"} | body)


def clock_at(client: httpx.Client, clock_id: str) -> str:
    current: str = client.get(f"/v0/testClocks/{clock_id}").json()["currentTime"]
    return current


@pytest.fixture
def advanced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Stands in for the clock's workflow (these tests run the API without Temporal; tests/workflows drive
    the real one): records each call and writes the new time as its record_clock_time activity does."""
    calls: list[dict[str, Any]] = []

    async def fake(app: Any, clock_id: str, expected_from: datetime, to: datetime) -> None:
        calls.append({"clock": clock_id, "from": expected_from, "new_time": to})
        async with app.state.sessions() as session:
            await session.execute(update(TestClock).where(TestClock.id == clock_id).values(current_time=to))
            await session.commit()

    monkeypatch.setattr(test_clocks_router, "drive", fake)
    yield calls


@pytest.fixture
async def live_merchant(engine: AsyncEngine) -> NewMerchant:
    async with session_factory(engine)() as session:
        return await create_merchant(session, "Live Merchant", "live")


@pytest.fixture
def live_client(api_url: str, live_merchant: NewMerchant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {live_merchant.api_key}"}) as c:
        yield c


@pytest.fixture
async def aclient(api_url: str, merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as c:
        yield c


# ---- lifecycle ------------------------------------------------------------------------------------------


def test_clock_lifecycle_through_sdk(
    sdk: Paygentic, merchant: NewMerchant, advanced: list[dict[str, Any]]
) -> None:
    clock = sdk.test_clocks.create(current_time=START, name="Q1 run", description="quarter end")
    assert clock.id.startswith("tc_") and len(clock.id) == len("tc_") + 16
    assert (clock.merchant_id, clock.current_time, clock.name, clock.description) == (
        merchant.merchant_id,
        START,
        "Q1 run",
        "quarter end",
    )
    assert clock.deleted_at is None
    assert sdk.test_clocks.get(id=clock.id).current_time == START

    listed = sdk.test_clocks.list(request={"merchant_id": merchant.merchant_id})
    assert listed.data is not None and [c.id for c in listed.data] == [clock.id]
    assert listed.pagination is not None and listed.pagination.total == 1

    # Calendar months clamp to the month end: Jan 31 + P1M is Feb 28.
    month = sdk.test_clocks.advance(id=clock.id, request_body={"advance_by": "P1M"})
    assert month.current_time == datetime(2027, 2, 28, 10, tzinfo=UTC)
    later = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
    moved = sdk.test_clocks.advance(id=clock.id, request_body={"current_time": later})
    assert moved.current_time == later and moved.updated_at >= clock.updated_at
    assert [c["new_time"] for c in advanced] == [datetime(2027, 2, 28, 10, tzinfo=UTC), later]

    deleted = sdk.test_clocks.delete(id=clock.id)
    assert deleted.deleted_at is not None and deleted.current_time == later
    assert sdk.test_clocks.get(id=clock.id).deleted_at == deleted.deleted_at
    after = sdk.test_clocks.list()
    assert after.data == [] and after.pagination is not None and after.pagination.total == 0


def test_current_time_defaults_to_now(client: httpx.Client) -> None:
    before = datetime.now(UTC)
    response = client.post("/v0/testClocks", json={})
    assert response.status_code == 201, response.text
    current = datetime.fromisoformat(response.json()["currentTime"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= current <= datetime.now(UTC)
    assert response.json()["name"] is None


def test_current_time_may_be_up_to_an_hour_in_the_past(client: httpx.Client) -> None:
    recent = (datetime.now(UTC) - timedelta(minutes=50)).isoformat()
    assert create(client, currentTime=recent).status_code == 201
    naive_future = "2030-06-01T12:00:00"
    response = create(client, currentTime=naive_future)
    assert response.json()["currentTime"] == "2030-06-01T12:00:00.000Z"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"currentTime": "2020-01-01T00:00:00Z"}, "currentTime"),
        ({"currentTime": "yesterday"}, "currentTime"),
        ({"currentTime": 1700000000000}, "currentTime"),
        ({"name": ""}, "name"),
        ({"name": 12}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"description": ["x"]}, "description"),
        ({"merchantId": 5}, "merchantId"),
    ],
)
def test_create_rejects_bad_fields(client: httpx.Client, overrides: dict[str, object], field: str) -> None:
    assert field in field_errors(create(client, **overrides))
    assert client.get("/v0/testClocks").json()["pagination"]["total"] == 0


def test_create_an_hour_and_more_in_the_past_names_the_limit(client: httpx.Client) -> None:
    stale = (datetime.now(UTC) - timedelta(minutes=61)).isoformat()
    assert "1 hour" in field_errors(create(client, currentTime=stale))["currentTime"]


def test_create_for_another_merchant_is_forbidden(client: httpx.Client, other_merchant: NewMerchant) -> None:
    assert_error(create(client, merchantId=other_merchant.merchant_id), 403, "forbidden")
    assert_error(client.get("/v0/testClocks", params={"merchantId": other_merchant.merchant_id}), 403)
    assert client.get("/v0/testClocks").json()["pagination"]["total"] == 0


def test_list_pages(client: httpx.Client) -> None:
    ids = [create(client, name=f"c{i}").json()["id"] for i in range(3)]
    first = client.get("/v0/testClocks", params={"limit": 2}).json()
    second = client.get("/v0/testClocks", params={"limit": 2, "offset": 2}).json()
    assert [c["id"] for c in first["data"] + second["data"]] == ids
    assert first["pagination"] == {"limit": 2, "offset": 0, "total": 3, "hasMore": True}


# ---- advancing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"currentTime": "2027-03-01T00:00:00Z", "advanceBy": "P1D"}, "body"),
        ({"currentTime": None}, "body"),
        ({"currentTime": START_ISO}, "currentTime"),
        ({"currentTime": "2027-01-31T09:59:59Z"}, "currentTime"),
        ({"currentTime": "2032-01-31T10:00:01Z"}, "currentTime"),
        ({"currentTime": "soon"}, "currentTime"),
        ({"advanceBy": "1M"}, "advanceBy"),
        ({"advanceBy": "P-1M"}, "advanceBy"),
        ({"advanceBy": "PT1.5H"}, "advanceBy"),
        ({"advanceBy": "P0D"}, "advanceBy"),
        ({"advanceBy": "P"}, "advanceBy"),
        ({"advanceBy": "P5Y1D"}, "advanceBy"),
        ({"advanceBy": "P61M"}, "advanceBy"),
        ({"advanceBy": "P9000Y"}, "advanceBy"),
        ({"advanceBy": 30}, "advanceBy"),
    ],
)
def test_advance_rejects_bad_moves(
    client: httpx.Client, advanced: list[dict[str, Any]], body: dict[str, object], field: str
) -> None:
    clock_id = create(client).json()["id"]
    assert field in field_errors(client.patch(f"/v0/testClocks/{clock_id}", json=body))
    assert clock_at(client, clock_id) == START_ISO
    assert advanced == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"advanceBy": "P5Y"}, "2032-01-31T10:00:00.000Z"),
        ({"advanceBy": "P60M"}, "2032-01-31T10:00:00.000Z"),
        ({"currentTime": "2032-01-31T10:00:00Z"}, "2032-01-31T10:00:00.000Z"),
        ({"advanceBy": "PT1S"}, "2027-01-31T10:00:01.000Z"),
        ({"advanceBy": "P1Y2M3DT4H5M6S"}, "2028-04-03T14:05:06.000Z"),
        ({"advanceBy": "P2W"}, "2027-02-14T10:00:00.000Z"),
        ({"currentTime": "2027-02-01T00:00:00+02:00"}, "2027-01-31T22:00:00.000Z"),
    ],
)
def test_advance_moves_forward(
    client: httpx.Client, advanced: list[dict[str, Any]], body: dict[str, object], expected: str
) -> None:
    clock_id = create(client).json()["id"]
    response = client.patch(f"/v0/testClocks/{clock_id}", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["currentTime"] == expected == clock_at(client, clock_id)


def test_an_advance_goes_to_the_clocks_workflow_from_the_time_read(
    client: httpx.Client, advanced: list[dict[str, Any]]
) -> None:
    clock_id = create(client).json()["id"]
    response = client.patch(f"/v0/testClocks/{clock_id}", json={"advanceBy": "P1M"})
    new_time = datetime(2027, 2, 28, 10, tzinfo=UTC)
    assert advanced == [{"clock": clock_id, "from": START, "new_time": new_time}]
    assert (response.json()["currentTime"], response.json()["advanceStatus"]) == (
        "2027-02-28T10:00:00.000Z",
        "ready",
    )


def test_deleted_clock_cannot_be_advanced(client: httpx.Client, advanced: list[dict[str, Any]]) -> None:
    clock_id = create(client).json()["id"]
    first = client.delete(f"/v0/testClocks/{clock_id}")
    assert first.status_code == 200 and first.json()["deletedAt"]
    assert_error(client.patch(f"/v0/testClocks/{clock_id}", json={"advanceBy": "P1D"}), 409, "conflict")
    assert clock_at(client, clock_id) == START_ISO and advanced == []
    again = client.delete(f"/v0/testClocks/{clock_id}")
    assert again.status_code == 200 and again.json()["deletedAt"] == first.json()["deletedAt"]


# ---- delete with bound subscriptions ----------------------------------------------------------------------


async def test_delete_is_blocked_while_a_live_subscription_is_bound(
    aclient: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    factory = Factory(engine, merchant)
    clock_id = (await aclient.post("/v0/testClocks", json={"currentTime": START_ISO})).json()["id"]
    bound = await factory.subscription(test_clock_id=clock_id)
    await factory.subscription(test_clock_id=clock_id, status="terminated")

    body = assert_error(await aclient.delete(f"/v0/testClocks/{clock_id}"), 409, "conflict")
    assert body["details"]["blockers"] == [
        {"type": "subscriptions", "count": 1, "items": [{"id": bound.id, "status": "active"}]}
    ]
    assert (await aclient.get(f"/v0/testClocks/{clock_id}")).json()["deletedAt"] is None

    await factory.update(bound, status="terminated")
    deleted = await aclient.delete(f"/v0/testClocks/{clock_id}")
    assert deleted.status_code == 200 and deleted.json()["deletedAt"]


# ---- tenancy and environment ------------------------------------------------------------------------------


def test_other_merchants_clock_is_not_found(
    client: httpx.Client, other_client: httpx.Client, advanced: list[dict[str, Any]]
) -> None:
    clock_id = create(client).json()["id"]
    assert_error(other_client.get(f"/v0/testClocks/{clock_id}"), 404, "not_found")
    assert_error(other_client.patch(f"/v0/testClocks/{clock_id}", json={"advanceBy": "P1D"}), 404)
    assert_error(other_client.delete(f"/v0/testClocks/{clock_id}"), 404)
    assert other_client.get("/v0/testClocks").json()["data"] == []
    assert client.get(f"/v0/testClocks/{clock_id}").json()["deletedAt"] is None
    assert clock_at(client, clock_id) == START_ISO and advanced == []


def test_unknown_clock_is_a_typed_404(sdk: Paygentic) -> None:
    with pytest.raises(errors.Error) as caught:
        sdk.test_clocks.get(id="tc_0000000000000000")
    assert caught.value.status_code == 404 and "tc_0000000000000000" in caught.value.message


def test_live_keys_have_no_test_clocks(live_client: httpx.Client, client: httpx.Client) -> None:
    clock_id = create(client).json()["id"]
    for response in [
        create(live_client),
        live_client.get("/v0/testClocks"),
        live_client.get(f"/v0/testClocks/{clock_id}"),
        live_client.patch(f"/v0/testClocks/{clock_id}", json={"advanceBy": "P1D"}),
        live_client.delete(f"/v0/testClocks/{clock_id}"),
    ]:
        assert "sandbox" in assert_error(response, 403, "forbidden")["message"]
    assert clock_at(client, clock_id) == START_ISO


# ---- paygentic-sdk 0.6.3 --------------------------------------------------------------------------------

SDK063 = """
import json, sys
from paygentic_sdk import Paygentic
url, key, clock_id = sys.argv[1:4]
out = {}
with Paygentic(server_url=url, bearer_auth=key) as p:
    for name, call in [
        ("get", lambda: p.test_clocks.get(id=clock_id)),
        ("list", lambda: p.test_clocks.list()),
        ("advance", lambda: p.test_clocks.advance(id=clock_id, request_body={"advance_by": "P1D"})),
    ]:
        try:
            out[name] = call().model_dump(mode="json", by_alias=True)
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


async def test_sdk_063_parses_test_clocks(
    api_url: str, aclient: httpx.AsyncClient, merchant: NewMerchant, advanced: list[dict[str, Any]]
) -> None:
    clock_id = (await aclient.post("/v0/testClocks", json={"currentTime": START_ISO})).json()["id"]
    run = await asyncio.to_thread(
        subprocess.run,
        [sdk063_python(), "-c", SDK063, api_url, merchant.api_key, clock_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(isinstance(v, dict) for v in out.values()), out
    assert out["get"]["id"] == clock_id and out["get"]["merchantId"] == merchant.merchant_id
    assert [c["id"] for c in out["list"]["data"]] == [clock_id]
    assert out["advance"]["currentTime"].startswith("2027-02-01T10:00:00")
