"""`POST /v0/customers/{id}/topups` and `GET …/topups/{id}` (extension): the top-up invoice and its checkout,
and every request the API refuses. Paying it goes through the subscription's workflow:
tests/workflows/test_funding_topups.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db import ledger as ledger_db
from db.merchants import NewMerchant
from db.models import Invoice, LineItem, PaymentSession
from db.session import session_factory
from tests.factories import Factory
from tests.helpers import assert_error


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


@pytest.fixture
def factory(engine: AsyncEngine, merchant: NewMerchant) -> Factory:
    return Factory(engine, merchant)


def refused(response: httpx.Response, status: int, says: str) -> None:
    body = assert_error(response, status)
    assert says in body["message"], body


async def rows(engine: AsyncEngine, invoice_id: str) -> tuple[Invoice, list[LineItem], PaymentSession]:
    async with session_factory(engine)() as session:
        invoice = await session.get_one(Invoice, invoice_id)
        lines = list(await session.scalars(select(LineItem).where(LineItem.invoice_id == invoice_id)))
        assert invoice.payment_session_id is not None
        payment = await session.get_one(PaymentSession, invoice.payment_session_id)
        return invoice, lines, payment


async def test_create_writes_an_issued_top_up_invoice_with_a_checkout(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine
) -> None:
    customer = await factory.customer()
    sub = await factory.subscription(customer=customer, redirect_urls={"onSuccess": "https://app.example/s"})
    response = await aclient.post(f"/v0/customers/{customer.id}/topups", json={"amount": "25.00"})
    assert response.status_code == 201, response.text
    topup = response.json()
    assert topup["object"] == "walletTopup" and topup["id"] == topup["invoiceId"]
    assert topup["id"].startswith("inv_")
    assert {k: topup[k] for k in ("customerId", "subscriptionId", "amount", "currency", "status")} == {
        "customerId": customer.id,
        "subscriptionId": sub.id,
        "amount": "25.00",
        "currency": "USD",
        "status": "open",
    }
    assert topup["checkoutUrl"].endswith(f"/checkout/{topup['paymentSessionId']}")
    assert topup["completedAt"] is None

    invoice, lines, payment = await rows(engine, topup["id"])
    assert (invoice.sequence_number, invoice.status, invoice.grand_total) == (-1, "ISSUED", Decimal("25.00"))
    assert invoice.invoice_number is not None and invoice.invoice_number.endswith("-T001")
    assert [(li.type, li.display_name, li.total, li.tax_total) for li in lines] == [
        ("fee", "Wallet top-up", Decimal("25.00"), Decimal("0.00"))
    ]
    assert lines[0].idempotency_key == f"topup:{invoice.id}"
    assert (payment.status, payment.amount, payment.redirect_urls) == (
        "open",
        Decimal("25.00"),
        {"onSuccess": "https://app.example/s"},
    )
    # A second one is numbered after it; its own redirects win over the subscription's.
    second = await aclient.post(
        f"/v0/customers/{customer.id}/topups",
        json={
            "amount": "5",
            "currency": "usd",
            "subscriptionId": sub.id,
            "redirectUrls": {"onSuccess": "https://app.example/topped-up"},
        },
    )
    assert second.status_code == 201, second.text
    invoice2, _, payment2 = await rows(engine, second.json()["id"])
    assert (invoice2.sequence_number, second.json()["amount"]) == (-2, "5.00")
    assert payment2.redirect_urls == {"onSuccess": "https://app.example/topped-up"}
    # The invoice is an invoice like any other (GET /v2/invoices), and the top-up reads back.
    got = await aclient.get(f"/v0/customers/{customer.id}/topups/{topup['id']}")
    assert got.status_code == 200 and got.json() == topup
    shown = await aclient.get(f"/v2/invoices/{topup['id']}")
    assert shown.status_code == 200 and shown.json()["grandTotal"] == "25.00"
    assert shown.json()["paymentUrl"] == topup["checkoutUrl"]
    # Nothing is credited before it is paid.
    async with session_factory(engine)() as session:
        assert await ledger_db.balances(session, customer.merchant_id, "sandbox", customer.id) == {}
        assert await ledger_db.audit(session, customer.merchant_id) == []


BAD_AMOUNTS: list[tuple[Any, str]] = [
    ("0", "between"),
    ("0.99", "between"),
    ("5000.01", "between"),
    ("-5.00", "between"),
    ("10.001", "decimal places"),
    ("ten", "decimal"),
    ("1e3", "decimal"),
    (10, "string"),
    (None, ""),
]


@pytest.mark.parametrize(("amount", "says"), BAD_AMOUNTS)
async def test_bad_amounts_are_400(
    aclient: httpx.AsyncClient, factory: Factory, amount: Any, says: str
) -> None:
    customer = await factory.customer()
    await factory.subscription(customer=customer)
    body = {} if amount is None else {"amount": amount}
    response = await aclient.post(f"/v0/customers/{customer.id}/topups", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] == "validation_error" and error["errors"][0]["field"] == "amount"
    assert says in error["errors"][0]["message"]


async def test_unhappy_paths(
    aclient: httpx.AsyncClient, other_aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine
) -> None:
    customer = await factory.customer()
    sub = await factory.subscription(customer=customer)
    path = f"/v0/customers/{customer.id}/topups"

    wrong_currency = await aclient.post(path, json={"amount": "5.00", "currency": "EUR"})
    assert wrong_currency.status_code == 400 and wrong_currency.json()["errors"][0]["field"] == "currency"
    bad_currency = await aclient.post(path, json={"amount": "5.00", "currency": "dollars"})
    assert bad_currency.status_code == 400
    # Unknown customer, and another merchant's customer: 404 alike.
    unknown = await aclient.post("/v0/customers/cus_doesnotexist/topups", json={"amount": "5.00"})
    refused(unknown, 404, "cus_doesnotexist")
    foreign = await other_aclient.post(path, json={"amount": "5.00"})
    refused(foreign, 404, customer.id)
    assert (await other_aclient.get(f"{path}/inv_x")).status_code == 404
    # Another customer's subscription, an unknown one.
    stranger = await factory.subscription(customer=await factory.customer())
    theirs = await aclient.post(path, json={"amount": "5.00", "subscriptionId": stranger.id})
    assert theirs.status_code == 400 and theirs.json()["errors"][0]["field"] == "subscriptionId"
    missing = await aclient.post(path, json={"amount": "5.00", "subscriptionId": "sub_nope"})
    refused(missing, 404, "sub_nope")
    # Two live subscriptions: which one is ambiguous.
    await factory.subscription(customer=customer, plan=await factory.plan(name="Other"))
    ambiguous = await aclient.post(path, json={"amount": "5.00"})
    assert ambiguous.status_code == 400 and ambiguous.json()["errors"][0]["field"] == "subscriptionId"
    assert (await aclient.post(path, json={"amount": "5.00", "subscriptionId": sub.id})).status_code == 201

    # No subscription at all, one still waiting for Invoice 0, one terminated.
    lonely = await factory.customer()
    none = await aclient.post(f"/v0/customers/{lonely.id}/topups", json={"amount": "5.00"})
    refused(none, 409, "no active subscription")
    waiting = await factory.customer()
    await factory.subscription(customer=waiting, status="pending_payment")
    pending = await aclient.post(f"/v0/customers/{waiting.id}/topups", json={"amount": "5.00"})
    refused(pending, 409, "pending_payment")
    gone = await factory.customer()
    ended = await factory.subscription(customer=gone, status="terminated")
    terminated = await aclient.post(
        f"/v0/customers/{gone.id}/topups", json={"amount": "5.00", "subscriptionId": ended.id}
    )
    refused(terminated, 409, "terminated")
    # A top-up id that is no top-up (Invoice 0, a period invoice) or not this customer's.
    period = await factory.invoice(sub, sequence_number=1)
    assert (await aclient.get(f"{path}/{period.id}")).status_code == 404
    assert (await aclient.get(f"{path}/inv_unknown")).status_code == 404
    async with session_factory(engine)() as session:
        assert await ledger_db.audit(session, customer.merchant_id) == []


async def test_concurrent_top_ups_get_their_own_numbers(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine
) -> None:
    customer = await factory.customer()
    sub = await factory.subscription(customer=customer)
    responses = await asyncio.gather(
        *(
            aclient.post(f"/v0/customers/{customer.id}/topups", json={"amount": f"{n}.00"})
            for n in range(1, 6)
        )
    )
    assert [r.status_code for r in responses] == [201] * 5, [r.text for r in responses]
    async with session_factory(engine)() as session:
        numbers = sorted(
            await session.scalars(select(Invoice.sequence_number).where(Invoice.subscription_id == sub.id))
        )
    assert numbers == [-5, -4, -3, -2, -1]
