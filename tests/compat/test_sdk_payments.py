"""SDK 0.1.34 `payments.*` against the real API: create (201, and the existing payment again for a repeated
idempotency key), get, list with filters, and every unhappy path as the SDK's typed errors (amount out of
range, wrong currency, foreign customer, bad expiresIn, savePaymentMethod without a customer, too many line
items, another merchant). SDK 0.6.3 (same operations; `pagination.limit/offset/total` required) in a
subprocess."""

from __future__ import annotations

import asyncio
import json
from asyncio.subprocess import PIPE
from datetime import UTC, datetime, timedelta

import pydantic
import pytest
from paygentic_sdk import Paygentic, errors
from paygentic_sdk.models import CreatePaymentLineItem
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from tests.factories import Factory
from tests.helpers import sdk063_python


@pytest.fixture
def f(engine: AsyncEngine, merchant: NewMerchant) -> Factory:
    return Factory(engine, merchant)


def _bad_request_on(exc: errors.BadRequest, field: str) -> str:
    data = exc.data
    assert isinstance(data, errors.ValidationErrorData), data
    assert data.error == "validation_error", data
    fields = {e.field: e.message for e in (data.errors or [])}
    assert any(k == field or k.startswith(f"{field}.") for k in fields), fields
    return next(m for k, m in fields.items() if k == field or k.startswith(f"{field}."))


async def test_payments_under_sdk_0_1_34(f: Factory, sdk: Paygentic, merchant: NewMerchant) -> None:
    customer = await f.customer()
    created = sdk.payments.create(
        amount="120.00",
        currency="USD",
        merchant_id=merchant.merchant_id,
        customer_id=customer.id,
        idempotency_key="order-77",
        reference="Order 77",
        metadata={"orderId": "77"},
        line_items=[
            CreatePaymentLineItem(description="Workshop", amount="100.00"),
            CreatePaymentLineItem(description="Materials", amount="10.00", quantity=2),
        ],
        success_redirect_url="https://shop.example/ok",
        failure_redirect_url="https://shop.example/no",
        save_payment_method=True,
        expires_in="P7D",
    )
    assert created.id.startswith("pay_") and created.object == "payment"
    assert (created.amount, created.currency, created.status) == ("120.00", "USD", "pending")
    assert created.payment_url is not None and created.payment_url.endswith(f"/pay/{created.id}")
    assert (created.customer_id, created.idempotency_key, created.reference) == (
        customer.id,
        "order-77",
        "Order 77",
    )
    assert created.metadata == {"orderId": "77"}
    assert created.line_items is not None
    assert [(i.description, i.amount, i.quantity) for i in created.line_items] == [
        ("Workshop", "100.00", 1),
        ("Materials", "10.00", 2),
    ]
    assert created.expires_at is not None
    assert abs(created.expires_at - created.created_at - timedelta(days=7)) < timedelta(seconds=2)

    # Idempotent replay: the SDK accepts the 200 and gets the same payment.
    again = sdk.payments.create(amount="999.00", currency="EUR", idempotency_key="order-77")
    assert again == created

    got = sdk.payments.get(id=created.id)
    assert got == created
    second = sdk.payments.create(amount="1.00", currency="GBP")
    assert (second.customer_id, second.line_items) == (None, None)
    assert second.expires_at is not None and second.expires_at > datetime.now(UTC)
    listed = sdk.payments.list()
    assert [p.id for p in listed.data] == [second.id, created.id]
    assert listed.pagination is not None and listed.pagination.total == 2
    mine = sdk.payments.list(request={"customer_id": customer.id, "status": "pending"})
    assert [p.id for p in mine.data] == [created.id]
    assert sdk.payments.list(request={"status": "completed"}).data == []
    page = sdk.payments.list(request={"limit": 1, "offset": 1, "merchant_id": merchant.merchant_id})
    assert [p.id for p in page.data] == [created.id]


@pytest.mark.parametrize("amount", ["0.99", "5000.01", "0", "12.345", "abc"])
def test_amount_out_of_range_is_bad_request(sdk: Paygentic, amount: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        sdk.payments.create(amount=amount, currency="USD")
    _bad_request_on(caught.value, "amount")


def test_wrong_currency_is_refused(sdk: Paygentic) -> None:
    # The SDK's own model refuses a currency outside its enum before sending; the server does too
    # (tests/api/test_payments_api.py sends it raw).
    with pytest.raises((errors.BadRequest, pydantic.ValidationError)):
        sdk.payments.create(amount="10.00", currency="JPY")  # type: ignore[arg-type]


async def test_foreign_customer_is_bad_request(
    sdk: Paygentic, engine: AsyncEngine, other_merchant: NewMerchant
) -> None:
    foreign = await Factory(engine, other_merchant).customer()
    for customer_id in (foreign.id, "cus_nobody"):
        with pytest.raises(errors.BadRequest) as caught:
            sdk.payments.create(amount="10.00", currency="USD", customer_id=customer_id)
        _bad_request_on(caught.value, "customerId")
    assert sdk.payments.list().data == []


def test_another_merchant_is_forbidden(sdk: Paygentic, other_merchant: NewMerchant) -> None:
    with pytest.raises(errors.Error) as caught:
        sdk.payments.create(amount="10.00", currency="USD", merchant_id=other_merchant.merchant_id)
    assert caught.value.data.error == "forbidden"
    with pytest.raises(errors.Error):
        sdk.payments.list(request={"merchant_id": other_merchant.merchant_id})


@pytest.mark.parametrize("expires_in", ["P32D", "P2M", "PT0S", "tomorrow", "P"])
def test_bad_expires_in_is_bad_request(sdk: Paygentic, expires_in: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        sdk.payments.create(amount="10.00", currency="USD", expires_in=expires_in)
    _bad_request_on(caught.value, "expiresIn")


def test_save_payment_method_without_customer_is_bad_request(sdk: Paygentic) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        sdk.payments.create(amount="10.00", currency="USD", save_payment_method=True)
    assert "customerId" in _bad_request_on(caught.value, "savePaymentMethod")


def test_line_items_too_many_or_not_adding_up_are_bad_requests(sdk: Paygentic) -> None:
    items = [CreatePaymentLineItem(description=f"item {n}", amount="0.01") for n in range(101)]
    with pytest.raises(errors.BadRequest) as caught:
        sdk.payments.create(amount="1.01", currency="USD", line_items=items)
    _bad_request_on(caught.value, "lineItems")
    with pytest.raises(errors.BadRequest) as caught:
        sdk.payments.create(
            amount="10.00", currency="USD", line_items=[CreatePaymentLineItem(description="a", amount="9.00")]
        )
    assert "add up" in _bad_request_on(caught.value, "lineItems")


def test_unknown_payment_is_an_error(sdk: Paygentic) -> None:
    with pytest.raises(errors.Error) as caught:
        sdk.payments.get(id="pay_doesnotexist")
    assert caught.value.data.error == "not_found"


DRIVER_063 = """
import json, sys
from paygentic_sdk import Paygentic, errors
url, key, customer_id = sys.argv[1:4]
with Paygentic(server_url=url, bearer_auth=key) as p:
    c = p.payments.create(amount="15.50", currency="AUD", customer_id=customer_id, idempotency_key="k63",
                          line_items=[{"description": "x", "amount": "15.50"}])
    again = p.payments.create(amount="15.50", currency="AUD", idempotency_key="k63")
    got = p.payments.get(id=c.id)
    listed = p.payments.list(request={"customer_id": customer_id})
    try:
        p.payments.create(amount="0.50", currency="USD")
        refused = None
    except errors.BadRequest as exc:
        refused = [e.field for e in exc.data.errors]
    print(json.dumps({
        "same": again.id == c.id == got.id, "status": got.status, "amount": got.amount,
        "listed": [x.id == c.id for x in listed.data], "total": listed.pagination.total, "refused": refused,
    }))
"""


async def test_payments_under_sdk_0_6_3(f: Factory, api_url: str, merchant: NewMerchant) -> None:
    customer = await f.customer()
    process = await asyncio.create_subprocess_exec(
        sdk063_python(), "-c", DRIVER_063, api_url, merchant.api_key, customer.id, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    got = json.loads(out.decode().strip().splitlines()[-1])
    assert got == {
        "same": True,
        "status": "pending",
        "amount": "15.50",
        "listed": [True],
        "total": 1,
        "refused": ["amount"],
    }
