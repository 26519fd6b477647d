"""paygentic-sdk 0.1.34 `entitlements_v0.create` / `list_active` against the running API, happy and unhappy
paths (SDK 0.6.3 has no v0 entitlements: they were removed there). Every response parses; every refusal is
the SDK's typed error (400, 403) or its default error carrying the status (404, 422)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from paygentic_sdk import Paygentic, errors, models
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from db import entitlements
from db import ledger as records
from db.merchants import NewMerchant
from db.models import Entitlement
from db.session import session_factory
from domain import ledger
from domain.ids import new_id
from tests.api.test_entitlements import DOLLAR, legacy
from tests.factories import Factory


def d(metric_id: str, quantity: float, price: str | None = None) -> models.EntitlementDatum:
    return models.EntitlementDatum(billable_metric_id=metric_id, quantity=quantity, price=price)


async def test_create_and_list_active(sdk: Paygentic, engine: AsyncEngine, merchant: NewMerchant) -> None:
    setup = await legacy(engine, merchant)
    ent = sdk.entitlements_v0.create(
        customer_id=setup.customer_id,
        merchant_id=merchant.merchant_id,
        entitlement_data=[d(setup.metric_id, 100, "0.001")],
    )
    assert ent.id is not None and ent.id.startswith("com_")
    assert (ent.object, ent.customer_id, ent.merchant_id, ent.region) == (
        "entitlement",
        setup.customer_id,
        merchant.merchant_id,
        "global",
    )
    assert (ent.max_uses, ent.used_count, ent.remaining_balance) == (1, 0, str(DOLLAR // 10))
    assert ent.billable_metrics is not None
    metric = ent.billable_metrics[0]
    assert (metric.billable_metric_id, metric.quantity, metric.price) == (setup.metric_id, 100, "0.001")
    assert ent.expires_at is not None and ent.created_at is not None
    assert ent.expires_at - ent.created_at == timedelta(days=30)
    several = sdk.entitlements_v0.create(
        customer_id=setup.customer_id,
        merchant_id=merchant.merchant_id,
        entitlement_data=[d(setup.metric_id, 1000)],
        max_uses=10,
    )
    assert (several.max_uses, several.remaining_balance) == (10, str(DOLLAR))

    listed = sdk.entitlements_v0.list_active(customer_id=setup.customer_id)
    assert listed.object == "list" and listed.data is not None and listed.pagination is not None
    assert [a.id for a in listed.data] == [ent.id, several.id]
    first = listed.data[0]
    assert (first.billable_metrics, first.plan_id, first.product_id, first.subscription_id) == (
        [setup.metric_id],
        setup.plan_id,
        setup.product_id,
        setup.subscription_id,
    )
    assert first.verified_at is not None and first.verified_at.tzinfo is not None
    assert listed.pagination.total == 2
    by_sub = sdk.entitlements_v0.list_active(
        customer_id=setup.customer_id, subscription_id=setup.subscription_id
    )
    assert by_sub.data is not None and len(by_sub.data) == 2
    by_product = sdk.entitlements_v0.list_active(customer_id=setup.customer_id, product_id="prod_none")
    assert by_product.data == []


async def test_unhappy_paths(sdk: Paygentic, engine: AsyncEngine, merchant: NewMerchant) -> None:
    setup = await legacy(engine, merchant, funds=DOLLAR)
    m, cus = merchant.merchant_id, setup.customer_id
    datum = d(setup.metric_id, 1000)

    with pytest.raises(errors.PaygenticDefaultError) as insufficient:
        sdk.entitlements_v0.create(
            customer_id=cus, merchant_id=m, entitlement_data=[d(setup.metric_id, 2000)]
        )
    assert insufficient.value.status_code == 422
    assert "short by 1 USD" in insufficient.value.body

    with pytest.raises(errors.PaygenticDefaultError) as unknown_metric:
        sdk.entitlements_v0.create(customer_id=cus, merchant_id=m, entitlement_data=[d("bm_nope", 1)])
    assert unknown_metric.value.status_code == 404

    stray = await Factory(engine, merchant).metric(name="Elsewhere")
    with pytest.raises(errors.BadRequest) as not_in_plan:
        sdk.entitlements_v0.create(customer_id=cus, merchant_id=m, entitlement_data=[d(stray.id, 1)])
    assert "not priced in plan" in not_in_plan.value.message

    for max_uses in (0, 1001):
        with pytest.raises(errors.BadRequest) as out_of_range:
            sdk.entitlements_v0.create(
                customer_id=cus, merchant_id=m, entitlement_data=[datum], max_uses=max_uses
            )
        assert "maxUses" in out_of_range.value.message

    with pytest.raises(errors.Error) as wrong_merchant:
        sdk.entitlements_v0.create(customer_id=cus, merchant_id="org_someone_else", entitlement_data=[datum])
    assert "org_someone_else" in wrong_merchant.value.message

    with pytest.raises(errors.PaygenticDefaultError) as unknown_customer:
        sdk.entitlements_v0.create(customer_id="cus_nope", merchant_id=m, entitlement_data=[datum])
    assert unknown_customer.value.status_code == 404

    lapsed = await legacy(engine, merchant, status="terminated")
    with pytest.raises(errors.PaygenticDefaultError) as no_subscription:
        sdk.entitlements_v0.create(
            customer_id=lapsed.customer_id,
            merchant_id=m,
            entitlement_data=[d(lapsed.metric_id, 1)],
        )
    assert no_subscription.value.status_code == 422
    assert "no active subscription" in no_subscription.value.body

    assert sdk.entitlements_v0.list_active(customer_id=cus).data == []
    async with session_factory(engine)() as session:
        assert await records.balances(session, m, merchant.environment, cus, "USD") == {
            ("USD", "customer_main"): DOLLAR
        }


async def test_wrong_tenant(sdk: Paygentic, engine: AsyncEngine, other_merchant: NewMerchant) -> None:
    theirs = await legacy(engine, other_merchant)
    with pytest.raises(errors.PaygenticDefaultError) as hidden:
        sdk.entitlements_v0.list_active(customer_id=theirs.customer_id)
    assert hidden.value.status_code == 404
    with pytest.raises(errors.Error) as forbidden:
        sdk.entitlements_v0.create(
            customer_id=theirs.customer_id,
            merchant_id=other_merchant.merchant_id,
            entitlement_data=[d(theirs.metric_id, 1)],
        )
    assert other_merchant.merchant_id in forbidden.value.message


async def test_exhausted_and_expired_reservations_are_not_active(
    sdk: Paygentic, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    setup = await legacy(engine, merchant)
    m, env, cus = merchant.merchant_id, merchant.environment, setup.customer_id
    datum = d(setup.metric_id, 1000)
    used = sdk.entitlements_v0.create(customer_id=cus, merchant_id=m, entitlement_data=[datum], max_uses=2)
    lapsing = sdk.entitlements_v0.create(customer_id=cus, merchant_id=m, entitlement_data=[datum])
    assert used.id is not None and lapsing.id is not None
    now = datetime.now(UTC)
    for _ in range(2):  # two usage events with entitlementId: the second uses it up
        async with session_factory(engine)() as session:
            await entitlements.consume(session, m, env, used.id, cus, DOLLAR // 10, now)
            charge = ledger.usage(m, cus, "USD", DOLLAR // 10, Decimal(0), from_reserved=True)
            await records.post(session, m, env, charge, idempotency_key=f"usage:{new_id('usage_event')}")
            await session.commit()
    with pytest.raises(entitlements.EntitlementUnavailable, match="exhausted"):
        async with session_factory(engine)() as session:
            await entitlements.consume(session, m, env, used.id, cus, 1, now)
    listed = sdk.entitlements_v0.list_active(customer_id=cus)
    assert listed.data is not None and [a.id for a in listed.data] == [lapsing.id]
    async with session_factory(engine)() as session:
        await session.execute(
            update(Entitlement)
            .where(Entitlement.id == lapsing.id)
            .values(expires_at=now - timedelta(seconds=1))
        )
        await session.commit()
    assert sdk.entitlements_v0.list_active(customer_id=cus).data == []
    with pytest.raises(entitlements.EntitlementUnavailable, match="expired"):
        async with session_factory(engine)() as session:
            await entitlements.consume(session, m, env, lapsing.id, cus, 1, now)
