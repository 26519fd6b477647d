"""Webhooks end to end on `accrue dev` with a real HTTP receiver (tests/webhook_receiver.py, verifying every
request with the svix and standardwebhooks libraries): enable webhooks and create an endpoint through the
API, create a customer and a subscription on a test clock, pay Invoice 0 through the sandbox checkout and
advance the clock past a period. The receiver gets `customer.created.v0`, `subscription.created.v0`,
`invoice.paid.v0`, `subscription.activated.v0` and the period's `invoice.issued.v0`, each signed, each
`data` what GET showed for the resource right after the change, and a subscription's messages in order."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx

from domain.ids import has_prefix
from tests.e2e.test_dev_stack import Ready
from tests.e2e.test_quickstart import dev_stack, one_month_later, wait_for  # noqa: F401  (a fixture)
from tests.webhook_receiver import Received, WebhookReceiver

GRACE = timedelta(hours=24)  # the dev stack's default invoice grace period


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def messages(receiver: WebhookReceiver, event_type: str, resource_id: str) -> list[Received]:
    return [
        r
        for r in receiver.delivered("/hook")
        if r.payload["eventType"] == event_type and r.payload["data"].get("id") == resource_id
    ]


def test_a_subscriptions_lifecycle_reaches_a_verifying_receiver(dev_stack: tuple[str, Ready]) -> None:  # noqa: F811
    base, ready = dev_stack
    m = ready.merchant_id
    with (
        WebhookReceiver() as receiver,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {ready.api_key}"}, timeout=120
        ) as http,
    ):
        # Webhooks on, one endpoint at the receiver, verified with the endpoint's own secret.
        ok(http.post("/v0/webhooks", json={}), 201)
        endpoint = ok(http.post("/v0/webhooks/endpoints", json={"url": receiver.url("/hook")}), 201)
        assert has_prefix(endpoint["id"], "webhook_endpoint")
        secret = ok(http.get(f"/v0/webhooks/endpoints/{endpoint['id']}/secret"))["key"]
        assert secret.startswith("whsec_")
        receiver.configure("/hook", secrets=[secret])

        # A plan with a $49 monthly fee in advance, so Invoice 0 has a checkout to pay.
        product = ok(
            http.post("/v0/products", json={"merchantId": m, "name": "Hooks", "description": "d"}), 201
        )
        fee = ok(
            http.post(
                "/v0/fees",
                json={"merchantId": m, "productId": product["id"], "name": "Platform", "description": "d"},
            ),
            201,
        )
        price = ok(
            http.post(
                "/v0/prices",
                json={
                    "feeId": fee["id"], "model": "standard", "paymentTerm": "in_advance",
                    "billingCadence": "P1M", "invoiceDisplayName": "Platform fee",
                    "properties": {"unitPrice": "49.00"},
                },
            ),
            201,
        )  # fmt: skip
        plan = ok(
            http.post(
                "/v0/plans",
                json={
                    "merchantId": m, "productId": product["id"], "name": "Pro", "currency": "USD",
                    "prices": [price["id"]], "billingVersion": 1, "billingCadence": "P1M",
                },
            ),
            201,
        )  # fmt: skip
        email = f"billing+{uuid4().hex[:8]}@acme.example"
        consumer = {
            "name": "Acme",
            "email": email,
            "address": {"country": "US", "state": "TX", "zipCode": "78701"},
        }
        customer_id = ok(http.post("/v0/customers", json={"merchantId": m, "consumer": consumer}), 201)[
            "customerId"
        ]
        customer = ok(http.get(f"/v0/customers/{customer_id}"))

        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        clock = ok(http.post("/v0/testClocks", json={"currentTime": start.isoformat(), "name": "hooks"}), 201)
        created = ok(
            http.post(
                "/v0/subscriptions",
                json={
                    "name": "Acme - Pro", "planId": plan["id"], "customerId": customer_id,
                    "startedAt": start.isoformat(), "testClockId": clock["id"],
                },
            ),
            201,
        )  # fmt: skip
        sub_id, invoice0_id = created["id"], created["payment"]["invoiceId"]
        assert created["status"] == "pending_payment"

        # Pay Invoice 0 as the sandbox checkout page's button does.
        ok(http.post(f"/v0/paymentSessions/{created['payment']['paymentSessionId']}/complete"))
        assert wait_for(lambda: ok(http.get(f"/v0/subscriptions/{sub_id}"))["status"] == "active")
        active = ok(http.get(f"/v0/subscriptions/{sub_id}"))
        invoice0 = ok(http.get(f"/v2/invoices/{invoice0_id}"))

        # Past the first period and its grace window: period 1's invoice is ISSUED.
        past = one_month_later(start) + GRACE + timedelta(hours=1)
        ok(http.patch(f"/v0/testClocks/{clock['id']}", json={"currentTime": past.isoformat()}))
        invoices = ok(http.get("/v2/invoices", params={"subscriptionId": sub_id, "limit": 10}))["data"]
        [period1] = [i for i in invoices if i["sequenceNumber"] == 1]
        assert period1["status"] == "ISSUED"

        def arrived() -> bool:
            return bool(messages(receiver, "invoice.issued.v0", period1["id"])) and bool(
                messages(receiver, "subscription.activated.v0", sub_id)
            )

        started = time.monotonic()
        while not arrived() and time.monotonic() - started < 60:
            time.sleep(0.1)
        assert arrived(), [(r.payload["eventType"], r.payload["data"].get("id")) for r in receiver.received()]

    # Every request verified by both libraries; svix-id is the message id; no message delivered twice.
    assert receiver.received("/hook") and all(r.verified for r in receiver.received("/hook"))
    assert receiver.duplicates("/hook") == {}
    for r in receiver.delivered("/hook"):
        assert has_prefix(r.svix_id, "outbox_event") and has_prefix(r.payload["eventId"], "event")
        assert set(r.payload) == {"eventType", "eventId", "timestamp", "data"}

    def data(event_type: str, resource_id: str) -> dict[str, Any]:
        [message] = messages(receiver, event_type, resource_id)
        payload: dict[str, Any] = message.payload["data"]
        return payload

    assert data("customer.created.v0", customer_id) == customer
    assert data("subscription.created.v0", sub_id) == created
    assert data("invoice.paid.v0", invoice0_id) == invoice0
    assert data("subscription.activated.v0", sub_id) == active
    assert data("subscription.updated.v0", sub_id) == active
    assert data("invoice.issued.v0", period1["id"]) == period1
    # Invoice 0 was issued before it was paid; each resource's messages came in the order they happened.
    assert data("invoice.issued.v0", invoice0_id)["status"] == "ISSUED"
    about_sub = [
        r.payload["eventType"] for r in receiver.delivered("/hook") if r.payload["data"].get("id") == sub_id
    ]
    assert about_sub == ["subscription.created.v0", "subscription.updated.v0", "subscription.activated.v0"]
    about_invoice0 = [
        r.payload["eventType"]
        for r in receiver.delivered("/hook")
        if r.payload["data"].get("id") == invoice0_id
    ]
    assert about_invoice0 == ["invoice.issued.v0", "invoice.paid.v0"]
    # The envelope's timestamp is the change's time, ISO-8601 UTC with milliseconds.
    stamp = messages(receiver, "invoice.paid.v0", invoice0_id)[0].payload["timestamp"]
    assert stamp.endswith("Z") and abs(datetime.fromisoformat(stamp) - datetime.now(UTC)) < timedelta(
        minutes=5
    )
