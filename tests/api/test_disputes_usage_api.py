"""Disputes of usage events created through POST /v0/usage (SDK 0.1.34): the disputed amount is the event's
billed total, accepting refunds it through the same path as PATCH /v0/usage/{id} (the wallet is whole again
and the event shows its refund), and revenue shows the charge and its refund."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from paygentic_sdk import Paygentic, errors, models
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from domain.ids import new_id
from tests.api.test_usage import AT, DOLLAR, audit, setup, wallet


async def test_dispute_an_api_usage_event_and_accept_it(
    sdk: Paygentic, engine: AsyncEngine, merchant: NewMerchant, api_url: str
) -> None:
    s = await setup(engine, merchant, properties={"unitPrice": "0.25"})
    calls = models.CreateUsageEventRequestProperty(billable_metric_id=s.metric_id, quantity=4)
    event = sdk.usage_events.create(
        customer_id=s.customer_id, merchant_id=merchant.merchant_id, idempotency_key=new_id("usage_event"),
        timestamp=AT, properties=[calls],
    )  # fmt: skip
    assert event.billing is not None and event.billing.total_amount == DOLLAR
    assert (await wallet(engine, s))["customer_main"] == 9 * DOLLAR

    dispute = sdk.disputes.create(usage_event_id=event.id, message="Four calls, but we only made two")
    assert dispute.disputed_amount == Decimal("1.00") and dispute.customer_id == s.customer_id
    with pytest.raises(errors.Error) as refused:  # the event is disputed: a second dispute is refused
        sdk.disputes.create(usage_event_id=event.id, message="Four calls, but we only made two")
    assert refused.value.status_code == 409

    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as http:
        response = await http.patch(
            f"/v0/disputes/{dispute.id}", json={"status": "accepted", "message": "Refunded"}
        )
    assert response.status_code == 200, response.text
    assert (await wallet(engine, s))["customer_main"] == 10 * DOLLAR
    refunded = sdk.usage_events.get(id=event.id)
    assert refunded.refund is not None and refunded.refund.refunded_at is not None
    assert refunded.refund.reason == f"dispute {dispute.id} accepted: Refunded"
    with pytest.raises(errors.PaygenticError) as again:  # the refund path refuses a second refund
        sdk.usage_events.refund(id=event.id, reason="again")
    assert again.value.status_code == 422
    assert await audit(engine, merchant) == []

    summary = sdk.revenue.get(
        start_time=AT - timedelta(days=1), end_time=AT + timedelta(days=365 * 2), customer_id=s.customer_id,
        bucket_width="week",
    )  # fmt: skip
    # Charged at AT, refunded now: both inside the window, so they cancel out.
    assert summary.net_revenue == "0.00"
