"""Subscriptions API with its workflow running (billing_harness: the API in-process over ASGI, the real
worker on the time-skipping server): the create response per the contract, idempotent creates, the 503
healing path, termination, available plans, and what SDK 0.1.34 and 0.6.3 parse."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import httpx
import pytest
from paygentic_sdk import Paygentic, errors
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api import subscription_create
from db.merchants import NewMerchant
from db.models import Invoice, PaymentSession, Subscription
from db.session import session_factory
from settings import Settings
from tests.api.test_subscriptions import REQUIRED_0134, REQUIRED_063
from tests.helpers import assert_error, sdk063_python
from tests.workflows.billing_harness import GRACE, Billing, billing_stack
from tests.workflows.conftest import time_skipping_server
from worker import build_worker

JAN31 = datetime(2026, 1, 31, tzinfo=UTC)


@pytest.fixture(scope="module")
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    """A server of this module's own: these tests leave subscriptions mid catch-up and tasks without a
    worker behind, which would stop time skipping for later tests on a shared server."""
    async for env in time_skipping_server():
        yield env


@pytest.fixture
async def sdk(billing: Billing) -> AsyncIterator[Paygentic]:
    """SDK 0.1.34 on the in-process API: its async methods over the ASGI transport."""
    transport = httpx.ASGITransport(app=billing.app)
    async with httpx.AsyncClient(transport=transport, timeout=30) as http:
        yield Paygentic(
            server_url="http://accrue.test", bearer_auth=billing.merchant.api_key, async_client=http
        )


async def fee_plan(billing: Billing, amount: str = "49.00", **plan: Any) -> str:
    """A plan with one in-advance monthly fee (so Invoice 0 has something to collect) and a metered price."""
    product = await billing.product()
    fee = await billing.fee(product)
    metric = await billing.metric(product, f"tokens.{uuid4().hex[:6]}")
    prices = [
        await billing.price(
            feeId=fee, paymentTerm="in_advance", billingCadence="P1M", invoiceDisplayName="Platform fee",
            properties={"unitPrice": amount},
        ),
        await billing.price(
            billableMetricId=metric, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Tokens",
            properties={"unitPrice": "0.001"},
        ),
    ]  # fmt: skip
    return await billing.plan(product, prices, **plan)


async def metered_plan(billing: Billing, product: str | None = None, **plan: Any) -> str:
    """A plan with only an in-arrears price: Invoice 0 is zero and the subscription is active at once."""
    product = product or await billing.product()
    metric = await billing.metric(product, f"calls.{uuid4().hex[:6]}", aggregation="COUNT", unit="calls")
    price = await billing.price(
        billableMetricId=metric, model="standard", paymentTerm="in_arrears", invoiceDisplayName="Calls",
        properties={"unitPrice": "0.50"},
    )  # fmt: skip
    return await billing.plan(product, [price], **plan)


async def payment_session(billing: Billing, session_id: str) -> PaymentSession:
    async with session_factory(billing.engine)() as session:
        return await session.get_one(PaymentSession, session_id)


async def subscriptions_of(billing: Billing, plan_id: str) -> list[Subscription]:
    async with session_factory(billing.engine)() as session:
        return list(await session.scalars(select(Subscription).where(Subscription.plan_id == plan_id)))


# ---- create ---------------------------------------------------------------------------------------------


async def test_create_with_every_field_then_duplicate_is_200_with_the_same_subscription(
    billing: Billing,
) -> None:
    plan = await fee_plan(billing, defaultTaxRate=8.5)
    customer = await billing.customer()
    clock = await billing.clock(JAN31 + timedelta(hours=3))
    body = {
        "name": "Acme - LLM API",
        "planId": plan,
        "customerId": customer,
        "startedAt": "2026-01-31T02:45:10Z",
        "endingAt": "2027-01-31T00:00:00Z",
        "autoCharge": True,
        "taxExempt": False,
        "minimumAccountBalance": "20.5",
        "redirectUrls": {"onSuccess": "https://app.example/ok", "onFailure": "http://app.example/failed?x=1"},
        "sessionExpiryMinutes": 30,
        "testClockId": clock,
        "renewalReminderEnabled": False,
        "renewalReminderDays": 7,
    }
    response = await billing.http.post("/v0/subscriptions", json=body)
    assert response.status_code == 201, response.text
    sub = response.json()
    assert REQUIRED_0134 | REQUIRED_063 <= set(sub)
    assert sub["id"].startswith("sub_") and sub["object"] == "subscription"
    assert {k: sub[k] for k in ("merchantId", "customerId", "planId", "name", "status", "testClockId")} == {
        "merchantId": billing.merchant.merchant_id,
        "customerId": customer,
        "planId": plan,
        "name": "Acme - LLM API",
        "status": "pending_payment",
        "testClockId": clock,
    }
    assert (sub["startedAt"], sub["endingAt"]) == ("2026-01-31T02:45:10.000Z", "2027-01-31T00:00:00.000Z")
    # Periods are anchored on startedAt truncated to the hour (D9).
    assert sub["billingAnchor"] == sub["billingStartsAt"] == "2026-01-31T02:00:00.000Z"
    assert (sub["billingCadence"], sub["versionPolicy"], sub["elapsedPeriodBilling"]) == (
        "P1M",
        "floating",
        "none",
    )
    assert sub["paymentTermDays"] == 0
    assert (sub["autoCharge"], sub["taxExempt"], sub["estimatedTaxRate"]) == (True, False, 8.5)
    # Request in decimal dollars, response in nanodollars (contract §2.8).
    assert sub["minimumAccountBalance"] == sub["prefundAmount"] == "20500000000"
    assert (sub["renewalReminderEnabled"], sub["renewalReminderDays"]) == (False, 7)
    assert sub["terminatedAt"] is None and sub["terminatedBy"] is None and sub["terminationReason"] is None
    payment = sub["payment"]
    assert payment["status"] == "pending" and payment["invoiceId"].startswith("inv")
    assert payment["breakdown"]["upfrontCharges"] == "53.17"  # $49.00 plus the plan's 8.5% tax
    upfront, wallet = (float(payment["breakdown"][k]) for k in ("upfrontCharges", "walletCharge"))
    assert float(payment["amount"]) == upfront + wallet
    assert payment["checkoutUrl"].endswith(f"/checkout/{payment['paymentSessionId']}")

    # The checkout session carries the redirects and expires sessionExpiryMinutes after the clock's now.
    session = await payment_session(billing, payment["paymentSessionId"])
    assert session.redirect_urls == body["redirectUrls"]
    assert session.expires_at == JAN31 + timedelta(hours=3, minutes=30)

    again = await billing.http.post("/v0/subscriptions", json=body | {"name": "renamed"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == sub["id"] and again.json()["payment"] == payment
    assert again.json()["name"] == "Acme - LLM API"
    assert [s.id for s in await subscriptions_of(billing, plan)] == [sub["id"]]
    assert await billing.get(f"/v0/subscriptions/{sub['id']}") == sub


async def test_concurrent_duplicate_creates_give_one_subscription(billing: Billing) -> None:
    plan = await fee_plan(billing)
    customer = await billing.customer()
    body = {"name": "Acme", "planId": plan, "customerId": customer, "startedAt": JAN31.isoformat()}
    responses = await asyncio.gather(*(billing.http.post("/v0/subscriptions", json=body) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(await subscriptions_of(billing, plan)) == 1


async def test_zero_invoice0_is_paid_and_active_at_once(billing: Billing) -> None:
    plan = await metered_plan(billing)
    sub = await billing.subscribe(plan, await billing.customer(), JAN31, taxExempt=True)
    assert sub["status"] == "active"
    assert sub["payment"]["status"] == "paid" and sub["payment"]["amount"] == "0.00"
    assert sub["payment"]["invoiceId"].startswith("inv")
    assert (sub["taxExempt"], sub["estimatedTaxRate"], sub["autoCharge"]) == (True, 0.0, False)
    assert sub["minimumAccountBalance"] is None and sub["testClockId"] is None and sub["endingAt"] is None
    assert sub["renewalReminderEnabled"] is None and sub["renewalReminderDays"] is None


async def test_inline_customer_is_created_then_reused_by_email(billing: Billing) -> None:
    plan = await fee_plan(billing)
    email = f"jane+{uuid4().hex[:6]}@acme.example"
    body: dict[str, Any] = {
        "name": "Jane - API access",
        "planId": plan,
        "startedAt": JAN31.isoformat(),
        "customer": {
            "name": "Jane Doe",
            "email": email,
            "phone": "+1 512 555 0100",
            "address": {"country": "US", "zipCode": "78701", "state": "TX", "city": "Austin"},
            "taxRates": {"default": 13},
        },
    }
    first = await billing.post("/v0/subscriptions", body, 201)
    customer = await billing.get(f"/v0/customers/{first['customerId']}")
    assert customer["id"] == first["customerId"]
    assert first["estimatedTaxRate"] == 13.0  # the customer's default rate beats the plan's 0

    again = await billing.post(
        "/v0/subscriptions", body | {"customer": body["customer"] | {"name": "J."}}, 200
    )
    assert (again["id"], again["customerId"]) == (first["id"], first["customerId"])
    by_email = await billing.post(
        "/v0/subscriptions", body | {"planId": await fee_plan(billing), "customer": body["customer"]}, 201
    )
    assert by_email["customerId"] == first["customerId"] and by_email["id"] != first["id"]


async def test_terminated_subscription_does_not_block_a_new_one(billing: Billing) -> None:
    plan = await metered_plan(billing)
    customer = await billing.customer()
    first = await billing.subscribe(plan, customer, JAN31)
    await billing.post(f"/v0/subscriptions/{first['id']}/termination", {"reason": "Moving plans"}, 200)
    second = await billing.subscribe(plan, customer, JAN31)
    assert second["id"] != first["id"] and second["status"] == "active"


async def test_503_create_heals_when_the_same_request_is_repeated(
    billing: Billing, api_url: str, merchant: NewMerchant
) -> None:
    """The uvicorn API of tests/conftest.py cannot reach Temporal: it stores the subscription and answers
    503. The same request to an API that can reach Temporal answers 200 with that subscription and starts
    its workflow, which then runs the subscription as usual."""
    plan = await fee_plan(billing)
    customer = await billing.customer()
    body = {"name": "Acme", "planId": plan, "customerId": customer, "startedAt": JAN31.isoformat()}
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as without_temporal:
        failed = assert_error(await without_temporal.post("/v0/subscriptions", json=body), 503)
    [stored] = await subscriptions_of(billing, plan)
    assert stored.id in failed["message"] and "repeat the same request" in failed["message"]
    with pytest.raises(Exception, match="not found"):
        await billing.handle(stored.id).describe()

    healed = await billing.post("/v0/subscriptions", body, 200)
    assert healed["id"] == stored.id and healed["status"] == "pending_payment"
    assert (await billing.handle(stored.id).describe()).status == WorkflowExecutionStatus.RUNNING
    await billing.activate(healed)


async def test_terminating_a_subscription_whose_workflow_never_started(
    billing: Billing, api_url: str, merchant: NewMerchant
) -> None:
    plan = await fee_plan(billing)
    body = {
        "name": "Acme",
        "planId": plan,
        "customerId": await billing.customer(),
        "startedAt": JAN31.isoformat(),
    }
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as without_temporal:
        assert_error(await without_temporal.post("/v0/subscriptions", json=body), 503)
    [stored] = await subscriptions_of(billing, plan)
    done = await billing.post(f"/v0/subscriptions/{stored.id}/termination", {"reason": "Never paid"}, 200)
    assert (done["status"], done["terminatedBy"], done["payment"]) == (
        "terminated",
        merchant.merchant_id,
        None,
    )
    assert [i.status for i in await billing.invoices(stored.id)] == ["CANCELLED"]


# ---- termination ----------------------------------------------------------------------------------------


async def test_termination_takes_a_reason_of_up_to_1000_characters_and_twice_is_409(billing: Billing) -> None:
    plan = await metered_plan(billing)
    sub = await billing.subscribe(plan, await billing.customer(), JAN31)
    path = f"/v0/subscriptions/{sub['id']}/termination"
    assert_error(await billing.http.post(path, json={"reason": "x" * 1001}), 400, "validation_error")
    reason = "r" * 1000
    done = await billing.post(path, {"reason": f"  {reason}  "}, 200)
    assert (done["status"], done["terminationReason"], done["terminatedBy"]) == (
        "terminated",
        reason,
        billing.merchant.merchant_id,
    )
    assert done["terminatedAt"] is not None and REQUIRED_0134 | REQUIRED_063 <= set(done)
    again = await billing.http.post(path, json={"reason": "again"})
    assert "already terminated" in assert_error(again, 409, "conflict")["message"]
    assert (await billing.get(f"/v0/subscriptions/{sub['id']}"))["terminationReason"] == reason


# ---- list and available plans ---------------------------------------------------------------------------


async def test_list_and_available_plans_follow_created_subscriptions(billing: Billing) -> None:
    product = await billing.product()
    pro = await metered_plan(billing, product, name="Pro")
    basic = await metered_plan(billing, product, name="Basic")
    other = await fee_plan(billing, name="Other")
    customer = await billing.customer()

    async def available() -> list[str]:
        listed = await billing.get("/v0/plans/available", customerId=customer)
        return sorted(p["id"] for p in listed["data"])

    assert await available() == sorted([pro, basic, other])
    active = await billing.subscribe(pro, customer, JAN31)
    assert await available() == [other]  # every plan of the subscribed product is gone
    pending = await billing.subscribe(other, customer, JAN31)
    assert pending["status"] == "pending_payment" and await available() == []
    await billing.post(f"/v0/subscriptions/{active['id']}/termination", {"reason": "done"}, 200)
    assert await available() == sorted([pro, basic])

    listed = await billing.get("/v0/subscriptions", customerId=customer, include="customer")
    assert sorted(s["id"] for s in listed["data"]) == sorted([active["id"], pending["id"]])
    assert all(s["customer"]["id"] == customer for s in listed["data"])
    statuses = await billing.get("/v0/subscriptions", customerId=customer, status="terminated")
    assert [s["id"] for s in statuses["data"]] == [active["id"]]


# ---- SDKs -----------------------------------------------------------------------------------------------


async def test_sdk_0134_create_get_list_terminate_and_available_plans(
    billing: Billing, sdk: Paygentic
) -> None:
    plan = await fee_plan(billing)
    spare = await metered_plan(billing)
    email = f"sdk+{uuid4().hex[:6]}@acme.example"
    created = await sdk.subscriptions.create_async(
        name="Jane - API access",
        plan_id=plan,
        started_at=JAN31,
        customer={"name": "Jane", "email": email, "address": {"country": "DE", "zip_code": "10115"}},
        minimum_account_balance="20.00",
        redirect_urls={"on_success": "https://app.example/ok", "on_failure": "https://app.example/no"},
        session_expiry_minutes=45,
        renewal_reminder_enabled=True,
        renewal_reminder_days=3,
    )
    assert created.object == "subscription" and created.status == "pending_payment"
    assert created.minimum_account_balance == "20000000000"
    assert created.payment is not None and created.payment.status == "pending"
    assert created.payment.checkout_url.endswith(created.payment.payment_session_id)

    got = await sdk.subscriptions.get_async(id=created.id)
    assert (got.id, got.customer_id, got.plan_id) == (created.id, created.customer_id, plan)
    listed = await sdk.subscriptions.list_async(
        request={"customer_id": created.customer_id, "status": "pending_payment", "include": "customer"}
    )
    assert listed.data is not None and [s.id for s in listed.data] == [created.id]
    embedded = listed.data[0].customer
    assert embedded is not None and embedded.consumer is not None and embedded.consumer.email == email
    available = await sdk.plans.list_available_async(customer_id=created.customer_id)
    assert available.data is not None and [p.id for p in available.data] == [spare]

    done = await sdk.subscriptions.terminate_async(id=created.id, reason="Customer asked")
    assert (done.status, done.termination_reason) == ("terminated", "Customer asked")
    with pytest.raises(errors.Error) as caught:
        await sdk.subscriptions.terminate_async(id=created.id, reason="again")
    assert caught.value.status_code == 409
    with pytest.raises(errors.Error) as missing:
        await sdk.subscriptions.get_async(id="sub_doesnotexist")
    assert missing.value.status_code == 404


SDK063 = """
import json, sys
from paygentic_sdk import Paygentic
url, key, customer_id, *ids = sys.argv[1:]
out = {}
with Paygentic(server_url=url, bearer_auth=key) as p:
    for sub_id in ids:
        try:
            out[sub_id] = p.subscriptions.get(id=sub_id).model_dump(mode="json", by_alias=True)
        except Exception as exc:
            out[sub_id] = f"{type(exc).__name__}: {exc}"
    try:
        listed = p.subscriptions.list(
            request={"customer_id": customer_id, "status": ["active", "pending_payment", "terminated"],
                     "include": "customer"}
        )
        out["list"] = listed.model_dump(mode="json", by_alias=True)
    except Exception as exc:
        out["list"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


async def test_sdk_063_parses_get_and_list(billing: Billing, api_url: str) -> None:
    customer = await billing.customer()
    pending = await billing.subscribe(await fee_plan(billing), customer, JAN31)
    active = await billing.subscribe(await metered_plan(billing), customer, JAN31)
    ended = await billing.subscribe(await metered_plan(billing), customer, JAN31)
    await billing.post(f"/v0/subscriptions/{ended['id']}/termination", {"reason": "done"}, 200)
    ids = [pending["id"], active["id"], ended["id"]]
    run = await asyncio.to_thread(
        subprocess.run,
        [sdk063_python(), "-c", SDK063, api_url, billing.merchant.api_key, customer, *ids],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(isinstance(v, dict) for v in out.values()), out
    assert [out[i]["status"] for i in ids] == ["pending_payment", "active", "terminated"]
    assert out[pending["id"]]["billingCadence"] == "P1M"
    assert out[pending["id"]]["merchantId"] == billing.merchant.merchant_id
    assert sorted(s["id"] for s in out["list"]["data"]) == sorted(ids)
    assert out["list"]["pagination"]["total"] == 3


async def test_invoice0_of_a_created_subscription_is_stored_as_issued(billing: Billing) -> None:
    sub = await billing.subscribe(await fee_plan(billing, "12.34"), await billing.customer(), JAN31)
    async with session_factory(billing.engine)() as session:
        invoice = await session.get_one(Invoice, sub["payment"]["invoiceId"])
    assert (invoice.sequence_number, invoice.status, invoice.grand_total) == (0, "ISSUED", Decimal("12.34"))
    assert invoice.payment_session_id == sub["payment"]["paymentSessionId"]


# ---- test clocks ----------------------------------------------------------------------------------------


@pytest.fixture
async def idle_billing(
    workflow_env: WorkflowEnvironment, engine: AsyncEngine, settings: Settings, merchant: NewMerchant
) -> AsyncIterator[Billing]:
    """The stack without a worker: workflows start but never run a task."""
    async for stack in billing_stack(workflow_env, engine, settings, merchant, with_worker=False):
        yield stack


async def test_a_create_its_workflow_cannot_finish_is_503_and_a_repeat_finishes_it(
    idle_billing: Billing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API only stores the row and starts the workflow; without a worker Invoice 0 is not written, the
    create says so, and the same request repeated once a worker runs answers with the one subscription."""
    plan = await fee_plan(idle_billing, "12.34")
    customer = await idle_billing.customer()
    monkeypatch.setattr(subscription_create, "CREATE_TIMEOUT_SECONDS", 1.0)
    body = {"name": "Acme - Pro", "planId": plan, "customerId": customer, "startedAt": JAN31.isoformat()}
    response = await idle_billing.http.post("/v0/subscriptions", json=body)
    message = assert_error(response, 503, "service_unavailable")["message"]
    assert "repeat the same request" in message
    async with build_worker(idle_billing.env.client, idle_billing.engine, idle_billing.task_queue, GRACE):
        again = await idle_billing.post("/v0/subscriptions", body, 200)
    assert again["id"] in message
    assert (again["status"], again["payment"]["amount"]) == ("pending_payment", "12.34")
    invoices = await idle_billing.invoices(again["id"])
    assert [(i.sequence_number, i.status) for i in invoices] == [(0, "ISSUED")]


async def test_outbox_payloads_are_what_the_api_shows(billing: Billing) -> None:
    """The outbox renders an invoice with the API's representation: amounts formatted as GET formats them,
    not the stored NUMERIC(38, 9) ("5.000000000")."""
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(
        await fee_plan(billing, "5"), await billing.customer(), JAN31, testClockId=clock
    )
    await billing.activate(sub)
    [issued] = [
        p for p in await billing.outbox("invoice.issued.v0") if p["id"] == sub["payment"]["invoiceId"]
    ]
    [paid] = [p for p in await billing.outbox("invoice.paid.v0") if p["id"] == sub["payment"]["invoiceId"]]
    shown = await billing.get(f"/v2/invoices/{paid['id']}")
    assert (issued["status"], issued["grandTotal"], issued["unpaidAmount"]) == ("ISSUED", "5.00", "5.00")
    assert (paid["status"], paid["grandTotal"], paid["paidAmount"]) == ("PAID", "5.00", "5.00")
    assert paid == shown


async def test_subscription_outbox_payloads_are_what_the_api_shows(billing: Billing) -> None:
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(
        await metered_plan(billing), await billing.customer(), JAN31, testClockId=clock
    )
    [created] = [p for p in await billing.outbox("subscription.created.v0") if p["id"] == sub["id"]]
    assert created == sub  # active at once (Invoice 0 is zero), its payment paid
    await billing.post(f"/v0/subscriptions/{sub['id']}/termination", {"reason": "Done"}, 200)
    [cancelled] = [p for p in await billing.outbox("subscription.cancelled.v0") if p["id"] == sub["id"]]
    assert cancelled == await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert cancelled["status"] == "terminated" and cancelled["terminationReason"] == "Done"
