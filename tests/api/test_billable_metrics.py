from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors

from db.merchants import NewMerchant
from tests.helpers import assert_error, field_errors, sdk063_python

NEEDS_VALUE = ["SUM", "AVG", "MIN", "MAX", "LATEST", "UNIQUE_COUNT"]


def new_product(client: httpx.Client, merchant: NewMerchant, name: str = "LLM") -> str:
    body = {"merchantId": merchant.merchant_id, "name": name, "description": "d"}
    response = client.post("/v0/products", json=body)
    assert response.status_code == 201, response.text
    product_id: str = response.json()["id"]
    return product_id


def metric_body(merchant: NewMerchant, product_id: str, **overrides: object) -> dict[str, Any]:
    return {
        "merchantId": merchant.merchant_id,
        "productId": product_id,
        "name": "Tokens",
        "description": "LLM tokens consumed",
        "unit": "tokens",
        "aggregation": "SUM",
        "valueProperty": "$.tokens",
    } | overrides


def create(
    client: httpx.Client, merchant: NewMerchant, product_id: str, **overrides: object
) -> httpx.Response:
    return client.post("/v0/billableMetrics", json=metric_body(merchant, product_id, **overrides))


def total(client: httpx.Client, merchant: NewMerchant) -> int:
    response = client.get("/v0/billableMetrics", params={"merchantId": merchant.merchant_id})
    assert response.status_code == 200, response.text
    count: int = response.json()["pagination"]["total"]
    return count


def test_metric_lifecycle_through_sdk(sdk: Paygentic, client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    created = sdk.billable_metrics.create(
        aggregation="SUM",
        description="LLM tokens consumed",
        merchant_id=merchant.merchant_id,
        name="Tokens",
        product_id=product_id,
        unit="tokens",
        event_type="llm.completion",
        value_property="$.usage.tokens",
        group_by={"model": "$.model"},
        event_from=datetime(2024, 1, 15, 10, 30),  # naive: the SDK sends no offset, Accrue reads UTC
    )
    assert created.id.startswith("bm_")
    assert (created.merchant_id, created.product_id, created.aggregation) == (
        merchant.merchant_id,
        product_id,
        "SUM",
    )
    assert (created.event_type, created.value_property, created.group_by) == (
        "llm.completion",
        "$.usage.tokens",
        {"model": "$.model"},
    )
    assert created.event_from == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)

    fetched = sdk.billable_metrics.get(id=created.id)
    assert (fetched.name, fetched.unit, fetched.description) == ("Tokens", "tokens", "LLM tokens consumed")

    updated = sdk.billable_metrics.update(id=created.id, name="LLM Tokens", event_type=None, group_by=None)
    assert (updated.name, updated.event_type, updated.group_by) == ("LLM Tokens", None, None)
    assert (updated.value_property, updated.aggregation) == ("$.usage.tokens", "SUM")
    assert updated.updated_at >= created.updated_at

    listed = sdk.billable_metrics.list(merchant_id=merchant.merchant_id, product_id=product_id)
    assert [m.id for m in listed.data] == [created.id]
    assert (listed.pagination.total, listed.pagination.limit, listed.pagination.offset) == (1, 10, 0)


def test_response_carries_the_union_of_sdk_fields(client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    body = create(client, merchant, product_id, eventFrom="2024-01-15T10:30:00+02:00").json()
    assert body["object"] == "billableMetric"
    assert "itemId" in body and body["itemId"] is None
    assert body["eventFrom"] == "2024-01-15T08:30:00.000Z"
    assert body["eventType"] is None and body["groupBy"] is None
    assert body["createdAt"].endswith("Z") and body["updatedAt"].endswith("Z")
    assert client.get(f"/v0/billableMetrics/{body['id']}").json() == body


@pytest.mark.parametrize("aggregation", NEEDS_VALUE)
def test_value_property_is_required_unless_count(
    client: httpx.Client, merchant: NewMerchant, aggregation: str
) -> None:
    product_id = new_product(client, merchant)
    response = create(client, merchant, product_id, aggregation=aggregation, valueProperty=None)
    assert aggregation in field_errors(response)["valueProperty"]
    body = metric_body(merchant, product_id, aggregation=aggregation)
    del body["valueProperty"]
    assert aggregation in field_errors(client.post("/v0/billableMetrics", json=body))["valueProperty"]
    assert total(client, merchant) == 0


def test_count_needs_no_value_property(client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    body = metric_body(merchant, product_id, aggregation="COUNT", unit="calls")
    del body["valueProperty"]
    response = client.post("/v0/billableMetrics", json=body)
    assert response.status_code == 201, response.text
    assert (response.json()["aggregation"], response.json()["valueProperty"]) == ("COUNT", None)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": 42}, "name"),
        ({"description": ["x"]}, "description"),
        ({"unit": ""}, "unit"),
        ({"merchantId": 7}, "merchantId"),
        ({"productId": None}, "productId"),
        ({"aggregation": "MEDIAN"}, "aggregation"),
        ({"aggregation": "sum"}, "aggregation"),
        ({"aggregation": None}, "aggregation"),
        ({"valueProperty": "tokens"}, "valueProperty"),
        ({"valueProperty": 5}, "valueProperty"),
        ({"eventType": 5}, "eventType"),
        ({"groupBy": ["$.model"]}, "groupBy"),
        ({"groupBy": {"model": "model"}}, "groupBy.model"),
        ({"groupBy": {"model": 1}}, "groupBy.model"),
        ({"eventFrom": "yesterday"}, "eventFrom"),
        ({"itemId": 5}, "itemId"),
    ],
)
def test_create_rejects_bad_fields(
    client: httpx.Client, merchant: NewMerchant, overrides: dict[str, object], field: str
) -> None:
    product_id = new_product(client, merchant)
    assert field in field_errors(create(client, merchant, product_id, **overrides))
    assert total(client, merchant) == 0


def test_json_path_message_says_what_to_send(client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    message = field_errors(create(client, merchant, product_id, valueProperty="tokens"))["valueProperty"]
    assert "$" in message and "tokens" in message


def test_create_for_another_merchant_is_forbidden(
    client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    product_id = new_product(client, merchant)
    body = metric_body(other_merchant, product_id)
    assert_error(client.post("/v0/billableMetrics", json=body), 403, "forbidden")
    assert total(client, merchant) == 0


def test_product_must_be_the_callers(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    foreign_product = new_product(other_client, other_merchant)
    assert (
        foreign_product
        in assert_error(create(client, merchant, foreign_product), 404, "not_found")["message"]
    )
    assert_error(create(client, merchant, "prod_missing"), 404, "not_found")
    assert total(client, merchant) == 0
    assert total(other_client, other_merchant) == 0


def test_item_id_can_only_be_null(client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    assert "item_x" in assert_error(create(client, merchant, product_id, itemId="item_x"), 404)["message"]
    assert total(client, merchant) == 0
    response = create(client, merchant, product_id, itemId=None)
    assert response.status_code == 201 and response.json()["itemId"] is None
    metric_id = response.json()["id"]
    assert_error(client.patch(f"/v0/billableMetrics/{metric_id}", json={"itemId": "item_x"}), 404)
    assert client.patch(f"/v0/billableMetrics/{metric_id}", json={"itemId": None}).status_code == 200


def test_list_requires_the_callers_merchant_id(
    client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    assert "merchantId" in field_errors(client.get("/v0/billableMetrics"))
    params = {"merchantId": other_merchant.merchant_id}
    assert_error(client.get("/v0/billableMetrics", params=params), 403, "forbidden")


def test_list_filters_by_product_and_item_and_pages(client: httpx.Client, merchant: NewMerchant) -> None:
    first, second = new_product(client, merchant, "a"), new_product(client, merchant, "b")
    ids = [create(client, merchant, first, name=f"m{i}").json()["id"] for i in range(3)]
    other_id = create(client, merchant, second).json()["id"]
    params: dict[str, Any] = {"merchantId": merchant.merchant_id}
    by_product = client.get("/v0/billableMetrics", params=params | {"productId": first}).json()
    assert [m["id"] for m in by_product["data"]] == ids
    page = client.get("/v0/billableMetrics", params=params | {"limit": 2, "offset": 2}).json()
    assert [m["id"] for m in page["data"]] == [ids[2], other_id]
    assert page["pagination"] == {"limit": 2, "offset": 2, "total": 4, "hasMore": False}
    by_item = client.get("/v0/billableMetrics", params=params | {"itemId": "item_x"}).json()
    assert by_item["object"] == "list" and by_item["data"] == [] and by_item["pagination"]["total"] == 0


def test_other_merchants_metric_is_not_found(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    metric_id = create(client, merchant, new_product(client, merchant)).json()["id"]
    assert_error(other_client.get(f"/v0/billableMetrics/{metric_id}"), 404, "not_found")
    assert_error(other_client.patch(f"/v0/billableMetrics/{metric_id}", json={"name": "x"}), 404, "not_found")
    assert total(other_client, other_merchant) == 0
    assert client.get(f"/v0/billableMetrics/{metric_id}").json()["name"] == "Tokens"


@pytest.mark.parametrize("aggregation", ["SUM", "COUNT", None])
def test_aggregation_cannot_be_changed(
    client: httpx.Client, merchant: NewMerchant, aggregation: str | None
) -> None:
    metric_id = create(client, merchant, new_product(client, merchant)).json()["id"]
    response = client.patch(
        f"/v0/billableMetrics/{metric_id}", json={"aggregation": aggregation, "name": "x"}
    )
    assert field_errors(response)["aggregation"] == "aggregation cannot be changed; create a new metric"
    assert client.get(f"/v0/billableMetrics/{metric_id}").json()["name"] == "Tokens"


@pytest.mark.parametrize("aggregation", NEEDS_VALUE)
def test_value_property_cannot_be_cleared_when_the_aggregation_needs_it(
    client: httpx.Client, merchant: NewMerchant, aggregation: str
) -> None:
    metric_id = create(client, merchant, new_product(client, merchant), aggregation=aggregation).json()["id"]
    response = client.patch(f"/v0/billableMetrics/{metric_id}", json={"valueProperty": None, "name": "x"})
    assert aggregation in field_errors(response)["valueProperty"]
    stored = client.get(f"/v0/billableMetrics/{metric_id}").json()
    assert (stored["valueProperty"], stored["name"]) == ("$.tokens", "Tokens")


def test_update_changes_and_clears_meter_fields(client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    metric_id = create(
        client,
        merchant,
        product_id,
        aggregation="COUNT",
        eventType="api.call",
        groupBy={"route": "$.route"},
        eventFrom="2024-01-01T00:00:00Z",
    ).json()["id"]
    url = f"/v0/billableMetrics/{metric_id}"
    changed = client.patch(url, json={"valueProperty": "$.ms", "groupBy": {"region": "$.region"}}).json()
    assert (changed["valueProperty"], changed["groupBy"]) == ("$.ms", {"region": "$.region"})
    cleared = client.patch(
        url, json={"valueProperty": None, "eventType": None, "groupBy": None, "eventFrom": None}
    ).json()
    assert [cleared[k] for k in ("valueProperty", "eventType", "groupBy", "eventFrom")] == [None] * 4
    assert (cleared["aggregation"], cleared["name"]) == ("COUNT", "Tokens")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": None}, "name"),
        ({"description": None}, "description"),
        ({"unit": None}, "unit"),
        ({"name": 3}, "name"),
        ({"valueProperty": "tokens"}, "valueProperty"),
        ({"groupBy": {"model": "model"}}, "groupBy.model"),
        ({"eventFrom": "soon"}, "eventFrom"),
    ],
)
def test_update_rejects_bad_fields_and_leaves_row_unchanged(
    client: httpx.Client, merchant: NewMerchant, body: dict[str, object], field: str
) -> None:
    metric_id = create(client, merchant, new_product(client, merchant)).json()["id"]
    before = client.get(f"/v0/billableMetrics/{metric_id}").json()
    assert field in field_errors(client.patch(f"/v0/billableMetrics/{metric_id}", json=body))
    assert client.get(f"/v0/billableMetrics/{metric_id}").json() == before


def test_sdk_surfaces_not_found_as_typed_error(sdk: Paygentic) -> None:
    with pytest.raises(errors.Error) as caught:
        sdk.billable_metrics.get(id="bm_doesnotexist")
    assert caught.value.status_code == 404 and "bm_doesnotexist" in caught.value.message


SDK063_SCRIPT = """
import sys
from paygentic_sdk import Paygentic
url, key, merchant_id, product_id, metric_id, fee_id, feature_id = sys.argv[1:]
with Paygentic(server_url=url, bearer_auth=key) as sdk:
    metric = sdk.billable_metrics.get(id=metric_id)
    assert metric.id == metric_id and metric.item_id is None, metric
    assert [m.id for m in sdk.billable_metrics.list(merchant_id=merchant_id).data] == [metric_id]
    fee = sdk.fees.get(id=fee_id)
    assert fee.id == fee_id and fee.item_id is None, fee
    assert [f.id for f in sdk.fees.list(merchant_id=merchant_id).data] == [fee_id]
    feature = sdk.features.get(id=feature_id)
    assert feature.id == feature_id and feature.metadata == {}, feature
    assert [f.id for f in sdk.features.list(product_id=product_id).data] == [feature_id]
print("ok")
"""


def test_sdk_063_parses_metric_fee_and_feature(
    api_url: str, client: httpx.Client, merchant: NewMerchant
) -> None:
    product_id = new_product(client, merchant)
    metric_id = create(client, merchant, product_id).json()["id"]
    base = {"merchantId": merchant.merchant_id, "productId": product_id}
    fee = client.post("/v0/fees", json=base | {"name": "Setup", "description": "One-time setup"})
    feature = client.post("/v0/features", json=base | {"key": "api-access", "name": "API access"})
    assert (fee.status_code, feature.status_code) == (201, 201), (fee.text, feature.text)
    args = [api_url, merchant.api_key, merchant.merchant_id, product_id, metric_id]
    result = subprocess.run(
        [sdk063_python(), "-c", SDK063_SCRIPT, *args, fee.json()["id"], feature.json()["id"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
