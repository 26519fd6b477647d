from __future__ import annotations

from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import Price
from db.session import session_factory
from domain.ids import new_id
from tests.api.test_billable_metrics import new_product
from tests.helpers import assert_error, field_errors


async def insert_price(
    engine: AsyncEngine, merchant: NewMerchant, fee_id: str, feature_id: str | None = None
) -> str:
    """A fee price written straight to the table, so these tests do not depend on /v0/prices."""
    price = Price(
        id=new_id("price"),
        merchant_id=merchant.merchant_id,
        environment=merchant.environment,
        fee_id=fee_id,
        model="standard",
        payment_term="in_advance",
        properties={"unitPrice": "10.00"},
        billing_cadence="P1M",
        invoice_display_name="Setup",
        feature_id=feature_id,
    )
    async with session_factory(engine)() as session:
        session.add(price)
        await session.commit()
    return price.id


async def remove_price(engine: AsyncEngine, price_id: str) -> None:
    async with session_factory(engine)() as session:
        await session.execute(delete(Price).where(Price.id == price_id))
        await session.commit()


def fee_body(merchant: NewMerchant, product_id: str, **overrides: object) -> dict[str, Any]:
    base = {"merchantId": merchant.merchant_id, "productId": product_id}
    return base | {"name": "Setup", "description": "One-time setup fee"} | overrides


def create(
    client: httpx.Client, merchant: NewMerchant, product_id: str, **overrides: object
) -> httpx.Response:
    return client.post("/v0/fees", json=fee_body(merchant, product_id, **overrides))


def total(client: httpx.Client, merchant: NewMerchant) -> int:
    response = client.get("/v0/fees", params={"merchantId": merchant.merchant_id})
    assert response.status_code == 200, response.text
    count: int = response.json()["pagination"]["total"]
    return count


def test_fee_lifecycle_through_sdk(sdk: Paygentic, client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    created = sdk.fees.create(
        name="Setup",
        description="One-time setup fee",
        merchant_id=merchant.merchant_id,
        product_id=product_id,
    )
    assert created.id.startswith("fee_")
    assert (created.merchant_id, created.product_id) == (merchant.merchant_id, product_id)
    fetched = sdk.fees.get(id=created.id)
    assert (fetched.name, fetched.description) == ("Setup", "One-time setup fee")
    updated = sdk.fees.update(id=created.id, name="Onboarding")
    assert (updated.name, updated.description) == ("Onboarding", "One-time setup fee")
    assert updated.updated_at >= created.updated_at
    listed = sdk.fees.list(merchant_id=merchant.merchant_id, product_id=product_id)
    assert [f.id for f in listed.data] == [created.id] and listed.pagination.total == 1
    assert sdk.fees.delete(id=created.id) is None
    with pytest.raises(errors.Error) as caught:
        sdk.fees.get(id=created.id)
    assert caught.value.status_code == 404
    assert total(client, merchant) == 0


def test_response_carries_the_union_of_sdk_fields(client: httpx.Client, merchant: NewMerchant) -> None:
    body = create(client, merchant, new_product(client, merchant)).json()
    assert body["object"] == "fee"
    assert "itemId" in body and body["itemId"] is None
    assert body["createdAt"].endswith("Z") and body["updatedAt"].endswith("Z")
    assert client.get(f"/v0/fees/{body['id']}").json() == body


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": 42}, "name"),
        ({"description": None}, "description"),
        ({"description": ""}, "description"),
        ({"merchantId": None}, "merchantId"),
        ({"productId": None}, "productId"),
        ({"productId": 12}, "productId"),
        ({"itemId": 5}, "itemId"),
    ],
)
def test_create_rejects_bad_fields(
    client: httpx.Client, merchant: NewMerchant, overrides: dict[str, object], field: str
) -> None:
    product_id = new_product(client, merchant)
    assert field in field_errors(create(client, merchant, product_id, **overrides))
    assert total(client, merchant) == 0


@pytest.mark.parametrize("missing", ["name", "description", "merchantId", "productId"])
def test_create_requires_each_field(client: httpx.Client, merchant: NewMerchant, missing: str) -> None:
    body = fee_body(merchant, new_product(client, merchant))
    del body[missing]
    assert field_errors(client.post("/v0/fees", json=body))[missing] == "is required"
    assert total(client, merchant) == 0


def test_create_for_another_merchant_is_forbidden(
    client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    product_id = new_product(client, merchant)
    assert_error(client.post("/v0/fees", json=fee_body(other_merchant, product_id)), 403, "forbidden")
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


def test_item_id_can_only_be_null(client: httpx.Client, merchant: NewMerchant) -> None:
    product_id = new_product(client, merchant)
    assert "item_x" in assert_error(create(client, merchant, product_id, itemId="item_x"), 404)["message"]
    assert total(client, merchant) == 0
    fee_id = create(client, merchant, product_id, itemId=None).json()["id"]
    assert_error(client.patch(f"/v0/fees/{fee_id}", json={"itemId": "item_x", "name": "x"}), 404)
    assert client.get(f"/v0/fees/{fee_id}").json()["name"] == "Setup"


def test_list_requires_the_callers_merchant_id(
    client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    assert "merchantId" in field_errors(client.get("/v0/fees"))
    assert_error(client.get("/v0/fees", params={"merchantId": other_merchant.merchant_id}), 403, "forbidden")


def test_list_filters_by_product_and_item_and_pages(client: httpx.Client, merchant: NewMerchant) -> None:
    first, second = new_product(client, merchant, "a"), new_product(client, merchant, "b")
    ids = [create(client, merchant, first, name=f"f{i}").json()["id"] for i in range(3)]
    other_id = create(client, merchant, second).json()["id"]
    params: dict[str, Any] = {"merchantId": merchant.merchant_id}
    by_product = client.get("/v0/fees", params=params | {"productId": first}).json()
    assert [f["id"] for f in by_product["data"]] == ids
    page = client.get("/v0/fees", params=params | {"limit": 2, "offset": 2}).json()
    assert [f["id"] for f in page["data"]] == [ids[2], other_id]
    assert page["pagination"] == {"limit": 2, "offset": 2, "total": 4, "hasMore": False}
    by_item = client.get("/v0/fees", params=params | {"itemId": "item_x"}).json()
    assert by_item["object"] == "list" and by_item["data"] == [] and by_item["pagination"]["total"] == 0


def test_other_merchants_fee_is_not_found(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    fee_id = create(client, merchant, new_product(client, merchant)).json()["id"]
    assert_error(other_client.get(f"/v0/fees/{fee_id}"), 404, "not_found")
    assert_error(other_client.patch(f"/v0/fees/{fee_id}", json={"name": "x"}), 404, "not_found")
    assert_error(other_client.delete(f"/v0/fees/{fee_id}"), 404, "not_found")
    assert total(other_client, other_merchant) == 0
    assert client.get(f"/v0/fees/{fee_id}").json()["name"] == "Setup"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": None}, "name"),
        ({"description": None}, "description"),
        ({"name": ""}, "name"),
        ({"name": 1}, "name"),
    ],
)
def test_update_rejects_bad_fields_and_leaves_row_unchanged(
    client: httpx.Client, merchant: NewMerchant, body: dict[str, object], field: str
) -> None:
    fee_id = create(client, merchant, new_product(client, merchant)).json()["id"]
    before = client.get(f"/v0/fees/{fee_id}").json()
    assert field in field_errors(client.patch(f"/v0/fees/{fee_id}", json=body))
    assert client.get(f"/v0/fees/{fee_id}").json() == before


def test_unknown_fee_is_not_found(client: httpx.Client) -> None:
    assert_error(client.get("/v0/fees/fee_missing"), 404, "not_found")
    assert_error(client.patch("/v0/fees/fee_missing", json={"name": "x"}), 404, "not_found")
    assert_error(client.delete("/v0/fees/fee_missing"), 404, "not_found")


async def test_fee_with_prices_cannot_be_deleted(
    api_url: str, sdk: Paygentic, client: httpx.Client, merchant: NewMerchant, engine: AsyncEngine
) -> None:
    fee_id = create(client, merchant, new_product(client, merchant)).json()["id"]
    price_ids = [await insert_price(engine, merchant, fee_id) for _ in range(2)]

    with pytest.raises(errors.DeleteFeeConflictError) as caught:
        await sdk.fees.delete_async(id=fee_id)
    assert caught.value.status_code == 409
    assert caught.value.data.message == "Fee cannot be deleted because it has associated prices"
    async with httpx.AsyncClient(base_url=api_url, headers=client.headers) as http:
        raw = assert_error(await http.delete(f"/v0/fees/{fee_id}"), 409, "conflict")
        assert raw == {
            "error": "conflict",
            "message": "Fee cannot be deleted because it has associated prices",
            "details": {"blockers": [{"type": "prices", "count": 2}]},
        }
        assert (await http.get(f"/v0/fees/{fee_id}")).status_code == 200

        for price_id in price_ids:
            await remove_price(engine, price_id)
        response = await http.delete(f"/v0/fees/{fee_id}")
        assert response.status_code == 204 and response.content == b""
        assert_error(await http.get(f"/v0/fees/{fee_id}"), 404)
