"""Revenue, disputes and the fee price under both SDKs: 0.1.34 has all three, 0.6.3 only revenue.get (which
requires `revenue` and `rebates` on every trend bucket and `revenue` on each group trend entry)."""

from __future__ import annotations

import asyncio
import json
from asyncio.subprocess import PIPE
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from paygentic_sdk import Paygentic
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import PlanPrice, Price
from domain.ids import new_id
from tests.api.test_disputes import charged_event, funded_subscription
from tests.api.test_revenue import issued
from tests.factories import Factory
from tests.helpers import sdk063_python

MAR1 = datetime(2026, 3, 1, tzinfo=UTC)

DRIVER_063 = """
import json, sys
from datetime import datetime
from paygentic_sdk import Paygentic
url, key, merchant_id, plan_id = sys.argv[1:5]
with Paygentic(server_url=url, bearer_auth=key) as p:
    r = p.revenue.get(start_time=datetime.fromisoformat("2026-03-01T00:00:00+00:00"),
                      end_time=datetime.fromisoformat("2026-03-03T00:00:00+00:00"),
                      merchant_id=merchant_id, group_by="plan")
    print(json.dumps({
        "netRevenue": r.net_revenue, "currency": r.currency, "paid": r.invoices.paid.amount,
        "refunds": [r.total_refunds, r.refund_count],
        "trend": [[b.timestamp.isoformat(), b.revenue, b.rebates, b.issued_invoices] for b in r.trend],
        "groups": [[g.group_key, g.paid.amount] for g in r.group_breakdown],
        "trendGroups": [[g.group_key, g.revenue] for g in r.trend[0].group_breakdown],
    }))
"""


@pytest.fixture
def f(engine: AsyncEngine, merchant: NewMerchant) -> Factory:
    return Factory(engine, merchant)


async def test_revenue_under_sdk_0_6_3(f: Factory, api_url: str, merchant: NewMerchant) -> None:
    sub = await funded_subscription(f)
    await issued(f, sub, "PAID", MAR1 + timedelta(hours=1), "12.00")
    event = await charged_event(f, sub, "0.50", at=MAR1 + timedelta(hours=2))
    await f.update(event, refunded_at=MAR1 + timedelta(days=1))
    args = [api_url, merchant.api_key, merchant.merchant_id, sub.plan_id]
    process = await asyncio.create_subprocess_exec(
        sdk063_python(), "-c", DRIVER_063, *args, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    got = json.loads(out.decode().strip().splitlines()[-1])
    assert got == {
        "netRevenue": "12.00",
        "currency": "USD",
        "paid": "12.00",
        "refunds": ["0.50", 1],
        "trend": [
            ["2026-03-01T00:00:00+00:00", "12.50", "0.00", "12.00"],
            ["2026-03-02T00:00:00+00:00", "-0.50", "0.00", "0.00"],
        ],
        "groups": [[sub.plan_id, "12.00"]],
        "trendGroups": [[sub.plan_id, "12.50"]],
    }


async def test_fee_price_disputes_and_revenue_under_sdk_0_1_34(f: Factory, sdk: Paygentic) -> None:
    sub = await funded_subscription(f)
    fee = await f.fee()
    price = await f.add(
        Price(
            id=new_id("price"), **f.tenant, fee_id=fee.id, model="standard", payment_term="in_advance",
            properties={"unitPrice": "49.00"}, billing_cadence="P1M", invoice_display_name="Platform fee",
        )
    )  # fmt: skip
    await f.add(PlanPrice(plan_id=sub.plan_id, price_id=price.id, position=0))
    got = sdk.fees.get_price(id=fee.id, subscription_id=sub.id)
    assert (got.id, got.properties.unit_price, got.tax_rate) == (price.id, "49.00", 0)

    event = await charged_event(f, sub, "1.25", at=MAR1)
    dispute = sdk.disputes.create(usage_event_id=event.id, message="Charged for a failed request")
    assert dispute.disputed_amount == Decimal("1.25")
    page = sdk.disputes.list(request={"customer_id": sub.customer_id, "status": "pending", "limit": 1})
    assert [d.id for d in page.data] == [dispute.id] and page.pagination.has_more is False

    summary = sdk.revenue.get(start_time=MAR1, end_time=MAR1 + timedelta(days=1), customer_id=sub.customer_id)
    assert (summary.net_revenue, summary.invoices.issued.count, len(summary.trend)) == ("1.25", 0, 1)
