"""paygentic-sdk 0.1.34 `usage_events.*` (create, batch_create, list, get, refund) against the running API,
happy and unhappy paths. SDK 0.6.3 has no usage events (removed there; usage goes through events.ingest).
Every response parses; every refusal is the SDK's typed error (400 BadRequest; 403/404/422 Error where
the operation declares them) or its default error carrying the status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from paygentic_sdk import Paygentic, errors, models
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from tests.api.test_usage import AT, DOLLAR, audit, setup, wallet
from tests.factories import Factory


def prop(metric_id: str, quantity: int, price: str | None = None) -> models.CreateUsageEventRequestProperty:
    return models.CreateUsageEventRequestProperty(
        billable_metric_id=metric_id, quantity=quantity, price=price
    )


def status(exc: pytest.ExceptionInfo[errors.PaygenticError]) -> int:
    return exc.value.status_code


async def test_every_usage_operation(sdk: Paygentic, engine: AsyncEngine, merchant: NewMerchant) -> None:
    s = await setup(engine, merchant)
    m = merchant.merchant_id
    key = str(uuid.uuid4())
    usage = sdk.usage_events.create(
        customer_id=s.customer_id,
        idempotency_key=key,
        merchant_id=m,
        properties=[prop(s.metric_id, 4)],
        timestamp=AT,
        metadata={"model": "gpt-4o"},
    )
    assert usage.id.startswith("usg_") and usage.object == "usageEvent"
    assert (usage.customer_id, usage.merchant_id, usage.subscription_id) == (
        s.customer_id,
        m,
        s.subscription_id,
    )
    assert usage.timestamp == AT and usage.created_at.tzinfo is not None
    assert usage.billing is not None
    assert (usage.billing.price, usage.billing.total_tax, usage.billing.total_amount) == (DOLLAR, 0, DOLLAR)
    assert usage.billing.currency == "USD" and usage.metadata == {"model": "gpt-4o"}
    assert [(p.billable_metric_id, p.quantity) for p in usage.properties] == [(s.metric_id, 4)]
    again = sdk.usage_events.create(
        customer_id=s.customer_id,
        idempotency_key=key,
        merchant_id=m,
        properties=[prop(s.metric_id, 4)],
        timestamp=AT,
    )
    assert again.id == usage.id
    assert sdk.usage_events.get(id=usage.id).id == usage.id

    batch = sdk.usage_events.batch_create(
        events=[
            models.CreateUsageEventRequest(
                customer_id=s.customer_id,
                idempotency_key=str(uuid.uuid4()),
                merchant_id=m,
                properties=[prop(s.metric_id, 1)],
                timestamp=AT + timedelta(hours=1),
            ),
            models.CreateUsageEventRequest(
                customer_id="cus_nothere",
                idempotency_key="missing-customer",
                merchant_id=m,
                properties=[prop(s.metric_id, 1)],
                timestamp=AT,
            ),
        ]
    )
    assert batch.object == "batchUsageEvents"
    assert (batch.summary.total, batch.summary.successful, batch.summary.failed) == (2, 1, 1)
    assert [(f.index, f.idempotency_key) for f in batch.failed] == [(1, "missing-customer")]

    listed = sdk.usage_events.list(
        start_time=AT, end_time=AT + timedelta(days=1), customer_id=s.customer_id, merchant_id=m
    )
    assert listed.data is not None and [e.id for e in listed.data] == [batch.successful[0].id, usage.id]
    assert listed.pagination is not None and listed.pagination.total == 2
    by_sub = sdk.usage_events.list(start_time=AT, end_time=AT, subscription_id=s.subscription_id, limit=1)
    assert by_sub.data is not None and [e.id for e in by_sub.data] == [usage.id]

    refunded = sdk.usage_events.refund(id=usage.id, reason="Customer request")
    assert refunded.refund is not None and refunded.refund.reason == "Customer request"
    assert refunded.refund.refunded_at is not None
    with pytest.raises(errors.Error) as twice:
        sdk.usage_events.refund(id=usage.id)
    assert status(twice) == 422 and "already refunded" in twice.value.message
    assert await wallet(engine, s) == {"customer_main": 10 * DOLLAR - DOLLAR // 4}
    assert await audit(engine, merchant) == []


async def test_unhappy_paths(sdk: Paygentic, engine: AsyncEngine, merchant: NewMerchant) -> None:
    s = await setup(engine, merchant, funds=DOLLAR)
    m, cus = merchant.merchant_id, s.customer_id

    def create(customer_id: str = cus, merchant_id: str = m, **over: object) -> models.UsageEvent:
        props = over.pop("properties", [prop(s.metric_id, 1)])
        return sdk.usage_events.create(
            customer_id=customer_id,
            idempotency_key=str(uuid.uuid4()),
            merchant_id=merchant_id,
            properties=props,  # type: ignore[arg-type]
            timestamp=over.pop("timestamp", AT),  # type: ignore[arg-type]
        )

    with pytest.raises(errors.PaygenticDefaultError) as unknown_customer:
        create(customer_id="cus_nothere")
    assert status(unknown_customer) == 404
    with pytest.raises(errors.Error) as wrong_merchant:
        create(merchant_id="org_someone_else")
    assert status(wrong_merchant) == 403
    with pytest.raises(errors.BadRequest) as unknown_metric:
        create(properties=[prop("bm_nothere", 1)])
    assert "not found" in unknown_metric.value.message
    other = await Factory(engine, merchant).metric(event_type=None)
    with pytest.raises(errors.BadRequest) as not_in_plan:
        create(properties=[prop(other.id, 1)])
    assert "no price in the plan" in not_in_plan.value.message
    with pytest.raises(errors.PaygenticDefaultError) as insufficient:
        create(properties=[prop(s.metric_id, 5)])  # 1.25 USD against 1.00
    assert status(insufficient) == 422 and "short by 0.25 USD" in str(insufficient.value.body)

    bare = await Factory(engine, merchant).customer()
    with pytest.raises(errors.PaygenticDefaultError) as no_subscription:
        create(customer_id=bare.id)
    assert status(no_subscription) == 422 and "no active subscription" in str(no_subscription.value.body)
    standard = await setup(engine, merchant, billing_version=1)
    with pytest.raises(errors.PaygenticDefaultError) as on_standard:
        create(customer_id=standard.customer_id, properties=[prop(standard.metric_id, 1)])
    assert status(on_standard) == 422 and "/v0/events" in str(on_standard.value.body)
    ended = await setup(engine, merchant, status="terminated", terminated_at=AT)
    with pytest.raises(errors.PaygenticDefaultError) as after_termination:
        create(customer_id=ended.customer_id, properties=[prop(ended.metric_id, 1)])
    assert status(after_termination) == 422

    dynamic = await setup(
        engine, merchant, model="dynamic", properties={"minPrice": "0.01", "maxPrice": "0.10"}
    )
    with pytest.raises(errors.BadRequest) as out_of_bounds:
        create(customer_id=dynamic.customer_id, properties=[prop(dynamic.metric_id, 1, "0.50")])
    assert "outside the price's bounds" in out_of_bounds.value.message
    ok = create(customer_id=dynamic.customer_id, properties=[prop(dynamic.metric_id, 10, "0.05")])
    assert ok.billing is not None and ok.billing.price == DOLLAR // 2

    with pytest.raises(errors.Error) as missing:
        sdk.usage_events.get(id="usg_nothere")
    assert status(missing) == 404
    with pytest.raises(errors.Error) as refund_missing:
        sdk.usage_events.refund(id="usg_nothere")
    assert status(refund_missing) == 404
    assert datetime.now(UTC) > AT  # the window below is in the past: the list is well-formed and empty
    empty = sdk.usage_events.list(start_time=AT - timedelta(days=9), end_time=AT - timedelta(days=8))
    assert empty.data == [] and empty.pagination is not None and empty.pagination.total == 0
    assert await wallet(engine, s) == {"customer_main": DOLLAR}
