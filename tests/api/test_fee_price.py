"""GET /v0/fees/{id}/price/{subscriptionId}: the fee's price on the subscription's plan, with its tax
percent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from paygentic_sdk import Paygentic, errors
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import Fee, Plan, PlanPrice, Price
from domain.ids import new_id
from tests.factories import Factory
from tests.helpers import assert_error


async def fee_price(
    f: Factory, plan: Plan, fee: Fee, unit_price: str = "25.00", position: int = 0, **over: object
) -> Price:
    values: dict[str, object] = {
        "model": "standard",
        "payment_term": "in_advance",
        "properties": {"unitPrice": unit_price},
        "billing_cadence": "P1M",
        "invoice_display_name": "Platform fee",
    } | over
    price = await f.add(Price(id=new_id("price"), fee_id=fee.id, **f.tenant, **values))
    await f.add(PlanPrice(plan_id=plan.id, price_id=price.id, position=position))
    return price


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
def f(engine: AsyncEngine, merchant: NewMerchant) -> Factory:
    return Factory(engine, merchant)


async def test_fee_price_through_sdk(f: Factory, sdk: Paygentic) -> None:
    plan = await f.plan(default_tax_rate=Decimal(10))
    fee = await f.fee()
    other_fee = await f.fee(name="Support")
    price = await fee_price(f, plan, fee, "25.00", payment_term="in_arrears", invoice_display_name="Platform")
    await fee_price(f, plan, other_fee, "5.00", position=1)
    sub = await f.subscription(plan)

    got = sdk.fees.get_price(id=fee.id, subscription_id=sub.id)
    assert (got.id, got.fee_id, got.model, got.payment_term) == (price.id, fee.id, "standard", "in_arrears")
    assert (got.invoice_display_name, got.properties.unit_price) == ("Platform", "25.00")
    assert got.tax_rate == 10  # the plan's default: the customer has no rates of their own


async def test_tax_rate_follows_customer_and_exemption(f: Factory, aclient: httpx.AsyncClient) -> None:
    plan = await f.plan(default_tax_rate=Decimal(10))
    fee = await f.fee()
    await fee_price(f, plan, fee)
    specific = await f.customer(tax_rates={fee.id: 8.875, "default": 5})
    sub = await f.subscription(plan, specific)
    body = (await aclient.get(f"/v0/fees/{fee.id}/price/{sub.id}")).json()
    assert body["taxRate"] == 8.875 and body["properties"] == {"unitPrice": "25.00"}

    exempt = await f.subscription(plan, await f.customer(), tax_exempt=True)
    assert (await aclient.get(f"/v0/fees/{fee.id}/price/{exempt.id}")).json()["taxRate"] == 0


async def test_unknown_fee_subscription_or_fee_off_plan_is_404(f: Factory, sdk: Paygentic) -> None:
    plan = await f.plan()
    fee = await f.fee()
    await fee_price(f, plan, fee)
    sub = await f.subscription(plan)
    off_plan = await f.fee(name="Not on this plan")
    await fee_price(f, await f.plan(name="Other"), off_plan)  # priced, but on another plan

    for fee_id, sub_id, needle in [
        ("fee_missing", sub.id, "fee_missing"),
        (fee.id, "sub_missing", "sub_missing"),
        (off_plan.id, sub.id, f"has no price on plan {plan.id!r}"),
    ]:
        with pytest.raises(errors.Error) as caught:
            sdk.fees.get_price(id=fee_id, subscription_id=sub_id)
        assert caught.value.status_code == 404
        assert needle in caught.value.data.message


async def test_other_tenant_is_404(
    f: Factory,
    engine: AsyncEngine,
    other_merchant: NewMerchant,
    aclient: httpx.AsyncClient,
    other_aclient: httpx.AsyncClient,
) -> None:
    plan = await f.plan()
    fee = await f.fee()
    await fee_price(f, plan, fee)
    sub = await f.subscription(plan)
    assert (await aclient.get(f"/v0/fees/{fee.id}/price/{sub.id}")).status_code == 200
    assert_error(await other_aclient.get(f"/v0/fees/{fee.id}/price/{sub.id}"), 404, "not_found")

    # The other merchant's own fee against this merchant's subscription: still a 404 naming the subscription.
    theirs = await Factory(engine, other_merchant).fee()
    body = assert_error(await other_aclient.get(f"/v0/fees/{theirs.id}/price/{sub.id}"), 404)
    assert sub.id in body["message"]
