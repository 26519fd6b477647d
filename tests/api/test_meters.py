from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic

from db.merchants import NewMerchant
from domain.aggregation import AGGREGATIONS
from tests.api.test_events import new_metric
from tests.helpers import assert_error, field_errors, sdk063_python

GROUP_BY = {"model": "$.model", "region": "$.meta.region"}
JAN = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}

# Customer A's January: $.tokens values 10, 5, 10, 7.5 (a decimal string), 6, then an event without
# tokens and one whose tokens are not a number; both count for COUNT only.
EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("cus_A", "2026-01-01T00:10:00Z", {"tokens": 10, "model": "gpt-4", "meta": {"region": "eu"}}),
    ("cus_A", "2026-01-01T00:50:00Z", {"tokens": 5, "model": "gpt-3", "meta": {"region": "us"}}),
    ("cus_A", "2026-01-01T01:30:00Z", {"tokens": 10, "model": "gpt-3", "meta": {"region": "eu"}}),
    ("cus_A", "2026-01-01T02:05:00Z", {"tokens": "7.5", "model": "gpt-4", "meta": {"region": "eu"}}),
    ("cus_A", "2026-01-02T00:00:00Z", {"tokens": 6, "model": "gpt-4"}),
    ("cus_A", "2026-01-03T00:00:00Z", {"model": "gpt-4"}),
    ("cus_A", "2026-01-03T01:00:00Z", {"tokens": "abc", "model": "gpt-4", "meta": {"region": "eu"}}),
    ("cus_A", "2026-02-01T00:00:00Z", {"tokens": 100, "model": "gpt-4"}),  # at `to`: excluded
    ("cus_A", "2025-12-31T23:59:59Z", {"tokens": 1000, "model": "gpt-4"}),  # before `from`
    ("cus_B", "2026-01-01T01:00:00Z", {"tokens": 50, "model": "gpt-4", "meta": {"region": "eu"}}),
]
EXPECTED_A = {
    "SUM": 38.5,
    "COUNT": 7,
    "AVG": 7.7,
    "MIN": 5,
    "MAX": 10,
    "UNIQUE_COUNT": 5,  # "10", "5", "7.5", "6", "abc"
    "LATEST": 6,
}


def load(client: httpx.Client, event_type: str = "api.call", events: list[Any] | None = None) -> None:
    batch = [
        {"type": event_type, "source": "test", "subject": s, "timestamp": t, "data": d}
        for s, t, d in (EVENTS if events is None else events)
    ]
    response = client.post("/v0/events/batch", json={"events": batch})
    assert response.status_code == 200 and response.json()["rejected"] == 0, response.text


def metric(client: httpx.Client, merchant: NewMerchant, aggregation: str = "SUM", **overrides: object) -> str:
    body: dict[str, Any] = {"aggregation": aggregation, "groupBy": GROUP_BY} | overrides
    created = new_metric(client, merchant, event_type="api.call", **body)
    metric_id: str = created["id"]
    return metric_id


def meter(client: httpx.Client, metric_id: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/v0/billableMetrics/{metric_id}/meter", params=JAN | params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def usage(client: httpx.Client, merchant: NewMerchant) -> str:
    metric_id = metric(client, merchant)
    load(client)
    return metric_id


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_every_aggregation(client: httpx.Client, merchant: NewMerchant, aggregation: str) -> None:
    value_property = None if aggregation == "COUNT" else "$.tokens"
    metric_id = metric(client, merchant, aggregation, valueProperty=value_property)
    load(client)
    body = meter(client, metric_id, subject="cus_A")
    assert body == {"object": "meter", "billableMetricId": metric_id, "totalValue": EXPECTED_A[aggregation]}


def test_totals_are_json_numbers_integers_when_integral(client: httpx.Client, usage: str) -> None:
    assert meter(client, usage)["totalValue"] == 88.5  # both customers
    whole = meter(client, usage, filterGroupBy='{"model":"gpt-3"}')["totalValue"]
    assert whole == 15 and isinstance(whole, int)  # 15, not 15.0


def test_meter_through_sdk(sdk: Paygentic, usage: str) -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    result = sdk.billable_metrics.meter(
        id=usage, from_=start, to=end, subject="cus_A", window_size="DAY", group_by="model"
    )
    assert result.billable_metric_id == usage and result.total_value == 38.5
    assert result.windowed_values is not None and result.grouped_values is not None
    assert [(w.window_start.day, w.window_end.day, w.value) for w in result.windowed_values] == [
        (1, 2, 32.5),
        (2, 3, 6),
        (3, 4, 0),
    ]
    assert [(g.group_by, g.value) for g in result.grouped_values] == [
        ({"model": "gpt-3"}, 15),
        ({"model": "gpt-4"}, 23.5),
    ]


@pytest.mark.parametrize(
    ("size", "windows"),
    [
        (
            "MINUTE",
            [
                ("2026-01-01T00:10:00.000Z", "2026-01-01T00:11:00.000Z", 10),
                ("2026-01-01T00:50:00.000Z", "2026-01-01T00:51:00.000Z", 5),
                ("2026-01-01T01:30:00.000Z", "2026-01-01T01:31:00.000Z", 10),
                ("2026-01-01T02:05:00.000Z", "2026-01-01T02:06:00.000Z", 7.5),
                ("2026-01-02T00:00:00.000Z", "2026-01-02T00:01:00.000Z", 6),
                ("2026-01-03T00:00:00.000Z", "2026-01-03T00:01:00.000Z", 0),
                ("2026-01-03T01:00:00.000Z", "2026-01-03T01:01:00.000Z", 0),
            ],
        ),
        (
            "HOUR",
            [
                ("2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z", 15),
                ("2026-01-01T01:00:00.000Z", "2026-01-01T02:00:00.000Z", 10),
                ("2026-01-01T02:00:00.000Z", "2026-01-01T03:00:00.000Z", 7.5),
                ("2026-01-02T00:00:00.000Z", "2026-01-02T01:00:00.000Z", 6),
                ("2026-01-03T00:00:00.000Z", "2026-01-03T01:00:00.000Z", 0),
                ("2026-01-03T01:00:00.000Z", "2026-01-03T02:00:00.000Z", 0),
            ],
        ),
        ("MONTH", [("2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z", 38.5)]),
    ],
)
def test_windows_are_utc_buckets_that_have_events(
    client: httpx.Client, usage: str, size: str, windows: list[tuple[str, str, float]]
) -> None:
    body = meter(client, usage, subject="cus_A", windowSize=size)
    assert [(w["windowStart"], w["windowEnd"], w["value"]) for w in body["windowedValues"]] == windows
    assert body["totalValue"] == 38.5 and "groupedValues" not in body


def test_month_windows_across_a_year_end(client: httpx.Client, usage: str) -> None:
    body = meter(client, usage, subject="cus_A", windowSize="MONTH", **{"from": "2025-12-01T00:00:00Z"})
    assert [(w["windowStart"], w["windowEnd"], w["value"]) for w in body["windowedValues"]] == [
        ("2025-12-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z", 1000),
        ("2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z", 38.5),
    ]


def test_group_by_two_dimensions_leaves_out_missing_ones(client: httpx.Client, usage: str) -> None:
    body = meter(client, usage, subject="cus_A", groupBy="model,region")
    assert [(g["groupBy"], g["value"]) for g in body["groupedValues"]] == [
        ({"model": "gpt-3", "region": "eu"}, 10),
        ({"model": "gpt-3", "region": "us"}, 5),
        ({"model": "gpt-4"}, 6),
        ({"model": "gpt-4", "region": "eu"}, 17.5),
    ]
    assert body["totalValue"] == 38.5 and "windowedValues" not in body


def test_filter_group_by_with_group_by_and_windows(client: httpx.Client, usage: str) -> None:
    body = meter(client, usage, filterGroupBy='{"region": "eu"}', groupBy="model", windowSize="DAY")
    assert body["totalValue"] == 77.5  # A: 10 + 10 + 7.5 (+ "abc"), B: 50
    assert [(g["groupBy"], g["value"]) for g in body["groupedValues"]] == [
        ({"model": "gpt-3"}, 10),
        ({"model": "gpt-4"}, 67.5),
    ]
    assert [(w["windowStart"][:10], w["value"]) for w in body["windowedValues"]] == [
        ("2026-01-01", 77.5),
        ("2026-01-03", 0),
    ]
    both = meter(client, usage, subject="cus_A", filterGroupBy='{"region": "eu", "model": "gpt-3"}')
    assert both["totalValue"] == 10


def test_event_from_excludes_earlier_events(client: httpx.Client, merchant: NewMerchant) -> None:
    metric_id = metric(client, merchant, eventFrom="2026-01-01T01:00:00Z")
    load(client)
    assert meter(client, metric_id, subject="cus_A")["totalValue"] == 23.5
    late = meter(client, metric_id, subject="cus_A", to="2026-01-01T01:00:00Z", windowSize="HOUR")
    assert (late["totalValue"], late["windowedValues"]) == (0, [])


def test_only_the_metrics_event_type_counts(client: httpx.Client, merchant: NewMerchant, usage: str) -> None:
    new_metric(client, merchant, event_type="other.type")
    load(client, "other.type", [("cus_A", "2026-01-05T00:00:00Z", {"tokens": 1000})])
    assert meter(client, usage, subject="cus_A")["totalValue"] == 38.5


def test_subject_matches_a_customers_id_and_external_id(client: httpx.Client, merchant: NewMerchant) -> None:
    address = {
        "line1": "1 Main St",
        "city": "San Francisco",
        "state": "CA",
        "country": "US",
        "zipCode": "94107",
    }
    consumer = {"name": "Ext", "email": "ext@example.com", "address": address}
    customer = client.post(
        "/v0/customers",
        json={"merchantId": merchant.merchant_id, "consumer": consumer, "externalId": "crm-7"},
    )
    assert customer.status_code in (200, 201), customer.text
    customer_id = customer.json()["customerId"]
    metric_id = metric(client, merchant)
    load(
        client,
        events=[
            (customer_id, "2026-01-05T00:00:00Z", {"tokens": 1}),
            ("crm-7", "2026-01-06T00:00:00Z", {"tokens": 2}),
            ("crm-8", "2026-01-06T00:00:00Z", {"tokens": 4}),
        ],
    )
    assert meter(client, metric_id, subject=customer_id)["totalValue"] == 3
    assert meter(client, metric_id, subject="crm-7")["totalValue"] == 3
    assert meter(client, metric_id, subject="crm-8")["totalValue"] == 4


def test_metric_without_event_type_meters_nothing(
    client: httpx.Client, merchant: NewMerchant, usage: str
) -> None:
    plain = new_metric(client, merchant, eventType=None)["id"]
    assert meter(client, plain, windowSize="DAY") == {
        "object": "meter",
        "billableMetricId": plain,
        "totalValue": 0,
        "windowedValues": [],
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": None}, "from"),
        ({"to": None}, "to"),
        ({"from": "not a date"}, "from"),
        ({"to": "2026-01-01T00:00:00Z"}, "to"),  # equal to from
        ({"to": "2025-06-01T00:00:00Z"}, "to"),
        ({"windowSize": "WEEK"}, "windowSize"),
        ({"groupBy": "model,unknown"}, "groupBy"),
        ({"groupBy": "model,,region"}, "groupBy"),
        ({"filterGroupBy": "model=gpt-4"}, "filterGroupBy"),
        ({"filterGroupBy": '["model"]'}, "filterGroupBy"),
        ({"filterGroupBy": '{"tier": "gold"}'}, "filterGroupBy"),
        ({"filterGroupBy": '{"model": 4}'}, "filterGroupBy"),
    ],
)
def test_bad_meter_queries_are_400(
    client: httpx.Client, usage: str, params: dict[str, Any], field: str
) -> None:
    query = {k: v for k, v in (JAN | params).items() if v is not None}
    errors = field_errors(client.get(f"/v0/billableMetrics/{usage}/meter", params=query))
    assert field in errors, errors


def test_unknown_dimension_message_lists_the_configured_ones(client: httpx.Client, usage: str) -> None:
    response = client.get(f"/v0/billableMetrics/{usage}/meter", params=JAN | {"groupBy": "tier"})
    assert (
        field_errors(response)["groupBy"]
        == "'tier' is not a groupBy dimension of this metric (configured: model, region)"
    )


def test_other_merchants_metric_is_not_found(
    client: httpx.Client, other_client: httpx.Client, usage: str
) -> None:
    for path in ("meter", "events"):
        assert_error(other_client.get(f"/v0/billableMetrics/{usage}/{path}", params=JAN), 404, "not_found")
        assert_error(client.get(f"/v0/billableMetrics/bm_nope/{path}", params=JAN), 404, "not_found")


# --- raw events -------------------------------------------------------------------------------------------


def test_list_events_newest_first_with_paging(sdk: Paygentic, client: httpx.Client, usage: str) -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    first = sdk.billable_metrics.list_events(id=usage, from_=start, to=end, subject="cus_A", limit=3)
    assert first.billable_metric_id == usage
    assert first.pagination.total == 7 and first.pagination.limit == 3 and first.pagination.offset == 0
    assert [e.time.isoformat() for e in first.events] == [
        "2026-01-03T01:00:00+00:00",
        "2026-01-03T00:00:00+00:00",
        "2026-01-02T00:00:00+00:00",
    ]
    assert first.events[0].object == "meterEvent" and first.events[0].data["tokens"] == "abc"
    assert first.events[0].subject == "cus_A" and first.events[0].type == "api.call"
    rest = sdk.billable_metrics.list_events(id=usage, from_=start, to=end, subject="cus_A", limit=3, offset=6)
    assert [e.time.day for e in rest.events] == [1] and rest.events[0].data["tokens"] == 10
    everyone = client.get(f"/v0/billableMetrics/{usage}/events", params=JAN).json()
    assert everyone["pagination"] == {"limit": 20, "offset": 0, "total": 8, "hasMore": False}
    assert {e["subject"] for e in everyone["events"]} == {"cus_A", "cus_B"}
    assert set(everyone["events"][0]) >= {
        "id",
        "object",
        "type",
        "source",
        "subject",
        "time",
        "idempotencyKey",
        "data",
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 201}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"from": None}, "from"),
        ({"to": "2025-01-01T00:00:00Z"}, "to"),
    ],
)
def test_bad_event_lists_are_400(
    client: httpx.Client, usage: str, params: dict[str, Any], field: str
) -> None:
    query = {k: v for k, v in (JAN | params).items() if v is not None}
    assert field in field_errors(client.get(f"/v0/billableMetrics/{usage}/events", params=query))


# --- paygentic-sdk 0.6.3 ----------------------------------------------------------------------------------

SDK063 = """
import json, sys
from datetime import datetime, timezone
from paygentic_sdk import Paygentic
url, key, metric_id = sys.argv[1:4]
out = {}
with Paygentic(server_url=url, bearer_auth=key) as p:
    body = {"type": "api.call", "source": "sdk063", "subject": "cus_A", "data": {"tokens": 2},
            "timestamp": datetime(2026, 1, 9, tzinfo=timezone.utc), "idempotency_key": "k063"}
    r = p.events.ingest(request=body)
    out["events.ingest"] = [r.id, r.object, r.idempotency_key]
    start, end = datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 2, 1, tzinfo=timezone.utc)
    m = p.billable_metrics.meter(id=metric_id, from_=start, to=end, subject="cus_A", window_size="MONTH",
                                 group_by="model")
    out["billable_metrics.meter"] = [m.total_value, len(m.windowed_values), len(m.grouped_values)]
    e = p.billable_metrics.list_events(id=metric_id, from_=start, to=end, subject="cus_A", limit=2)
    out["billable_metrics.list_events"] = [e.pagination.total, [x.idempotency_key for x in e.events][:1]]
print(json.dumps(out))
"""


def test_sdk_0_6_3_parses_ingest_meter_and_list_events(
    api_url: str, merchant: NewMerchant, usage: str
) -> None:
    run = subprocess.run(
        [sdk063_python(), "-c", SDK063, api_url, merchant.api_key, usage],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    event_id, kind, key = out["events.ingest"]
    assert event_id.startswith("evt_") and (kind, key) == ("event", "k063")
    assert out["billable_metrics.meter"] == [40.5, 1, 3]  # gpt-3, gpt-4, and the new event without model
    assert out["billable_metrics.list_events"] == [8, ["k063"]]


def test_metric_with_an_unsupported_json_path_is_400(client: httpx.Client, merchant: NewMerchant) -> None:
    metric_id = metric(client, merchant, valueProperty="$.items[*].tokens")
    load(client, events=[("cus_A", "2026-01-05T00:00:00Z", {"items": [{"tokens": 1}]})])
    message = field_errors(client.get(f"/v0/billableMetrics/{metric_id}/meter", params=JAN))["id"]
    assert "$.items[*].tokens" in message and "PATCH" in message
