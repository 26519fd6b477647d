"""Usage events (/v0/usage) over HTTP against the real API and PostgreSQL: an instant charge moves the
wallet in the same commit as the event, every refusal stores and moves nothing, duplicates answer the
stored event, a hot wallet under concurrent requests never overdraws or loses an update, refunds give back
exactly what was charged, once. (Temporal is unreachable here; subscriptions are rows from the factory.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.schemas.usage import CreateUsageEvent
from api.usage_ingest import Item, process
from db import entitlements
from db import ledger as records
from db.merchants import NewMerchant
from db.models import Entitlement, LedgerTransaction, PlanPrice, Price, UsageEvent
from db.session import session_factory
from domain import ledger
from domain.ids import new_id
from tests.factories import ANCHOR, Factory
from tests.helpers import assert_error

DOLLAR = 10**9
AT = ANCHOR + timedelta(days=3)


@pytest.fixture
async def api(api_url: str, merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=60) as c:
        yield c


@pytest.fixture
async def other_api(api_url: str, other_merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {other_merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers) as c:
        yield c


@dataclass
class Setup:
    merchant: NewMerchant
    customer_id: str
    subscription_id: str
    plan_id: str
    metric_id: str
    price_id: str


async def fund(engine: AsyncEngine, merchant: NewMerchant, customer_id: str, nanos: int) -> None:
    async with session_factory(engine)() as session:
        await records.post(
            session,
            merchant.merchant_id,
            merchant.environment,
            ledger.funding(merchant.merchant_id, customer_id, "USD", nanos),
            idempotency_key=f"topup:{new_id('invoice')}",
        )
        await session.commit()


async def add_price(
    engine: AsyncEngine,
    merchant: NewMerchant,
    metric_id: str,
    *,
    model: str = "standard",
    term: str = "instant",
    properties: dict[str, Any] | None = None,
) -> Price:
    return await Factory(engine, merchant).add(
        Price(
            id=new_id("price"),
            merchant_id=merchant.merchant_id,
            environment=merchant.environment,
            billable_metric_id=metric_id,
            model=model,
            payment_term=term,
            properties=properties or {"unitPrice": "0.25"},
            invoice_display_name="Calls",
        )
    )


async def setup(
    engine: AsyncEngine,
    merchant: NewMerchant,
    *,
    funds: int = 10 * DOLLAR,
    model: str = "standard",
    term: str = "instant",
    properties: dict[str, Any] | None = None,
    billing_version: int = 0,
    **subscription: Any,
) -> Setup:
    f = Factory(engine, merchant)
    metric = await f.metric(event_type=None)
    price = await add_price(engine, merchant, metric.id, model=model, term=term, properties=properties)
    plan = await f.plan(billing_version=billing_version)
    await f.add(PlanPrice(plan_id=plan.id, price_id=price.id, position=0))
    sub = await f.subscription(plan=plan, **subscription)
    if funds:
        await fund(engine, merchant, sub.customer_id, funds)
    return Setup(merchant, sub.customer_id, sub.id, plan.id, metric.id, price.id)


def event(s: Setup, quantity: int = 4, **extra: Any) -> dict[str, Any]:
    return {
        "merchantId": s.merchant.merchant_id,
        "customerId": s.customer_id,
        "idempotencyKey": new_id("usage_event"),
        "timestamp": AT.isoformat(),
        "properties": [{"billableMetricId": s.metric_id, "quantity": quantity}],
    } | extra


async def wallet(engine: AsyncEngine, s: Setup, owner: str | None = None) -> dict[str, int]:
    async with session_factory(engine)() as session:
        found = await records.balances(
            session, s.merchant.merchant_id, s.merchant.environment, owner or s.customer_id, "USD"
        )
    return {kind: balance for (_, kind), balance in found.items()}


async def audit(engine: AsyncEngine, merchant: NewMerchant) -> list[str]:
    async with session_factory(engine)() as session:
        return await records.audit(session, merchant.merchant_id)


async def stored(engine: AsyncEngine, s: Setup) -> int:
    async with session_factory(engine)() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(UsageEvent).where(UsageEvent.customer_id == s.customer_id)
            )
            or 0
        )


# ---- create ------------------------------------------------------------------------------------------


async def test_instant_usage_debits_the_wallet_and_credits_the_merchant(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant)
    body = event(s, quantity=4, metadata={"model": "gpt"})
    response = await api.post("/v0/usage", json=body)
    assert response.status_code == 201, response.text
    usage = response.json()
    assert usage["id"].startswith("usg_") and usage["object"] == "usageEvent"
    assert (usage["customerId"], usage["merchantId"], usage["subscriptionId"]) == (
        s.customer_id,
        merchant.merchant_id,
        s.subscription_id,
    )
    assert usage["properties"] == [{"billableMetricId": s.metric_id, "quantity": 4}]
    assert usage["timestamp"] == "2026-02-03T00:00:00.000Z"
    assert usage["idempotencyKey"] == body["idempotencyKey"] and usage["metadata"] == {"model": "gpt"}
    assert usage["consumerId"].startswith("org_") and usage["refund"] is None
    billing = usage["billing"]
    assert billing["price"] == billing["totalAmount"] == DOLLAR and billing["totalTax"] == 0
    assert billing["currency"] == "USD" and billing["billingEventId"].startswith("txn_")
    assert billing["invoiceId"] is None
    assert await wallet(engine, s) == {"customer_main": 9 * DOLLAR}
    assert await wallet(engine, s, merchant.merchant_id) == {
        "merchant_revenue": DOLLAR,
        "external_funding": -10 * DOLLAR,
    }
    got = await api.get(f"/v0/usage/{usage['id']}")
    assert got.status_code == 200 and got.json() == usage
    assert await audit(engine, merchant) == []


async def test_a_duplicate_key_answers_the_stored_event_and_charges_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant)
    body = event(s)
    first = await api.post("/v0/usage", json=body)
    again = await api.post(
        "/v0/usage", json=body | {"properties": [{"billableMetricId": "bm_x", "quantity": 9}]}
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    # Concurrent duplicates too: one charge, one answer.
    other = event(s)
    answers = await asyncio.gather(*(api.post("/v0/usage", json=other) for _ in range(20)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert await wallet(engine, s) == {"customer_main": 8 * DOLLAR}
    assert await stored(engine, s) == 2
    assert await audit(engine, merchant) == []


async def test_insufficient_funds_names_the_shortfall_and_stores_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant, funds=DOLLAR // 2)
    response = await api.post("/v0/usage", json=event(s, quantity=4))
    body = assert_error(response, 422)
    assert body["code"] == "INSUFFICIENT_FUNDS"
    assert "short by 0.5 USD" in body["message"], body["message"]
    assert body["details"]["shortfall"] == "0.500000000"
    assert await wallet(engine, s) == {"customer_main": DOLLAR // 2}
    assert await stored(engine, s) == 0
    # The same key once the wallet can pay is a new attempt, not a replay of the refusal.
    await fund(engine, merchant, s.customer_id, DOLLAR)


async def test_unknown_or_foreign_customer_is_404_and_another_merchant_id_403(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant)
    assert_error(await api.post("/v0/usage", json=event(s, customerId="cus_nothere")), 404)
    # The other merchant names our customer with its own merchantId: not its customer.
    foreign = event(s) | {"merchantId": "org_whatever"}
    assert_error(await api.post("/v0/usage", json=foreign), 403)
    other = await other_api.get("/v0/usage/x")
    assert other.status_code == 404
    theirs = event(s)
    response = await other_api.post("/v0/usage", json=theirs)
    assert response.status_code in (403, 404)
    assert await stored(engine, s) == 0


async def test_metric_unknown_or_not_in_the_plan_is_400(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant)
    other_metric = await Factory(engine, merchant).metric(event_type=None)
    unknown = event(s) | {"properties": [{"billableMetricId": "bm_nope", "quantity": 1}]}
    body = assert_error(await api.post("/v0/usage", json=unknown), 400, "validation_error")
    assert body["errors"][0]["field"] == "properties[0].billableMetricId"
    assert "not found" in body["errors"][0]["message"]
    unpriced = event(s) | {"properties": [{"billableMetricId": other_metric.id, "quantity": 1}]}
    body = assert_error(await api.post("/v0/usage", json=unpriced), 400, "validation_error")
    assert "no price in the plan" in body["errors"][0]["message"]
    for bad in ({"quantity": 0}, {"quantity": 1.5}, {"quantity": "3"}):
        payload = event(s) | {"properties": [{"billableMetricId": s.metric_id} | bad]}
        assert_error(await api.post("/v0/usage", json=payload), 400, "validation_error")
    assert_error(await api.post("/v0/usage", json=event(s) | {"properties": []}), 400)
    assert await wallet(engine, s) == {"customer_main": 10 * DOLLAR}


async def test_no_active_subscription_standard_plan_and_termination(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    f = Factory(engine, merchant)
    s = await setup(engine, merchant)
    bare = await f.customer()
    body = assert_error(await api.post("/v0/usage", json=event(s, customerId=bare.id)), 422)
    assert body["code"] == "NO_ACTIVE_SUBSCRIPTION"
    pending = await setup(engine, merchant, status="pending_payment")
    body = assert_error(await api.post("/v0/usage", json=event(pending)), 422)
    assert "pending_payment" in body["message"]
    standard = await setup(engine, merchant, billing_version=1)
    body = assert_error(await api.post("/v0/usage", json=event(standard)), 422)
    assert "/v0/events" in body["message"] and body["code"] == "STANDARD_BILLING_USE_EVENTS"
    ended_at = AT + timedelta(days=1)
    ended = await setup(engine, merchant, status="terminated", terminated_at=ended_at)
    late = event(ended, timestamp=(ended_at + timedelta(seconds=1)).isoformat())
    body = assert_error(await api.post("/v0/usage", json=late), 422)
    assert body["code"] == "SUBSCRIPTION_TERMINATED" and "after its termination" in body["message"]
    before = await api.post("/v0/usage", json=event(ended))  # it happened while the subscription ran
    assert before.status_code == 201, before.text
    early = event(s, timestamp=(ANCHOR - timedelta(days=1)).isoformat())
    body = assert_error(await api.post("/v0/usage", json=early), 422)
    assert "before subscription" in body["message"]
    for setup_ in (pending, standard):
        assert await stored(engine, setup_) == 0


async def test_dynamic_price_within_bounds_or_400(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant, model="dynamic", properties={"minPrice": "0.01", "maxPrice": "0.50"})
    ok = event(s) | {"properties": [{"billableMetricId": s.metric_id, "quantity": 3, "price": "0.000012"}]}
    body = assert_error(await api.post("/v0/usage", json=ok), 400, "validation_error")
    assert body["errors"][0]["field"] == "properties[0].price" and "between" in body["errors"][0]["message"]
    missing = event(s)
    assert_error(await api.post("/v0/usage", json=missing), 400, "validation_error")
    good = event(s) | {
        "properties": [{"billableMetricId": s.metric_id, "quantity": 3, "price": "0.123456789"}]
    }
    response = await api.post("/v0/usage", json=good)
    assert response.status_code == 201, response.text
    assert response.json()["billing"]["price"] == 370370367  # 3 × 0.123456789 USD in nanodollars
    assert response.json()["properties"][0]["price"] == "0.123456789"
    assert await wallet(engine, s) == {"customer_main": 10 * DOLLAR - 370370367}
    standard = await setup(engine, merchant)
    priced = event(standard) | {
        "properties": [{"billableMetricId": standard.metric_id, "quantity": 1, "price": "1"}]
    }
    body = assert_error(await api.post("/v0/usage", json=priced), 400, "validation_error")
    assert "only a dynamic price" in body["errors"][0]["message"]


async def test_percentage_prices_each_event_with_its_bounds(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    props = {"percentage": "0.05", "minCharge": "0.10", "maxCharge": "2.00"}
    s = await setup(engine, merchant, model="percentage", properties=props)
    amounts = []
    for quantity in (1, 30, 1000):  # 0.05 → min 0.10; 1.50; 50 → max 2.00
        response = await api.post("/v0/usage", json=event(s, quantity=quantity))
        assert response.status_code == 201, response.text
        amounts.append(response.json()["billing"]["price"])
    assert amounts == [DOLLAR // 10, 3 * DOLLAR // 2, 2 * DOLLAR]


# ---- concurrency ---------------------------------------------------------------------------------------


async def test_fifty_concurrent_events_against_a_wallet_for_thirty(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant, funds=30 * DOLLAR // 4)  # 30 events of 1 unit at 0.25
    answers = await asyncio.gather(*(api.post("/v0/usage", json=event(s, quantity=1)) for _ in range(50)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 30 and codes.count(422) == 20, codes
    assert all(a.json()["code"] == "INSUFFICIENT_FUNDS" for a in answers if a.status_code == 422)
    assert await wallet(engine, s) == {"customer_main": 0}
    assert await stored(engine, s) == 30
    assert await audit(engine, merchant) == []
    async with session_factory(engine)() as session:
        charges = await session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.merchant_id == merchant.merchant_id, LedgerTransaction.kind == "usage")
        )
    assert charges == 30


async def test_the_batch_processor_splits_the_platform_fee(
    database_url: str, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant)
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        items = [
            Item(
                merchant.merchant_id,
                merchant.environment,
                CreateUsageEvent.model_validate(event(s, quantity=q)),
            )
            for q in (1, 3)
        ]
        outcomes = await process(conn, items, Decimal("0.1"))
    finally:
        await conn.close()
    assert [o.instant_amount for o in outcomes] == [Decimal("0.25"), Decimal("0.75")]  # type: ignore[union-attr]
    assert await wallet(engine, s, merchant.merchant_id) == {
        "merchant_revenue": 9 * DOLLAR // 10,
        "platform_fee": DOLLAR // 10,
        "external_funding": -10 * DOLLAR,
    }
    assert await wallet(engine, s) == {"customer_main": 9 * DOLLAR}
    assert await audit(engine, merchant) == []


# ---- batch ---------------------------------------------------------------------------------------------


async def test_batch_answers_201_or_207_with_each_failure(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant, funds=DOLLAR)
    ok = [event(s, quantity=1), event(s, quantity=1)]
    response = await api.post("/v0/usage/batch", json={"events": ok})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["object"] == "batchUsageEvents" and body["failed"] == []
    assert body["summary"] == {"total": 2, "successful": 2, "failed": 0}
    mixed = [
        ok[0],  # a replay: the stored event
        event(s, quantity=1),
        event(s, customerId="cus_nothere"),
        {"idempotencyKey": "k-bad", "quantity": "x"},
        event(s, quantity=100),  # 25 USD: more than the wallet holds
        event(s, quantity=1),
    ]
    response = await api.post("/v0/usage/batch", json={"events": mixed})
    assert response.status_code == 207, response.text
    body = response.json()
    assert body["summary"] == {"total": 6, "successful": 3, "failed": 3}
    assert [f["index"] for f in body["failed"]] == [2, 3, 4]
    assert body["failed"][1]["idempotencyKey"] == "k-bad"
    assert "insufficient funds" in body["failed"][2]["error"]
    assert body["successful"][0]["id"] == response.json()["successful"][0]["id"]
    assert await wallet(engine, s) == {"customer_main": 0}
    for size in (0, 1001):
        assert_error(await api.post("/v0/usage/batch", json={"events": [{}] * size}), 400)
    assert_error(await api.post("/v0/usage/batch", json={}), 400)
    assert await audit(engine, merchant) == []


# ---- list, get -----------------------------------------------------------------------------------------


async def test_list_needs_a_window_and_filters(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant)
    t = await setup(engine, merchant)
    times = [AT + timedelta(hours=h) for h in range(3)]
    for at in times:
        assert (await api.post("/v0/usage", json=event(s, timestamp=at.isoformat()))).status_code == 201
    assert (await api.post("/v0/usage", json=event(t))).status_code == 201
    window = {"startTime": AT.isoformat(), "endTime": (AT + timedelta(hours=2)).isoformat()}
    assert_error(await api.get("/v0/usage", params={"startTime": AT.isoformat()}), 400)
    page = (await api.get("/v0/usage", params=window | {"customerId": s.customer_id, "limit": 2})).json()
    assert page["object"] == "list" and page["pagination"] == {
        "limit": 2,
        "offset": 0,
        "total": 3,
        "hasMore": True,
    }
    assert [e["timestamp"] for e in page["data"]] == ["2026-02-03T02:00:00.000Z", "2026-02-03T01:00:00.000Z"]
    by_sub = (await api.get("/v0/usage", params=window | {"subscriptionId": t.subscription_id})).json()
    assert [e["customerId"] for e in by_sub["data"]] == [t.customer_id]
    assert_error(await api.get("/v0/usage", params=window | {"merchantId": "org_else"}), 403)
    theirs = (await other_api.get("/v0/usage", params=window)).json()
    assert theirs["data"] == [] and theirs["pagination"]["total"] == 0
    assert_error(await api.get("/v0/usage/usg_nothere"), 404)


# ---- refunds -------------------------------------------------------------------------------------------


async def test_refund_gives_the_charge_back_once(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant)
    usage = (await api.post("/v0/usage", json=event(s, quantity=4))).json()
    assert_error(await other_api.patch(f"/v0/usage/{usage['id']}", json={"refunded": True}), 404)
    response = await api.patch(f"/v0/usage/{usage['id']}", json={"refunded": True, "reason": "Billing error"})
    assert response.status_code == 200, response.text
    refunded = response.json()
    assert refunded["refund"]["reason"] == "Billing error" and refunded["refund"]["refundedAt"]
    assert refunded["id"] == usage["id"] and refunded["billing"] == usage["billing"]
    assert await wallet(engine, s) == {"customer_main": 10 * DOLLAR}
    assert await wallet(engine, s, merchant.merchant_id) == {
        "merchant_revenue": 0,
        "external_funding": -10 * DOLLAR,
    }
    again = assert_error(await api.patch(f"/v0/usage/{usage['id']}", json={"refunded": True}), 422)
    assert again["code"] == "ALREADY_REFUNDED"
    assert_error(await api.patch(f"/v0/usage/{usage['id']}", json={"refunded": False}), 400)
    assert_error(await api.patch("/v0/usage/usg_nothere", json={"refunded": True}), 404)
    assert (await api.get(f"/v0/usage/{usage['id']}")).json()["refund"]["reason"] == "Billing error"
    assert await audit(engine, merchant) == []


# ---- in arrears ----------------------------------------------------------------------------------------


async def test_in_arrears_usage_accrues_and_closed_periods_refuse_it(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant, term="in_arrears", funds=0)
    f = Factory(engine, merchant)
    async with session_factory(engine)() as session:
        from db.models import Subscription

        sub = await session.get_one(Subscription, s.subscription_id)
    first = await f.invoice(sub, status="ISSUED")
    await f.invoice(
        sub,
        sequence_number=2,
        period_start=first.period_end,
        period_end=first.period_end + timedelta(days=28),
    )
    response = await api.post("/v0/usage", json=event(s, quantity=8))  # AT is in the first period
    body = assert_error(response, 422)
    assert body["code"] == "PERIOD_INVOICED" and first.id in body["message"]
    later = event(s, quantity=8, timestamp=(first.period_end + timedelta(days=1)).isoformat())
    response = await api.post("/v0/usage", json=later)
    assert response.status_code == 201, response.text
    usage = response.json()
    assert usage["billing"]["price"] == 2 * DOLLAR and usage["billing"]["billingEventId"] is None
    assert await wallet(engine, s) == {}  # nothing moved: the invoice bills it
    # Refunded before it is billed: it simply stops being billed.
    response = await api.patch(f"/v0/usage/{usage['id']}", json={"refunded": True})
    assert response.status_code == 200, response.text
    assert await wallet(engine, s) == {}


# ---- with an entitlement -------------------------------------------------------------------------------


async def test_usage_with_an_entitlement_is_paid_from_the_reservation(
    api: httpx.AsyncClient, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    s = await setup(engine, merchant)
    async with session_factory(engine)() as session:
        from db.models import Subscription

        sub = await session.get_one(Subscription, s.subscription_id)
        plan_id = sub.plan_id
        row = await entitlements.create(
            session,
            merchant_id=merchant.merchant_id,
            environment=merchant.environment,
            customer_id=s.customer_id,
            subscription_id=s.subscription_id,
            plan_id=plan_id,
            product_id=(await Factory(engine, merchant).default_product()).id,
            currency="USD",
            billable_metrics=[{"billableMetricId": s.metric_id, "quantity": 8, "price": "0.25"}],
            amount=2 * DOLLAR,
            max_uses=2,
            expires_at=datetime(2099, 1, 1, tzinfo=UTC),
            test_clock_id=None,
        )
        await session.commit()
        entitlement_id = row.id
    assert await wallet(engine, s) == {"customer_main": 8 * DOLLAR, "customer_reserved": 2 * DOLLAR}
    response = await api.post("/v0/usage", json=event(s, quantity=2, entitlementId=entitlement_id))
    assert response.status_code == 201, response.text
    assert response.json()["entitlementId"] == entitlement_id
    assert await wallet(engine, s) == {"customer_main": 8 * DOLLAR, "customer_reserved": 3 * DOLLAR // 2}
    too_much = event(s, quantity=7, entitlementId=entitlement_id)  # 1.75 > 1.50 remaining
    body = assert_error(await api.post("/v0/usage", json=too_much), 422)
    assert body["code"] == "ENTITLEMENT_UNAVAILABLE"
    last = await api.post("/v0/usage", json=event(s, quantity=2, entitlementId=entitlement_id))
    assert last.status_code == 201, last.text
    # The second use was the last: the remainder went back to the wallet.
    assert await wallet(engine, s) == {"customer_main": 9 * DOLLAR, "customer_reserved": 0}
    async with session_factory(engine)() as session:
        ent = await session.get_one(Entitlement, entitlement_id)
        assert (ent.used_count, ent.status, ent.remaining_balance) == (2, "exhausted", 0)
    exhausted = await api.post("/v0/usage", json=event(s, quantity=1, entitlementId=entitlement_id))
    assert assert_error(exhausted, 422)["code"] == "ENTITLEMENT_UNAVAILABLE"
    replay = await api.post(
        "/v0/usage",
        json=event(s, quantity=2, entitlementId=entitlement_id)
        | {"idempotencyKey": last.json()["idempotencyKey"]},
    )
    assert replay.status_code == 201 and replay.json()["id"] == last.json()["id"]
    unknown = await api.post("/v0/usage", json=event(s, entitlementId="com_nothere"))
    assert unknown.status_code == 404
    # Refunding a reservation-paid event returns it to the main wallet.
    assert (await api.patch(f"/v0/usage/{last.json()['id']}", json={"refunded": True})).status_code == 200
    assert await wallet(engine, s) == {"customer_main": 19 * DOLLAR // 2, "customer_reserved": 0}
    assert await audit(engine, merchant) == []
