from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from tests.api.test_billable_metrics import new_product
from tests.api.test_fees import create as create_fee
from tests.api.test_fees import insert_price, remove_price
from tests.helpers import assert_error, field_errors


def feature_body(merchant: NewMerchant, product_id: str, **overrides: object) -> dict[str, Any]:
    base = {"merchantId": merchant.merchant_id, "productId": product_id}
    return base | {"key": "api-access", "name": "API access"} | overrides


def create(
    client: httpx.Client, merchant: NewMerchant, product_id: str, **overrides: object
) -> httpx.Response:
    return client.post("/v0/features", json=feature_body(merchant, product_id, **overrides))


def keys(client: httpx.Client, product_id: str) -> list[str]:
    response = client.get("/v0/features", params={"productId": product_id})
    assert response.status_code == 200, response.text
    return [f["key"] for f in response.json()["data"]]


def test_feature_lifecycle_through_sdk(sdk: Paygentic, client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    created = sdk.features.create(
        key="api-access", name="API access", merchant_id=merchant.merchant_id, product_id=product_id
    )
    assert created.id.startswith("feat_")
    assert (created.key, created.type, created.metadata) == ("api-access", "boolean", {})
    assert (created.merchant_id, created.product_id) == (merchant.merchant_id, product_id)
    seats = sdk.features.create(
        key="seats",
        name="Seats",
        merchant_id=merchant.merchant_id,
        product_id=product_id,
        type_="static",
        metadata={"tier": "pro"},
    )
    assert (seats.type, seats.metadata) == ("static", {"tier": "pro"})

    fetched = sdk.features.get(id=created.id)
    assert (fetched.key, fetched.name) == ("api-access", "API access")
    updated = sdk.features.update(
        id=created.id, key="api-calls", name="API calls", type_="metered", metadata={"unit": "calls"}
    )
    assert (updated.key, updated.name, updated.type, updated.metadata) == (
        "api-calls",
        "API calls",
        "metered",
        {"unit": "calls"},
    )
    assert updated.updated_at >= created.updated_at

    listed = sdk.features.list(product_id=product_id)
    assert [f.id for f in listed.data] == [created.id, seats.id] and listed.pagination.total == 2
    by_key = sdk.features.list(product_id=product_id, key="seats")
    assert [f.id for f in by_key.data] == [seats.id] and by_key.pagination.total == 1

    assert sdk.features.delete(id=created.id) is None
    with pytest.raises(errors.Error) as caught:
        sdk.features.get(id=created.id)
    assert caught.value.status_code == 404
    assert keys(client, product_id) == ["seats"]


def test_response_shape(client: httpx.Client, merchant: NewMerchant) -> None:
    body = create(client, merchant, new_product(client, merchant)).json()
    assert (body["object"], body["type"], body["metadata"]) == ("feature", "boolean", {})
    assert body["createdAt"].endswith("Z") and body["updatedAt"].endswith("Z")
    assert client.get(f"/v0/features/{body['id']}").json() == body


@pytest.mark.parametrize(
    "key", ["API", "api_access", "api access", "-api", "api-", "api--access", "ápi", "", 42, None]
)
def test_key_must_be_a_slug(client: httpx.Client, merchant: NewMerchant, key: object) -> None:
    product_id = new_product(client, merchant)
    assert "key" in field_errors(create(client, merchant, product_id, key=key))
    assert keys(client, product_id) == []


def test_slug_message_says_what_to_send(client: httpx.Client, merchant: NewMerchant) -> None:
    message = field_errors(create(client, merchant, new_product(client, merchant), key="Api_Access"))["key"]
    assert "lowercase" in message and "Api_Access" in message


@pytest.mark.parametrize("key", ["a", "api", "api-access", "v2-seats-10"])
def test_slugs_are_accepted(client: httpx.Client, merchant: NewMerchant, key: str) -> None:
    response = create(client, merchant, new_product(client, merchant), key=key)
    assert response.status_code == 201 and response.json()["key"] == key


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": 3}, "name"),
        ({"type": "premium"}, "type"),
        ({"type": None}, "type"),
        ({"metadata": {"tier": 1}}, "metadata.tier"),
        ({"metadata": ["tier"]}, "metadata"),
        ({"merchantId": None}, "merchantId"),
        ({"productId": 4}, "productId"),
    ],
)
def test_create_rejects_bad_fields(
    client: httpx.Client, merchant: NewMerchant, overrides: dict[str, object], field: str
) -> None:
    product_id = new_product(client, merchant)
    assert field in field_errors(create(client, merchant, product_id, **overrides))
    assert keys(client, product_id) == []


def test_create_for_another_merchant_is_forbidden(
    client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    product_id = new_product(client, merchant)
    assert_error(client.post("/v0/features", json=feature_body(other_merchant, product_id)), 403, "forbidden")
    assert keys(client, product_id) == []


def test_product_must_be_the_callers(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    foreign_product = new_product(other_client, other_merchant)
    assert (
        foreign_product
        in assert_error(create(client, merchant, foreign_product), 404, "not_found")["message"]
    )
    assert_error(create(client, merchant, "prod_missing"), 404, "not_found")
    assert keys(other_client, foreign_product) == []


def test_key_is_unique_within_a_product(client: httpx.Client, merchant: NewMerchant) -> None:
    first, second = new_product(client, merchant, "a"), new_product(client, merchant, "b")
    original = create(client, merchant, first).json()
    duplicate = assert_error(create(client, merchant, first, name="Other"), 409, "conflict")
    assert "api-access" in duplicate["message"]
    assert client.get("/v0/features", params={"productId": first}).json()["data"] == [original]
    assert create(client, merchant, second).status_code == 201


def test_update_to_a_taken_key_conflicts(client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    create(client, merchant, product_id)
    seats = create(client, merchant, product_id, key="seats").json()
    response = client.patch(f"/v0/features/{seats['id']}", json={"key": "api-access", "name": "Renamed"})
    assert "api-access" in assert_error(response, 409, "conflict")["message"]
    assert client.get(f"/v0/features/{seats['id']}").json() == seats
    same = client.patch(f"/v0/features/{seats['id']}", json={"key": "seats", "name": "Seats"})
    assert same.status_code == 200 and (same.json()["key"], same.json()["name"]) == ("seats", "Seats")


def test_concurrent_creates_of_one_key_yield_one_feature(
    api_url: str, merchant: NewMerchant, client: httpx.Client
) -> None:
    product_id = new_product(client, merchant)
    body = feature_body(merchant, product_id)
    headers = {"Authorization": f"Bearer {merchant.api_key}"}

    def post(_: int) -> int:
        return httpx.post(f"{api_url}/v0/features", json=body, headers=headers).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(post, range(6)))
    assert statuses == [201] + [409] * 5
    assert keys(client, product_id) == ["api-access"]


def test_list_requires_the_callers_product(
    client: httpx.Client, other_client: httpx.Client, other_merchant: NewMerchant
) -> None:
    assert "productId" in field_errors(client.get("/v0/features"))
    assert_error(client.get("/v0/features", params={"productId": "prod_missing"}), 404, "not_found")
    foreign_product = new_product(other_client, other_merchant)
    assert_error(client.get("/v0/features", params={"productId": foreign_product}), 404, "not_found")


def test_list_filters_by_exact_key_and_pages(client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    ids = [create(client, merchant, product_id, key=k).json()["id"] for k in ("api", "api-access", "seats")]
    params: dict[str, Any] = {"productId": product_id}
    page = client.get("/v0/features", params=params | {"limit": 2, "offset": 1}).json()
    assert [f["id"] for f in page["data"]] == ids[1:]
    assert page["pagination"] == {"limit": 2, "offset": 1, "total": 3, "hasMore": False}
    exact = client.get("/v0/features", params=params | {"key": "api"}).json()
    assert [f["id"] for f in exact["data"]] == [ids[0]]
    assert client.get("/v0/features", params=params | {"key": "ap"}).json()["data"] == []


def test_other_merchants_feature_is_not_found(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant
) -> None:
    feature = create(client, merchant, new_product(client, merchant)).json()
    assert_error(other_client.get(f"/v0/features/{feature['id']}"), 404, "not_found")
    assert_error(other_client.patch(f"/v0/features/{feature['id']}", json={"name": "x"}), 404, "not_found")
    assert_error(other_client.delete(f"/v0/features/{feature['id']}"), 404, "not_found")
    assert client.get(f"/v0/features/{feature['id']}").json() == feature


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": None}, "key"),
        ({"key": "Bad Key"}, "key"),
        ({"name": None}, "name"),
        ({"type": None}, "type"),
        ({"type": "premium"}, "type"),
        ({"metadata": None}, "metadata"),
        ({"metadata": {"tier": 2}}, "metadata.tier"),
    ],
)
def test_update_rejects_bad_fields_and_leaves_row_unchanged(
    client: httpx.Client, merchant: NewMerchant, body: dict[str, object], field: str
) -> None:
    feature = create(client, merchant, new_product(client, merchant), metadata={"tier": "pro"}).json()
    assert field in field_errors(client.patch(f"/v0/features/{feature['id']}", json={"name": "x"} | body))
    assert client.get(f"/v0/features/{feature['id']}").json() == feature


def test_unknown_feature_is_not_found(client: httpx.Client) -> None:
    assert_error(client.get("/v0/features/feat_missing"), 404, "not_found")
    assert_error(client.patch("/v0/features/feat_missing", json={"name": "x"}), 404, "not_found")
    assert_error(client.delete("/v0/features/feat_missing"), 404, "not_found")


async def test_feature_linked_to_a_price_cannot_be_deleted(
    api_url: str, client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine
) -> None:
    product_id = new_product(client, merchant)
    feature_id = create(client, merchant, product_id).json()["id"]
    fee_id = create_fee(client, merchant, product_id).json()["id"]
    price_id = await insert_price(engine, merchant, fee_id, feature_id=feature_id)

    async with httpx.AsyncClient(base_url=api_url, headers=client.headers) as http:
        body = assert_error(await http.delete(f"/v0/features/{feature_id}"), 409, "conflict")
        assert "1 price" in body["message"] and "remove the feature" in body["message"]
        assert body["details"] == {"blockers": [{"type": "prices", "count": 1}]}
        assert (await http.get(f"/v0/features/{feature_id}")).status_code == 200

        await remove_price(engine, price_id)
        response = await http.delete(f"/v0/features/{feature_id}")
        assert response.status_code == 204 and response.content == b""
        assert_error(await http.get(f"/v0/features/{feature_id}"), 404, "not_found")
