"""POST/GET /v0/payments over HTTP on the real API and database (no Temporal here: the API commits the row
and leaves the workflow to the reconciler when Temporal is unreachable): the contract's shapes, every
validation rule, idempotency (201 then 200 with the same body), tenancy, filters; and GET /v0/revenue
counting payments by status. The workflow side is in tests/workflows/test_payment_workflow.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import Payment
from domain.ids import has_prefix, new_id
from tests.factories import Factory
from tests.helpers import assert_error, field_errors

MAR1 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def f(engine: AsyncEngine, merchant: NewMerchant) -> Factory:
    return Factory(engine, merchant)


@pytest.fixture
async def aclient(api_url: str, merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as c:
        yield c


@pytest.fixture
async def other_aclient(api_url: str, other_merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {other_merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as c:
        yield c


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def create(c: httpx.AsyncClient, status: int = 201, **body: Any) -> dict[str, Any]:
    response = await c.post("/v0/payments", json={"amount": "25.00", "currency": "USD"} | body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    out: dict[str, Any] = response.json()
    return out


async def test_create_returns_the_contract_shape(
    aclient: httpx.AsyncClient, f: Factory, merchant: NewMerchant, settings: Any
) -> None:
    customer = await f.customer()
    before = datetime.now(UTC)
    got = await create(
        aclient,
        amount="250.00",
        merchantId=merchant.merchant_id,
        customerId=customer.id,
        idempotencyKey="order-1042",
        reference="Order #1042",
        metadata={"orderId": "1042"},
        lineItems=[
            {"description": "Onboarding workshop", "amount": "200.00"},
            {"description": "Handbook", "amount": "25.00", "quantity": 2},
        ],
        successRedirectUrl="https://shop.example/thanks",
        failureRedirectUrl="https://shop.example/sorry",
        savePaymentMethod=True,
    )
    assert has_prefix(got["id"], "payment") and got["id"].startswith("pay_")
    assert got["object"] == "payment"
    assert (got["amount"], got["currency"], got["status"]) == ("250.00", "USD", "pending")
    assert got["paymentUrl"] == f"{settings.base_url}/pay/{got['id']}"
    assert (got["customerId"], got["idempotencyKey"], got["reference"]) == (
        customer.id,
        "order-1042",
        "Order #1042",
    )
    assert got["metadata"] == {"orderId": "1042"}
    assert got["lineItems"] == [
        {"description": "Onboarding workshop", "amount": "200.00", "quantity": 1},
        {"description": "Handbook", "amount": "25.00", "quantity": 2},
    ]
    # Default lifetime P30D from creation.
    expires = _parse(got["expiresAt"])
    assert (
        before + timedelta(days=30) - timedelta(seconds=1)
        <= expires
        <= datetime.now(UTC) + timedelta(days=30)
    )
    assert got["createdAt"].endswith("Z")
    assert (await aclient.get(f"/v0/payments/{got['id']}")).json() == got


async def test_minimal_payment_has_nulls_not_missing_keys(aclient: httpx.AsyncClient) -> None:
    got = await create(aclient, amount="1", currency="EUR", expiresIn="PT1H")
    assert (got["amount"], got["currency"]) == ("1.00", "EUR")
    for key in ("customerId", "idempotencyKey", "reference", "metadata", "lineItems"):
        assert got[key] is None, key
    assert _parse(got["expiresAt"]) - _parse(got["createdAt"]) < timedelta(hours=1, seconds=2)


async def test_idempotent_replay_is_200_with_the_same_body(aclient: httpx.AsyncClient) -> None:
    first = await create(aclient, idempotencyKey="k-1", reference="first")
    again = await create(aclient, status=200, idempotencyKey="k-1", reference="different body")
    assert again == first
    other = await create(aclient, idempotencyKey="k-2")
    assert other["id"] != first["id"]
    listed = (await aclient.get("/v0/payments")).json()
    assert listed["pagination"]["total"] == 2


async def test_the_idempotency_key_is_per_merchant(
    aclient: httpx.AsyncClient, other_aclient: httpx.AsyncClient
) -> None:
    mine = await create(aclient, idempotencyKey="shared")
    theirs = await other_aclient.post(
        "/v0/payments", json={"amount": "25.00", "currency": "USD", "idempotencyKey": "shared"}
    )
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["id"] != mine["id"]


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        ("0.99", "out of range"),
        ("5000.01", "out of range"),
        ("0", "out of range"),
        ("10.505", "like"),
        ("-5.00", "like"),
        ("1e3", "like"),
        (" 10.00", "like"),
        ("10.00\n", "like"),
        ("", "like"),
        ("99999999999999999999999", "like"),
    ],
)
async def test_amount_out_of_range_or_malformed_is_400(
    aclient: httpx.AsyncClient, amount: str, why: str
) -> None:
    response = await aclient.post("/v0/payments", json={"amount": amount, "currency": "USD"})
    assert why in field_errors(response)["amount"]


async def test_the_range_is_inclusive(aclient: httpx.AsyncClient) -> None:
    assert (await create(aclient, amount="1.00"))["amount"] == "1.00"
    assert (await create(aclient, amount="5000.00"))["amount"] == "5000.00"
    assert (await create(aclient, amount="5000"))["amount"] == "5000.00"


async def test_amount_as_a_number_is_400(aclient: httpx.AsyncClient) -> None:
    response = await aclient.post("/v0/payments", json={"amount": 10.5, "currency": "USD"})
    assert "amount" in field_errors(response)


@pytest.mark.parametrize("currency", ["JPY", "usd", "", "US", None])
async def test_wrong_currency_is_400(aclient: httpx.AsyncClient, currency: Any) -> None:
    response = await aclient.post("/v0/payments", json={"amount": "10.00", "currency": currency})
    assert "currency" in field_errors(response)


async def test_missing_required_fields_are_400(aclient: httpx.AsyncClient) -> None:
    errors = field_errors(await aclient.post("/v0/payments", json={}))
    assert {"amount", "currency"} <= set(errors)


async def test_another_merchants_customer_is_400_on_customer_id(
    aclient: httpx.AsyncClient, engine: AsyncEngine, other_merchant: NewMerchant
) -> None:
    foreign = await Factory(engine, other_merchant).customer()
    for customer_id in (foreign.id, "cus_doesnotexist", new_id("customer")):
        response = await aclient.post(
            "/v0/payments", json={"amount": "10.00", "currency": "USD", "customerId": customer_id}
        )
        assert "customerId" in field_errors(response)
    assert (await aclient.get("/v0/payments")).json()["pagination"]["total"] == 0


async def test_another_merchant_id_is_403(aclient: httpx.AsyncClient, other_merchant: NewMerchant) -> None:
    other = other_merchant.merchant_id
    body = {"amount": "10.00", "currency": "USD", "merchantId": other}
    assert_error(await aclient.post("/v0/payments", json=body), 403, "forbidden")
    assert_error(await aclient.get("/v0/payments", params={"merchantId": other}), 403, "forbidden")


async def test_save_payment_method_requires_a_customer(aclient: httpx.AsyncClient, f: Factory) -> None:
    response = await aclient.post(
        "/v0/payments", json={"amount": "10.00", "currency": "USD", "savePaymentMethod": True}
    )
    assert "customerId" in field_errors(response)["savePaymentMethod"]
    customer = await f.customer()
    assert (await create(aclient, customerId=customer.id, savePaymentMethod=True))[
        "customerId"
    ] == customer.id
    response = await aclient.post(
        "/v0/payments", json={"amount": "10.00", "currency": "USD", "savePaymentMethod": "yes"}
    )
    assert "savePaymentMethod" in field_errors(response)


@pytest.mark.parametrize(
    ("expires_in", "why"),
    [
        ("P32D", "longer than the maximum"),
        ("P2M", "longer than the maximum"),
        ("P1Y", "longer than the maximum"),
        ("PT0S", "too short"),
        ("P0D", "too short"),
        ("30 days", ""),
        ("P", ""),
        ("PT", ""),
        ("-P1D", ""),
        ("P99999999999999999999D", ""),
    ],
)
async def test_bad_expires_in_is_400(aclient: httpx.AsyncClient, expires_in: str, why: str) -> None:
    response = await aclient.post(
        "/v0/payments", json={"amount": "10.00", "currency": "USD", "expiresIn": expires_in}
    )
    assert why in field_errors(response)["expiresIn"]


async def test_expires_in_up_to_the_maximum(aclient: httpx.AsyncClient) -> None:
    got = await create(aclient, expiresIn="P31D")
    assert _parse(got["expiresAt"]) - _parse(got["createdAt"]) > timedelta(days=31) - timedelta(seconds=2)
    got = await create(aclient, expiresIn="PT1S")
    assert _parse(got["expiresAt"]) > _parse(got["createdAt"])


async def test_too_many_line_items_is_400(aclient: httpx.AsyncClient) -> None:
    items = [{"description": f"item {n}", "amount": "0.01"} for n in range(101)]
    response = await aclient.post(
        "/v0/payments", json={"amount": "1.01", "currency": "USD", "lineItems": items}
    )
    assert "lineItems" in field_errors(response)
    got = await create(aclient, amount="1.00", lineItems=items[:100])
    assert len(got["lineItems"]) == 100


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([{"description": "a", "amount": "10.00"}], "lineItems"),  # sum 10 ≠ 25
        ([{"description": "a", "amount": "12.50", "quantity": 3}], "lineItems"),
        ([{"description": "", "amount": "25.00"}], "lineItems.0.description"),
        ([{"description": "a", "amount": "25.001"}], "lineItems.0.amount"),
        ([{"description": "a", "amount": "25.00", "quantity": 0}], "lineItems.0.quantity"),
        ([{"description": "a", "amount": "25.00", "quantity": 1.5}], "lineItems.0.quantity"),
        ([{"amount": "25.00"}], "lineItems.0.description"),
    ],
)
async def test_bad_line_items_are_400(aclient: httpx.AsyncClient, items: list[Any], field: str) -> None:
    response = await aclient.post(
        "/v0/payments", json={"amount": "25.00", "currency": "USD", "lineItems": items}
    )
    assert field in field_errors(response)


async def test_line_items_add_up_with_quantities(aclient: httpx.AsyncClient) -> None:
    items = [{"description": "seat", "amount": "12.50", "quantity": 2}]
    assert (await create(aclient, lineItems=items))["lineItems"][0]["quantity"] == 2
    assert (await create(aclient, lineItems=[]))["lineItems"] == []


@pytest.mark.parametrize(
    "extra",
    [
        {"idempotencyKey": "k" * 256},
        {"idempotencyKey": ""},
        {"reference": "r" * 256},
        {"metadata": {"a": 1}},
        {"metadata": {f"k{n}": "v" for n in range(51)}},
        {"successRedirectUrl": "javascript:alert(1)"},
        {"failureRedirectUrl": "not a url"},
    ],
)
async def test_other_fields_are_bounded(aclient: httpx.AsyncClient, extra: dict[str, Any]) -> None:
    response = await aclient.post("/v0/payments", json={"amount": "25.00", "currency": "USD"} | extra)
    key = next(iter(extra))
    assert any(field == key or field.startswith(f"{key}.") for field in field_errors(response))


async def test_an_idempotency_key_of_255_is_fine(aclient: httpx.AsyncClient) -> None:
    assert (await create(aclient, idempotencyKey="k" * 255))["idempotencyKey"] == "k" * 255


async def test_get_of_another_merchants_or_unknown_payment_is_404(
    aclient: httpx.AsyncClient, other_aclient: httpx.AsyncClient
) -> None:
    theirs = (await other_aclient.post("/v0/payments", json={"amount": "25.00", "currency": "USD"})).json()
    for payment_id in (theirs["id"], "pay_unknown", "x" * 300):
        assert_error(await aclient.get(f"/v0/payments/{payment_id}"), 404, "not_found")


async def test_list_filters_and_pages(aclient: httpx.AsyncClient, f: Factory, engine: AsyncEngine) -> None:
    customer = await f.customer()
    a = await create(aclient, customerId=customer.id)
    b = await create(aclient)
    c = await create(aclient, customerId=customer.id)
    await f.update(await _row(engine, c["id"]), status="completed", completed_at=datetime.now(UTC))
    everything = (await aclient.get("/v0/payments")).json()
    assert everything["object"] == "list"
    assert [p["id"] for p in everything["data"]] == [c["id"], b["id"], a["id"]]  # newest first
    assert everything["pagination"] == {"limit": 10, "offset": 0, "total": 3, "hasMore": False}
    mine = (await aclient.get("/v0/payments", params={"customerId": customer.id})).json()
    assert [p["id"] for p in mine["data"]] == [c["id"], a["id"]]
    done = (await aclient.get("/v0/payments", params={"status": "completed"})).json()
    assert [(p["id"], p["status"]) for p in done["data"]] == [(c["id"], "completed")]
    page = (await aclient.get("/v0/payments", params={"limit": 1, "offset": 1})).json()
    assert [p["id"] for p in page["data"]] == [b["id"]]
    assert page["pagination"] == {"limit": 1, "offset": 1, "total": 3, "hasMore": True}
    nobody = (await aclient.get("/v0/payments", params={"customerId": "cus_nobody"})).json()
    assert nobody["data"] == [] and nobody["pagination"]["total"] == 0
    for params in ({"status": "paid"}, {"limit": 0}, {"limit": 101}, {"offset": -1}):
        assert_error(await aclient.get("/v0/payments", params=params), 400)


async def _row(engine: AsyncEngine, payment_id: str) -> Payment:
    from db.session import session_factory

    async with session_factory(engine)() as session:
        return await session.get_one(Payment, payment_id)


async def test_revenue_counts_payments_by_status(
    aclient: httpx.AsyncClient, f: Factory, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    """Completed payments count in netRevenue and the trend by completedAt; pending by createdAt, expired by
    when they expired; a currency, customer or subscription scope narrows them."""
    customer = await f.customer()
    rows = []
    for amount in ("100.00", "40.50", "7.25", "3.00", "9.99"):
        rows.append(await _row(engine, (await create(aclient, amount=amount, customerId=customer.id))["id"]))
    completed, completed2, expired, pending, late = rows
    await f.update(completed, status="completed", completed_at=MAR1 + timedelta(hours=3), created_at=MAR1)
    await f.update(
        completed2, status="completed", completed_at=MAR1 + timedelta(days=1, hours=1), created_at=MAR1
    )
    await f.update(
        expired, status="expired", expired_at=MAR1 + timedelta(hours=5), created_at=MAR1 - timedelta(days=30)
    )
    await f.update(pending, status="processing", created_at=MAR1 + timedelta(hours=1))
    await f.update(late, status="completed", completed_at=MAR1 + timedelta(days=3), created_at=MAR1)
    other_currency = await _row(engine, (await create(aclient, amount="50.00", currency="EUR"))["id"])
    await f.update(other_currency, status="completed", completed_at=MAR1 + timedelta(hours=2))
    params = {
        "merchantId": merchant.merchant_id,
        "startTime": MAR1.isoformat(),
        "endTime": (MAR1 + timedelta(days=2)).isoformat(),
    }
    got = (await aclient.get("/v0/revenue", params=params)).json()
    assert got["payments"] == {
        "completedCount": 2,
        "completedAmount": "140.50",
        "pendingCount": 1,
        "pendingAmount": "3.00",
        "expiredCount": 1,
        "expiredAmount": "7.25",
    }
    assert got["netRevenue"] == "140.50"
    assert [(b["timestamp"][:10], b["completedPayments"]) for b in got["trend"]] == [
        ("2026-03-01", "100.00"),
        ("2026-03-02", "40.50"),
    ]
    assert sum(Decimal(b["completedPayments"]) for b in got["trend"]) == Decimal(got["netRevenue"])
    by_customer = (await aclient.get("/v0/revenue", params=params | {"customerId": customer.id})).json()
    assert by_customer["payments"]["completedAmount"] == "140.50"
    nobody = await f.customer()
    by_other = (await aclient.get("/v0/revenue", params=params | {"customerId": nobody.id})).json()
    assert by_other["payments"]["completedCount"] == 0
    sub = await f.subscription(customer=customer)
    by_sub = (await aclient.get("/v0/revenue", params=params | {"subscriptionIds": [sub.id]})).json()
    assert by_sub["payments"]["completedCount"] == 0 and by_sub["netRevenue"] == "0.00"


async def test_the_webhook_catalog_example_has_the_payment_shape(aclient: httpx.AsyncClient) -> None:
    from domain.webhook_events import EVENT_TYPES

    got = await create(aclient)
    for name in ("payment.completed.v0", "payment.expired.v0"):
        example = EVENT_TYPES[name].example
        assert set(example) == set(got), name
        assert example["id"].startswith("pay_") and example["paymentUrl"].endswith(f"/pay/{example['id']}")


async def test_a_customer_with_payments_cannot_be_deleted(aclient: httpx.AsyncClient, f: Factory) -> None:
    customer = await f.customer()
    pay = await create(aclient, customerId=customer.id)
    body = assert_error(await aclient.delete(f"/v0/customers/{customer.id}"), 409, "conflict")
    assert body["details"]["blockers"] == [
        {"type": "payments", "count": 1, "items": [{"id": pay["id"], "status": "pending"}]}
    ]
    assert (await aclient.get(f"/v0/payments/{pay['id']}")).status_code == 200
    other = await f.customer()
    assert (await aclient.delete(f"/v0/customers/{other.id}")).status_code == 204
