from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.events import COPY_FROM, EventStoreError, GroupCommitWriter, NewEvent
from db.merchants import NewMerchant
from db.models import MeterEvent
from db.session import session_factory
from tests.helpers import assert_error, field_errors

SOURCE = "https://api.myapp.com"


def new_metric(
    client: httpx.Client, merchant: NewMerchant, event_type: str = "llm.tokens", **overrides: object
) -> dict[str, Any]:
    product = client.post(
        "/v0/products", json={"merchantId": merchant.merchant_id, "name": "LLM", "description": "d"}
    )
    assert product.status_code == 201, product.text
    body = {
        "merchantId": merchant.merchant_id,
        "productId": product.json()["id"],
        "name": "Tokens",
        "description": "LLM tokens",
        "unit": "tokens",
        "aggregation": "SUM",
        "valueProperty": "$.tokens",
        "eventType": event_type,
    } | overrides
    metric = client.post("/v0/billableMetrics", json=body)
    assert metric.status_code == 201, metric.text
    created: dict[str, Any] = metric.json()
    return created


def event(**overrides: object) -> dict[str, Any]:
    return {"type": "llm.tokens", "source": SOURCE, "subject": "cus_1", "data": {"tokens": 5}} | overrides


@pytest.fixture
async def aclient(api_url: str, merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers) as c:
        yield c


@pytest.fixture
async def other_aclient(api_url: str, other_merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {other_merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers) as c:
        yield c


async def stored(engine: AsyncEngine, merchant: NewMerchant, **where: object) -> list[MeterEvent]:
    async with session_factory(engine)() as session:
        query = select(MeterEvent).where(MeterEvent.merchant_id == merchant.merchant_id)
        for column, value in where.items():
            query = query.where(getattr(MeterEvent, column) == value)
        return list(await session.scalars(query.order_by(MeterEvent.timestamp)))


async def count(engine: AsyncEngine, merchant: NewMerchant) -> int:
    async with session_factory(engine)() as session:
        query = select(func.count()).where(MeterEvent.merchant_id == merchant.merchant_id)
        return int(await session.scalar(query) or 0)


async def test_ingest_through_sdk_is_stored_before_the_answer(
    sdk: Paygentic, client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine
) -> None:
    new_metric(client, merchant)
    before = datetime.now(UTC)
    response = sdk.events.ingest(type_="llm.tokens", source=SOURCE, subject="cus_42", data={"tokens": 1200})
    assert response.id is not None and response.id.startswith("evt_")
    assert (response.object, response.type, response.subject) == ("event", "llm.tokens", "cus_42")
    assert response.source == SOURCE and response.namespace == merchant.merchant_id
    # Absent key: one is generated; absent timestamp: the server's now.
    assert response.idempotency_key
    assert response.timestamp is not None and before - timedelta(seconds=1) <= response.timestamp
    assert response.timestamp <= datetime.now(UTC)
    # 202 means committed: the row is visible to another connection as soon as the call returns.
    [row] = await stored(engine, merchant)
    assert (row.id, row.subject, row.data, row.environment) == (
        response.id,
        "cus_42",
        {"tokens": 1200},
        "sandbox",
    )
    assert row.idempotency_key == response.idempotency_key and row.timestamp == response.timestamp


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2026-01-15T10:30:00", "2026-01-15T10:30:00.000Z"),  # naive is UTC
        ("2026-01-15T12:30:00+02:00", "2026-01-15T10:30:00.000Z"),
        ("2026-01-15T10:30:00.123456Z", "2026-01-15T10:30:00.123Z"),
    ],
)
async def test_timestamp_is_utc(
    client: httpx.Client,
    merchant: NewMerchant,
    engine: AsyncEngine,
    sent: str,
    expected: str,
    aclient: httpx.AsyncClient,
) -> None:
    new_metric(client, merchant)
    response = await aclient.post("/v0/events", json=event(timestamp=sent))
    assert response.status_code == 202, response.text
    assert response.json()["timestamp"] == expected
    [row] = await stored(engine, merchant)
    assert row.timestamp.astimezone(UTC).isoformat().startswith(expected[:19])


async def test_duplicate_key_is_stored_once_and_answers_with_the_original(
    client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine, aclient: httpx.AsyncClient
) -> None:
    new_metric(client, merchant)
    first = await aclient.post("/v0/events", json=event(idempotencyKey="req-1"))
    again = await aclient.post(
        "/v0/events", json=event(idempotencyKey="req-1", subject="cus_2", data={"tokens": 9})
    )
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.json()["idempotencyKey"] == "req-1" and again.json()["subject"] == "cus_1"
    [row] = await stored(engine, merchant)
    assert (row.id, row.data) == (first.json()["id"], {"tokens": 5})


async def test_same_key_for_another_merchant_is_a_different_event(
    client: httpx.Client,
    other_client: httpx.Client,
    merchant: NewMerchant,
    other_merchant: NewMerchant,
    engine: AsyncEngine,
    aclient: httpx.AsyncClient,
    other_aclient: httpx.AsyncClient,
) -> None:
    new_metric(client, merchant)
    new_metric(other_client, other_merchant)
    mine = await aclient.post("/v0/events", json=event(idempotencyKey="shared"))
    theirs = await other_aclient.post("/v0/events", json=event(idempotencyKey="shared"))
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["namespace"] == other_merchant.merchant_id
    assert await count(engine, merchant) == await count(engine, other_merchant) == 1


async def test_concurrent_requests_with_one_key_store_one_row(
    api_url: str, client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine
) -> None:
    new_metric(client, merchant)
    headers = {"Authorization": f"Bearer {merchant.api_key}"}

    def post(i: int) -> httpx.Response:
        with httpx.Client(base_url=api_url, headers=headers) as c:
            return c.post("/v0/events", json=event(idempotencyKey="race", data={"tokens": i}))

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(32)))
    assert {r.status_code for r in responses} == {202}
    [row] = await stored(engine, merchant)
    assert {r.json()["id"] for r in responses} == {row.id}


async def test_concurrent_distinct_events_are_all_stored(
    api_url: str, client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine
) -> None:
    new_metric(client, merchant)
    headers = {"Authorization": f"Bearer {merchant.api_key}"}

    def post(i: int) -> httpx.Response:
        with httpx.Client(base_url=api_url, headers=headers) as c:
            return c.post("/v0/events", json=event(idempotencyKey=f"k{i}", data={"tokens": i}))

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(64)))
    assert {r.status_code for r in responses} == {202}
    rows = await stored(engine, merchant)
    assert {r.idempotency_key: r.data["tokens"] for r in rows} == {f"k{i}": i for i in range(64)}
    assert {r.json()["id"] for r in responses} == {r.id for r in rows}


async def test_unknown_type_is_422_naming_the_type(
    client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine, aclient: httpx.AsyncClient
) -> None:
    new_metric(client, merchant)
    body = assert_error(await aclient.post("/v0/events", json=event(type="llm.tokenz")), 422)
    assert "'llm.tokenz'" in body["message"] and "'llm.tokens'" in body["message"]
    assert "billable metric" in body["message"] and body["code"] == "UNKNOWN_EVENT_TYPE"
    assert await count(engine, merchant) == 0


async def test_type_of_another_merchants_metric_is_unknown(
    client: httpx.Client,
    other_client: httpx.Client,
    merchant: NewMerchant,
    other_merchant: NewMerchant,
    engine: AsyncEngine,
    aclient: httpx.AsyncClient,
) -> None:
    new_metric(other_client, other_merchant, event_type="their.type")
    body = assert_error(await aclient.post("/v0/events", json=event(type="their.type")), 422)
    assert "no billable metric of this organization has an eventType" in body["message"]
    assert await count(engine, merchant) == 0


def test_sdk_surfaces_unknown_type_as_typed_error(sdk: Paygentic) -> None:
    with pytest.raises(errors.Error) as caught:
        sdk.events.ingest(type_="nope", source=SOURCE, subject="cus_1", data={})
    assert caught.value.status_code == 422 and "'nope'" in caught.value.message


async def test_metric_created_after_a_cached_lookup_is_usable_at_once(
    client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine, aclient: httpx.AsyncClient
) -> None:
    new_metric(client, merchant, event_type="first.type")
    assert (await aclient.post("/v0/events", json=event(type="first.type"))).status_code == 202
    assert_error(await aclient.post("/v0/events", json=event(type="second.type")), 422)
    new_metric(client, merchant, event_type="second.type")
    assert (await aclient.post("/v0/events", json=event(type="second.type"))).status_code == 202
    assert await count(engine, merchant) == 2


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"type": None}, "type"),
        ({"type": 5}, "type"),
        ({"type": ""}, "type"),
        ({"source": ["x"]}, "source"),
        ({"subject": 42}, "subject"),
        ({"subject": ""}, "subject"),
        ({"data": "tokens=5"}, "data"),
        ({"data": [1, 2]}, "data"),
        ({"data": None}, "data"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"idempotencyKey": 7}, "idempotencyKey"),
        ({"idempotencyKey": "k" * 256}, "idempotencyKey"),
        ({"namespace": 1}, "namespace"),
    ],
)
async def test_bad_fields_are_400(
    client: httpx.Client,
    merchant: NewMerchant,
    engine: AsyncEngine,
    overrides: dict[str, object],
    field: str,
    aclient: httpx.AsyncClient,
) -> None:
    new_metric(client, merchant)
    assert field in field_errors(await aclient.post("/v0/events", json=event(**overrides)))
    assert await count(engine, merchant) == 0


@pytest.mark.parametrize("missing", ["type", "source", "subject", "data"])
async def test_required_fields(
    client: httpx.Client, merchant: NewMerchant, missing: str, aclient: httpx.AsyncClient
) -> None:
    new_metric(client, merchant)
    body = event()
    del body[missing]
    assert field_errors(await aclient.post("/v0/events", json=body))[missing].startswith("is required")


async def test_external_subject_stands_in_for_subject(
    client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine, aclient: httpx.AsyncClient
) -> None:
    new_metric(client, merchant)
    body = event(externalSubject="crm-9")
    del body["subject"]
    response = await aclient.post("/v0/events", json=body)
    assert response.status_code == 202 and response.json()["subject"] == "crm-9"
    [row] = await stored(engine, merchant)
    assert row.subject == "crm-9"


async def test_namespace_must_be_the_callers_organization(
    client: httpx.Client,
    merchant: NewMerchant,
    other_merchant: NewMerchant,
    engine: AsyncEngine,
    aclient: httpx.AsyncClient,
) -> None:
    new_metric(client, merchant)
    body = assert_error(
        await aclient.post("/v0/events", json=event(namespace=other_merchant.merchant_id)), 403
    )
    assert other_merchant.merchant_id in body["message"]
    assert await count(engine, merchant) == 0
    own = await aclient.post("/v0/events", json=event(namespace=merchant.merchant_id))
    assert own.status_code == 202 and own.json()["namespace"] == merchant.merchant_id


def test_requires_an_api_key(api_url: str) -> None:
    assert_error(httpx.post(f"{api_url}/v0/events", json=event()), 401)


# --- batch extension --------------------------------------------------------------------------------------


async def test_batch_reports_each_event(
    client: httpx.Client,
    merchant: NewMerchant,
    other_merchant: NewMerchant,
    engine: AsyncEngine,
    aclient: httpx.AsyncClient,
) -> None:
    new_metric(client, merchant)
    earlier = await aclient.post("/v0/events", json=event(idempotencyKey="stored-before"))
    events: list[Any] = [
        event(idempotencyKey="a"),
        event(idempotencyKey="a", data={"tokens": 99}),  # repeated within the batch
        event(subject=7),
        event(type="unknown.type"),
        event(namespace=other_merchant.merchant_id),
        "not an object",
        event(idempotencyKey="stored-before"),
        event(timestamp="2026-01-15T10:30:00Z"),
    ]
    response = await aclient.post("/v0/events/batch", json={"events": events})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and (body["accepted"], body["rejected"]) == (4, 4)
    results = body["data"]
    assert [r["index"] for r in results] == list(range(8))
    assert [r["status"] for r in results] == [202, 202, 400, 422, 403, 400, 202, 202]
    assert results[0]["id"] == results[1]["id"] and results[0]["idempotencyKey"] == "a"
    assert results[6]["id"] == earlier.json()["id"]
    assert results[2]["error"]["errors"][0]["field"] == "subject"
    assert "'unknown.type'" in results[3]["error"]["message"]
    assert results[4]["error"]["error"] == "forbidden"
    assert results[5]["error"]["errors"][0]["field"] == "events[5]"
    assert all("error" not in r for r in results if r["status"] == 202)
    assert all("id" not in r for r in results if r["status"] != 202)
    rows = await stored(engine, merchant)
    assert sorted(r.idempotency_key for r in rows) == sorted(["stored-before", "a", results[7]["id"]])
    assert next(r for r in rows if r.idempotency_key == "a").data == {"tokens": 5}


async def post_compact(client: httpx.AsyncClient, path: str, payload: object) -> httpx.Response:
    # Compact JSON keeps 1,000 events under the test server's 64 KiB body limit.
    content = json.dumps(payload, separators=(",", ":"))
    return await client.post(path, content=content, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    "payload",
    [
        {"events": []},
        {"events": {"type": "llm.tokens"}},
        {},
        {"events": [{"type": "llm.tokens", "source": "s", "subject": "c", "data": {}}] * 1001},
    ],
    ids=["empty", "object", "missing", "1001"],
)
async def test_batch_shape_errors_write_nothing(
    client: httpx.Client,
    merchant: NewMerchant,
    engine: AsyncEngine,
    payload: dict[str, Any],
    aclient: httpx.AsyncClient,
) -> None:
    new_metric(client, merchant)
    assert "events" in field_errors(await post_compact(aclient, "/v0/events/batch", payload))
    assert await count(engine, merchant) == 0


async def test_batch_of_1000_is_stored(
    client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine, aclient: httpx.AsyncClient
) -> None:
    new_metric(client, merchant)
    events = [{"type": "llm.tokens", "source": "s", "subject": f"c{i % 7}", "data": {}} for i in range(1000)]
    response = await post_compact(aclient, "/v0/events/batch", {"events": events})
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["rejected"]) == (1000, 0)
    assert await count(engine, merchant) == 1000


async def test_large_batch_with_stored_and_repeated_keys(
    client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine, aclient: httpx.AsyncClient
) -> None:
    # Above COPY_FROM events the store tries one COPY; a key already stored makes it fall back to
    # INSERT … ON CONFLICT, which must give the same answers.
    new_metric(client, merchant)
    earlier = (await aclient.post("/v0/events", json=event(idempotencyKey="stored-before"))).json()
    size = COPY_FROM + 50
    events = [
        {"type": "llm.tokens", "source": "s", "subject": "c", "data": {"i": i}, "idempotencyKey": f"k{i}"}
        for i in range(size)
    ]
    events[100]["idempotencyKey"] = "stored-before"
    events[-1]["idempotencyKey"] = "k0"
    results = (await post_compact(aclient, "/v0/events/batch", {"events": events})).json()["data"]
    assert {r["status"] for r in results} == {202}
    assert results[100]["id"] == earlier["id"] and results[-1]["id"] == results[0]["id"]
    rows = await stored(engine, merchant)
    assert len(rows) == 1 + size - 2
    assert {r.id for r in rows} == {r["id"] for r in results}
    assert next(r for r in rows if r.idempotency_key == "k0").data == {"i": 0}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"data": {"note": "a\u0000b"}}, "data.note"),
        ({"data": {"k\u0000": 1}}, "data"),
        ({"subject": "c\u0000"}, "subject"),
    ],
)
async def test_nul_characters_are_400(
    client: httpx.Client,
    merchant: NewMerchant,
    engine: AsyncEngine,
    aclient: httpx.AsyncClient,
    overrides: dict[str, object],
    field: str,
) -> None:
    new_metric(client, merchant)
    assert "NUL" in field_errors(await aclient.post("/v0/events", json=event(**overrides)))[field]
    batch = {"events": [event(idempotencyKey="fine"), event(**overrides)]}
    results = (await aclient.post("/v0/events/batch", json=batch)).json()["data"]
    assert [r["status"] for r in results] == [202, 400]
    assert [r.idempotency_key for r in await stored(engine, merchant)] == ["fine"]


async def test_writer_isolates_a_row_the_database_refuses(engine: AsyncEngine, merchant: NewMerchant) -> None:
    writer = GroupCommitWriter(engine, linger=0.05)  # long enough that all six share one INSERT
    writer.start()
    now = datetime.now(UTC)

    def new(key: str, subject: str = "cus_1") -> NewEvent:
        return NewEvent(
            f"evt_{key}{merchant.merchant_id[-8:]}",
            merchant.merchant_id,
            "sandbox",
            "t",
            "s",
            subject,
            {},
            now,
            key,
        )

    try:
        # The NUL is refused by PostgreSQL; written together, the other events must still be stored.
        outcomes = await asyncio.gather(
            *(writer.write(new(f"ok{i}")) for i in range(5)),
            writer.write(new("bad", "c\x00")),
            return_exceptions=True,
        )
    finally:
        await writer.stop()
    assert [type(o).__name__ for o in outcomes] == ["StoredEvent"] * 5 + ["EventStoreError"]
    assert sorted(r.idempotency_key for r in await stored(engine, merchant)) == [f"ok{i}" for i in range(5)]
    with pytest.raises(EventStoreError):
        await writer.write(new("late"))


def raw_event(data: str, **overrides: str) -> str:
    fields = {"type": '"llm.tokens"', "source": f'"{SOURCE}"', "subject": '"cus_1"'} | overrides
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + f', "data": {data}' + "}"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ('{"tokens": NaN}', "data.tokens"),
        ('{"tokens": Infinity}', "data.tokens"),
        ('{"usage": {"tokens": -Infinity}}', "data.usage.tokens"),
        # Not a field any metric reads: no JSON store can hold it, so the event could never be stored.
        ('{"tokens": 5, "ratio": [1, 1e400]}', "data.ratio[1]"),
    ],
)
async def test_non_finite_numbers_are_400_for_the_event_only(
    client: httpx.Client,
    merchant: NewMerchant,
    engine: AsyncEngine,
    aclient: httpx.AsyncClient,
    data: str,
    field: str,
) -> None:
    new_metric(client, merchant)
    headers = {"content-type": "application/json"}
    response = await aclient.post("/v0/events", content=raw_event(data), headers=headers)
    assert "finite" in field_errors(response)[field]
    batch = (
        '{"events": [' + raw_event('{"tokens": 1}', idempotencyKey='"fine"') + ", " + raw_event(data) + "]}"
    )
    response = await aclient.post("/v0/events/batch", content=batch, headers=headers)
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["data"]] == [202, 400]
    assert [r.idempotency_key for r in await stored(engine, merchant)] == ["fine"]


@pytest.mark.parametrize(
    "value",
    [
        "1e30",
        "1" + "2" * 80,  # 81 significant digits
        '"1000000000000000000"',  # 10^18 as a decimal string, which the meter reads as a number
        "-1000000000000000000",
        "0.0000000001",  # 10 decimal places: more than a stored quantity holds
    ],
)
async def test_values_the_billing_arithmetic_cannot_hold_are_400(
    client: httpx.Client,
    merchant: NewMerchant,
    engine: AsyncEngine,
    aclient: httpx.AsyncClient,
    value: str,
) -> None:
    new_metric(client, merchant)
    headers = {"content-type": "application/json"}
    response = await aclient.post("/v0/events", content=raw_event(f'{{"tokens": {value}}}'), headers=headers)
    errors = field_errors(response)
    assert "below 10^18" in errors["data.tokens"] and "'$.tokens'" in errors["data.tokens"]
    batch = (
        '{"events": ['
        + raw_event('{"tokens": 1}', idempotencyKey='"fine"')
        + ", "
        + raw_event(f'{{"tokens": {value}}}')
        + "]}"
    )
    results = (await aclient.post("/v0/events/batch", content=batch, headers=headers)).json()["data"]
    assert [r["status"] for r in results] == [202, 400]
    assert results[1]["error"]["errors"][0]["code"] == "out_of_range"
    assert [r.idempotency_key for r in await stored(engine, merchant)] == ["fine"]


async def test_values_within_the_bound_and_fields_no_metric_bills_are_accepted(
    client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine, aclient: httpx.AsyncClient
) -> None:
    new_metric(client, merchant)
    limit = "999999999999999999.999999999"
    data = {"tokens": limit, "orderId": 10**30, "note": "1" * 40}
    response = await aclient.post("/v0/events", json=event(data=data))
    assert response.status_code == 202, response.text
    response = await aclient.post("/v0/events", json=event(data={"tokens": -1.5}))
    assert response.status_code == 202, response.text
    assert len(await stored(engine, merchant)) == 2


async def test_event_without_timestamp_takes_its_subjects_test_clock_time(
    client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine, aclient: httpx.AsyncClient
) -> None:
    from tests.factories import Factory

    new_metric(client, merchant)
    factory = Factory(engine, merchant)
    clock_time = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
    clock = await factory.test_clock(current_time=clock_time)
    bound = await factory.customer(external_id="crm-bound")
    await factory.subscription(customer=bound, test_clock_id=clock.id)
    unbound = await factory.customer()
    await factory.subscription(customer=unbound)

    for key, subject in (("by-id", bound.id), ("unbound", unbound.id)):
        response = await aclient.post("/v0/events", json=event(subject=subject, idempotencyKey=key))
        assert response.status_code == 202, response.text
    batch = {
        "events": [
            event(subject="crm-bound", idempotencyKey="by-external-id"),
            event(subject=bound.id, idempotencyKey="explicit", timestamp="2026-01-02T00:00:00Z"),
        ]
    }
    assert (await aclient.post("/v0/events/batch", json=batch)).json()["accepted"] == 2
    rows = {r.idempotency_key: r.timestamp for r in await stored(engine, merchant)}
    assert rows["by-id"] == rows["by-external-id"] == clock_time
    assert rows["explicit"] == datetime(2026, 1, 2, tzinfo=UTC)
    assert abs(rows["unbound"] - datetime.now(UTC)) < timedelta(minutes=1)
