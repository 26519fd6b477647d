from __future__ import annotations

import httpx
import pytest
from paygentic_sdk import Paygentic, errors

from db.merchants import NewMerchant
from tests.helpers import assert_error, field_errors


def create(client: httpx.Client, merchant: NewMerchant, **overrides: object) -> httpx.Response:
    body = {"merchantId": merchant.merchant_id, "name": "LLM Inference", "description": "Tokens"} | overrides
    return client.post("/v0/products", json=body)


def test_product_lifecycle_through_sdk(sdk: Paygentic, merchant: NewMerchant) -> None:
    created = sdk.products.create(description="Tokens", merchant_id=merchant.merchant_id, name="LLM")
    assert created.id.startswith("prod_") and created.merchant_id == merchant.merchant_id
    assert created.metadata == {}
    fetched = sdk.products.get(id=created.id)
    assert (fetched.name, fetched.description) == ("LLM", "Tokens")
    updated = sdk.products.update(id=created.id, name="LLM v2")
    assert (updated.name, updated.description) == ("LLM v2", "Tokens")
    assert updated.updated_at >= created.updated_at
    listed = sdk.products.list(request={"merchant_id": merchant.merchant_id})
    assert listed.data is not None and [p.id for p in listed.data] == [created.id]
    assert listed.pagination is not None and listed.pagination.total == 1


def test_list_pages_with_limit_and_offset(client: httpx.Client, merchant: NewMerchant) -> None:
    ids = [create(client, merchant, name=f"p{i}").json()["id"] for i in range(3)]
    first = client.get("/v0/products", params={"limit": 2, "offset": 0}).json()
    second = client.get("/v0/products", params={"limit": 2, "offset": 2}).json()
    assert [p["id"] for p in first["data"] + second["data"]] == ids
    assert first["pagination"] == {"limit": 2, "offset": 0, "total": 3, "hasMore": True}
    assert second["pagination"]["hasMore"] is False


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": 42}, "name"),
        ({"description": ["x"]}, "description"),
        ({"merchantId": None}, "merchantId"),
        ({"metadata": {"k": 1}}, "metadata.k"),
    ],
)
def test_create_rejects_bad_fields(
    client: httpx.Client, merchant: NewMerchant, overrides: dict[str, object], field: str
) -> None:
    assert field in field_errors(create(client, merchant, **overrides))
    assert client.get("/v0/products").json()["pagination"]["total"] == 0


def test_create_for_another_merchant_is_forbidden(client: httpx.Client, other_merchant: NewMerchant) -> None:
    assert_error(create(client, other_merchant), 403, "forbidden")
    assert client.get("/v0/products").json()["pagination"]["total"] == 0


def test_other_merchants_product_is_not_found(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant
) -> None:
    product_id = create(client, merchant).json()["id"]
    assert_error(other_client.get(f"/v0/products/{product_id}"), 404, "not_found")
    assert_error(other_client.patch(f"/v0/products/{product_id}", json={"name": "x"}), 404)
    assert other_client.get("/v0/products").json()["data"] == []
    assert client.get(f"/v0/products/{product_id}").json()["name"] == "LLM Inference"


def test_update_rejects_null_and_leaves_row_unchanged(client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = create(client, merchant).json()["id"]
    assert "name" in field_errors(client.patch(f"/v0/products/{product_id}", json={"name": None}))
    assert client.get(f"/v0/products/{product_id}").json()["name"] == "LLM Inference"


def test_sdk_surfaces_not_found_as_typed_error(sdk: Paygentic) -> None:
    with pytest.raises(errors.Error) as caught:
        sdk.products.get(id="prod_doesnotexist")
    assert caught.value.status_code == 404 and "prod_doesnotexist" in caught.value.message
