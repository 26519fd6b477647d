"""The sources API with its workflow running (the API in-process, the production worker on the
time-skipping server, the Stripe fake through the real `stripe` library): connect through
POST /v0/sources/{id}/installations, import, approve/reject/bulk through SDK 0.1.34, disconnect; a refused
key answers `error` and a new connect replaces it. The key never appears in a response or a log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors

from tests.helpers import assert_error
from tests.stripe_fake import new_key, pay_invoices, revoke_key
from tests.workflows import source_harness
from tests.workflows.billing_harness import eventually
from tests.workflows.source_harness import Revenue
from workflows.client import poll_installation_now

env, revenue = source_harness.env, source_harness.revenue  # the module's fixtures


@pytest.fixture
async def sdk(revenue: Revenue) -> AsyncIterator[Paygentic]:
    transport = httpx.ASGITransport(app=revenue.billing.app)
    async with httpx.AsyncClient(transport=transport, timeout=60) as http:
        yield Paygentic(
            server_url="http://accrue.test", bearer_auth=revenue.billing.merchant.api_key, async_client=http
        )


async def manual_source(revenue: Revenue) -> tuple[str, dict[str, Any]]:
    """A source created through the API on a 5 % plan, and a live subscription to that plan."""
    plan, metric = await revenue.catalog("0.05")
    body = {
        "name": "Stripe revenue",
        "planId": plan,
        "type": "stripe_revenue",
        "processingMode": "manual",
        "metadata": {"billableMetricMapping": {"revenue": metric}},
    }
    source = await revenue.billing.post("/v0/sources", body, 201)
    sub = await revenue.subscription(plan, datetime.now(UTC) - timedelta(minutes=1))
    return source["id"], sub


async def connect(revenue: Revenue, source_id: str, sub: dict[str, Any], key: str) -> httpx.Response:
    body = {"subscriptionId": sub["id"], "stripeSecretKey": key}
    return await revenue.billing.http.post(f"/v0/sources/{source_id}/installations", json=body)


async def test_connect_import_review_disconnect(
    revenue: Revenue, sdk: Paygentic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source_id, sub = await manual_source(revenue)
    key = new_key()
    response = await connect(revenue, source_id, sub, key)
    assert response.status_code == 201, response.text
    inst = response.json()
    assert (inst["status"], inst["errorMessage"], inst["keyLast4"], inst["keyMode"]) == (
        "active",
        None,
        key[-4:],
        "test",
    )
    assert (inst["sourceId"], inst["subscriptionId"], inst["customerId"]) == (
        source_id,
        sub["id"],
        sub["customerId"],
    )
    assert inst["connectedAt"] is not None and key not in response.text
    again = assert_error(await connect(revenue, source_id, sub, new_key()), 409)
    assert again["details"]["installationId"] == inst["id"]

    pay_invoices(revenue.stripe, key, [10_000, 2_500, 1_999, 700], email="billing@trusted.com")
    await poll_installation_now(revenue.billing.env.client, inst["id"], "test")

    async def four_pending() -> list[Any]:
        page = await sdk.sources.events.list_async(id=source_id, status="pending")
        assert page.pagination is not None and page.pagination.total == 4
        return list(page.data or [])

    pending = await eventually(four_pending)
    by_amount = {e.raw_data["amount_paid"]: e.id for e in pending}
    first, second, third, fourth = (by_amount[c] for c in (10_000, 2_500, 1_999, 700))

    approved = await sdk.sources.events.approve_async(id=source_id, event_id=first)
    assert (approved.status, approved.processed_by) == ("processed", revenue.billing.merchant.user_id)
    assert approved.processed_at is not None and len(approved.usage_event_ids or []) == 1
    rejected = await sdk.sources.events.reject_async(id=source_id, event_id=second)
    assert (rejected.status, rejected.usage_event_ids) == ("rejected", [])
    for call in (sdk.sources.events.approve_async, sdk.sources.events.reject_async):
        with pytest.raises(errors.PaygenticDefaultError) as conflict:
            await call(id=source_id, event_id=first)
        assert conflict.value.status_code == 409

    bulk = await sdk.sources.events.bulk_approve_async(
        id=source_id, event_ids=[third, second, "sev_unknown", third]
    )
    assert (bulk.processed, bulk.failed) == (1, 2)
    assert bulk.details is not None and bulk.details.processed == [third]
    failures = {f.id: f.error for f in bulk.details.failed or []}
    assert set(failures) == {second, "sev_unknown"}
    assert failures["sev_unknown"] == f"not found in source {source_id}"
    assert "not pending" in str(failures[second])
    assert (await sdk.sources.events.bulk_reject_async(id=source_id, event_ids=[fourth, first])).rejected == 1
    statuses = {
        e.id: e.status for e in (await sdk.sources.events.list_async(id=source_id, limit=10)).data or []
    }
    assert statuses == {first: "processed", second: "rejected", third: "processed", fourth: "rejected"}

    url = f"/v0/sources/{source_id}/installations/{inst['id']}"
    gone = await revenue.billing.http.delete(url)
    assert gone.status_code == 200, gone.text
    assert gone.json()["status"] == "disconnected" and gone.json()["disconnectedAt"] is not None
    repeat = await revenue.billing.http.delete(url)
    assert repeat.status_code == 200 and repeat.json() == gone.json()
    listed = await revenue.billing.get(f"/v0/sources/{source_id}/installations", status="disconnected")
    assert [i["id"] for i in listed["data"]] == [inst["id"]]
    assert key not in caplog.text and key[8:] not in caplog.text


async def test_a_refused_key_is_an_error_and_a_new_connect_replaces_it(revenue: Revenue) -> None:
    source_id, sub = await manual_source(revenue)
    refused = new_key()
    revoke_key(revenue.stripe, refused)
    response = await connect(revenue, source_id, sub, refused)
    assert response.status_code == 201, response.text
    failed = response.json()
    assert failed["status"] == "error" and failed["errorMessage"]
    assert refused not in response.text

    good = new_key("rk_test_")
    response = await connect(revenue, source_id, sub, good)
    assert response.status_code == 201, response.text
    assert (response.json()["status"], response.json()["keyLast4"]) == ("active", good[-4:])
    listed = await revenue.billing.get(f"/v0/sources/{source_id}/installations", subscriptionId=sub["id"])
    assert [(i["id"], i["status"]) for i in listed["data"]] == [
        (response.json()["id"], "active"),
        (failed["id"], "error"),
    ]


async def test_concurrent_connects_make_one_installation(revenue: Revenue) -> None:
    source_id, sub = await manual_source(revenue)
    responses = await asyncio.gather(*(connect(revenue, source_id, sub, new_key()) for _ in range(3)))
    assert sorted(r.status_code for r in responses) == [201, 409, 409]
    listed = await revenue.billing.get(f"/v0/sources/{source_id}/installations")
    assert listed["pagination"]["total"] == 1


async def test_an_approval_in_another_currency_answers_the_failed_event(
    revenue: Revenue, sdk: Paygentic
) -> None:
    source_id, sub = await manual_source(revenue)
    key = new_key()
    inst = (await connect(revenue, source_id, sub, key)).json()
    pay_invoices(revenue.stripe, key, [5_000], currency="eur")
    await poll_installation_now(revenue.billing.env.client, inst["id"], "test")

    async def one_pending() -> str:
        page = await sdk.sources.events.list_async(id=source_id, status="pending")
        assert len(page.data or []) == 1
        return (page.data or [])[0].id

    event_id = await eventually(one_pending)
    answered = await sdk.sources.events.approve_async(id=source_id, event_id=event_id)
    assert (answered.status, answered.usage_event_ids) == ("failed", [])
    assert answered.error_message and "EUR" in answered.error_message


async def test_re_enabling_a_source_has_its_installations_poll_now(revenue: Revenue) -> None:
    source_id, sub = await manual_source(revenue)
    inst = (await connect(revenue, source_id, sub, new_key())).json()
    await revenue.synced(inst["id"], 1)
    for enabled in (False, True):
        response = await revenue.billing.http.patch(f"/v0/sources/{source_id}", json={"enabled": enabled})
        assert response.status_code == 200, response.text
    await revenue.synced(inst["id"], 2)  # the second poll comes from the nudge, not the 5-minute timer


async def test_two_approvals_of_one_event_at_once_are_one_200_and_one_409(revenue: Revenue) -> None:
    """Both pass the row check while the event is pending; the workflow reviews one, and its validator
    refuses the other (NotPending), which answers from the row's new status."""
    source_id, sub = await manual_source(revenue)
    key = new_key()
    inst = (await connect(revenue, source_id, sub, key)).json()
    pay_invoices(revenue.stripe, key, [4_200])
    await poll_installation_now(revenue.billing.env.client, inst["id"], "test")

    async def one_pending() -> str:
        page = await revenue.billing.get(f"/v0/sources/{source_id}/events", status="pending")
        assert len(page["data"]) == 1
        return str(page["data"][0]["id"])

    event_id = await eventually(one_pending)
    url = f"/v0/sources/{source_id}/events/{event_id}/approve"
    responses = await asyncio.gather(*(revenue.billing.http.post(url) for _ in range(2)))
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 409)
    assert assert_error(refused, 409)["message"] == (
        f"Source event {event_id} is processed, not pending: only a pending event can be approved"
    )
