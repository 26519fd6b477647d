"""GET /v0/revenue from rows written straight to the tables: every category, wallet top-ups, instant usage and
its refunds, half-open bucket edges, groupBy=plan, filters and the unhappy paths. The figures of invoices
the real subscription workflow issues are in test_revenue_workflow.py."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant
from db.models import Invoice, Subscription, UsageEvent
from domain.ids import new_id
from tests.factories import Factory
from tests.helpers import assert_error, field_errors

MAR1 = datetime(2026, 3, 1, tzinfo=UTC)
MAR8 = datetime(2026, 3, 8, tzinfo=UTC)
MS = timedelta(milliseconds=1)
_SEQUENCE = itertools.count(1)  # invoices are unique per (subscription, sequence number)


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


async def issued(
    f: Factory,
    sub: Subscription,
    status: str,
    at: datetime,
    total: str,
    *,
    topup: str | None = None,
    written_off_at: datetime | None = None,
    currency: str | None = None,
) -> Invoice:
    """An issued invoice of `sub` with grand total `total` (a top-up line of `topup` inside it)."""
    transitions = [{"from": "DRAFT", "to": "ISSUED", "at": at.isoformat()}]
    if written_off_at is not None:
        transitions.append({"from": "ISSUED", "to": "WRITTEN_OFF", "at": written_off_at.isoformat()})
    invoice = await f.invoice(
        sub,
        sequence_number=next(_SEQUENCE),
        status=status,
        issued_at=at,
        grand_total=Decimal(total),
        subtotal=Decimal(total),
        paid_at=at if status == "PAID" else None,
        currency=currency or sub.currency,
        metadata_={"transitions": transitions},
    )
    if topup is not None:
        await f.line_item(
            invoice, sub, type="fee", display_name="Wallet top-up", unit_price=Decimal(topup),
            idempotency_key=f"topup:{invoice.id}",
        )  # fmt: skip
    return invoice


async def usage(
    f: Factory,
    sub: Subscription,
    at: datetime,
    instant: str,
    *,
    arrears: str = "0",
    refunded_at: datetime | None = None,
    currency: str | None = None,
) -> UsageEvent:
    amount = Decimal(instant) + Decimal(arrears)
    return await f.add(
        UsageEvent(
            id=new_id("usage_event"),
            **f.tenant,
            customer_id=sub.customer_id,
            consumer_id="org_test",
            subscription_id=sub.id,
            idempotency_key=new_id("usage_event"),
            timestamp=at,
            properties=[],
            currency=currency or sub.currency,
            price=amount,
            total_amount=amount,
            instant_amount=Decimal(instant),
            arrears_amount=Decimal(arrears),
            refunded_at=refunded_at,
        )
    )


def window(
    merchant: NewMerchant, start: datetime = MAR1, end: datetime = MAR8, **extra: Any
) -> dict[str, Any]:
    return {
        "startTime": start.isoformat(),
        "endTime": end.isoformat(),
        "merchantId": merchant.merchant_id,
    } | extra


async def revenue(client: httpx.AsyncClient, params: dict[str, Any]) -> dict[str, Any]:
    response = await client.get("/v0/revenue", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_summary_adds_up_to_the_cent(
    f: Factory, engine: AsyncEngine, other_merchant: NewMerchant, aclient: httpx.AsyncClient
) -> None:
    sub = await f.subscription()
    await issued(f, sub, "PAID", MAR1, "1.00")  # exactly at startTime: inside
    await issued(f, sub, "PAID", MAR1 + timedelta(days=1, hours=10), "49.00")
    await issued(f, sub, "PAID", MAR1 + timedelta(days=1, hours=11), "70.00", topup="50.00")
    await issued(f, sub, "ISSUED", MAR1 + timedelta(days=2), "53.00")
    await issued(f, sub, "PAYMENT_FAILED", MAR1 + timedelta(days=3), "10.00")
    await issued(
        f, sub, "WRITTEN_OFF", MAR1 + timedelta(days=4), "7.00", written_off_at=MAR1 + timedelta(days=5)
    )
    await issued(f, sub, "CANCELLED", MAR1 + timedelta(days=4, hours=1), "3.00")
    # Outside: before startTime, at endTime, another currency, not issued, another tenant.
    await issued(f, sub, "PAID", MAR1 - MS, "1000.00")
    await issued(f, sub, "PAID", MAR8, "1000.00")
    await issued(f, sub, "PAID", MAR1 + timedelta(days=2), "1000.00", currency="EUR")
    await f.invoice(sub, sequence_number=99, status="ACTIVE", grand_total=Decimal("1000"))
    other = Factory(engine, other_merchant)
    await issued(other, await other.subscription(), "PAID", MAR1 + timedelta(days=1), "1000.00")
    # Instant usage by timestamp, refunds by refundedAt; in-arrears parts are the invoices' business.
    await usage(f, sub, MAR1 + timedelta(days=1), "0.25", arrears="4.00")
    await usage(f, sub, MAR1 + timedelta(days=2), "0.35", refunded_at=MAR1 + timedelta(days=3))
    await usage(f, sub, MAR1 + timedelta(days=2), "0", arrears="9.00")
    await usage(f, sub, MAR8, "100.00")
    await usage(
        f, sub, MAR1 - MS, "0.10", refunded_at=MAR1 + timedelta(days=6)
    )  # charged before, refunded in

    body = await revenue(aclient, window(f.merchant))
    assert body["object"] == "revenue_summary" and body["currency"] == "USD"
    assert body["invoices"] == {
        "issued": {"count": 7, "amount": "193.00"},
        "outstanding": {"count": 2, "amount": "63.00"},
        "paid": {"count": 3, "amount": "120.00"},
        "writtenOff": {"count": 1, "amount": "7.00"},
    }
    assert body["walletFunding"] == {"count": 1, "amount": "50.00"}
    assert body["instantUsage"] == {"count": 2, "amount": "0.60", "refundCount": 2, "refundAmount": "0.45"}
    assert (body["totalRefunds"], body["refundCount"]) == ("0.45", 2)
    # 120.00 paid − 50.00 of it funding a wallet + 0.60 instant usage − 0.45 refunded
    assert body["netRevenue"] == "70.15"
    assert body["payments"] == {
        "completedCount": 0, "completedAmount": "0.00", "pendingCount": 0, "pendingAmount": "0.00",
        "expiredCount": 0, "expiredAmount": "0.00",
    }  # fmt: skip
    assert "groupBreakdown" not in body

    trend = body["trend"]
    assert [b["timestamp"] for b in trend] == [
        (MAR1 + timedelta(days=d)).isoformat(timespec="milliseconds").replace("+00:00", "Z") for d in range(7)
    ]
    assert [(b["issuedInvoices"], b["revenue"], b["writtenOffInvoices"]) for b in trend] == [
        ("1.00", "1.00", "0.00"),
        ("119.00", "69.25", "0.00"),  # 49 + (70 − 50 top-up) + 0.25 usage
        ("53.00", "0.35", "0.00"),
        ("10.00", "-0.35", "0.00"),  # the refund
        ("10.00", "0.00", "0.00"),
        ("0.00", "0.00", "7.00"),  # written off on Mar 6
        ("0.00", "-0.10", "0.00"),
    ]
    assert sum(Decimal(b["revenue"]) for b in trend) == Decimal(body["netRevenue"])
    assert all(b["completedPayments"] == "0.00" and b["rebates"] == "0.00" for b in trend)

    eur = await revenue(aclient, window(f.merchant, currency="EUR"))
    assert (eur["currency"], eur["invoices"]["paid"], eur["netRevenue"]) == (
        "EUR",
        {"count": 1, "amount": "1000.00"},
        "1000.00",
    )


async def test_buckets_are_utc_hours_days_and_iso_weeks(f: Factory, aclient: httpx.AsyncClient) -> None:
    sub = await f.subscription()
    start = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)  # a Wednesday
    await issued(f, sub, "PAID", start, "2.00")
    await issued(f, sub, "PAID", datetime(2026, 3, 9, tzinfo=UTC) - MS, "3.00")  # last instant of week 1
    await issued(f, sub, "PAID", datetime(2026, 3, 9, tzinfo=UTC), "5.00")  # Monday: week 2

    weeks = await revenue(
        aclient, window(f.merchant, start, datetime(2026, 3, 10, tzinfo=UTC), bucketWidth="week")
    )
    assert [(b["timestamp"], b["issuedInvoices"]) for b in weeks["trend"]] == [
        ("2026-03-02T00:00:00.000Z", "5.00"),
        ("2026-03-09T00:00:00.000Z", "5.00"),
    ]
    hours = await revenue(aclient, window(f.merchant, start, start + timedelta(hours=2), bucketWidth="hour"))
    assert [(b["timestamp"], b["issuedInvoices"]) for b in hours["trend"]] == [
        ("2026-03-04T10:00:00.000Z", "2.00"),
        ("2026-03-04T11:00:00.000Z", "0.00"),
        ("2026-03-04T12:00:00.000Z", "0.00"),
    ]
    days = await revenue(aclient, window(f.merchant, start, start + timedelta(days=1)))  # day is the default
    assert [b["timestamp"][:10] for b in days["trend"]] == ["2026-03-04", "2026-03-05"]
    # An empty window is all zeros, every bucket present.
    empty = await revenue(aclient, window(f.merchant, MAR1 - timedelta(days=3), MAR1))
    assert empty["netRevenue"] == "0.00" and len(empty["trend"]) == 3
    assert empty["invoices"]["issued"] == {"count": 0, "amount": "0.00"}


async def test_group_by_plan_top_four_and_other(f: Factory, aclient: httpx.AsyncClient) -> None:
    subs = []
    for n, amount in enumerate(["60.00", "50.00", "40.00", "30.00", "20.00", "10.00"]):
        plan = await f.plan(name=f"Plan {n}")
        sub = await f.subscription(plan)
        subs.append(sub)
        await issued(f, sub, "PAID", MAR1 + timedelta(days=n), amount)
    await issued(f, subs[5], "ISSUED", MAR1 + timedelta(days=1), "1.00")
    await usage(f, subs[4], MAR1 + timedelta(days=2), "0.50")

    body = await revenue(aclient, window(f.merchant, groupBy="plan"))
    groups = body["groupBreakdown"]
    assert [(g["groupKey"], g["groupLabel"]) for g in groups] == [
        (subs[0].plan_id, "Plan 0"),
        (subs[1].plan_id, "Plan 1"),
        (subs[2].plan_id, "Plan 2"),
        (subs[3].plan_id, "Plan 3"),
        ("other", "Other"),
    ]
    other = groups[4]
    assert (other["paid"], other["outstanding"], other["revenue"]) == (
        {"count": 2, "amount": "30.00"},
        {"count": 1, "amount": "1.00"},
        "30.50",
    )
    assert sum(Decimal(g["revenue"]) for g in groups) == Decimal(body["netRevenue"]) == Decimal("210.50")
    # Each bucket lists the same five groups; their issued amounts add up to the bucket's.
    for bucket in body["trend"]:
        assert [g["groupKey"] for g in bucket["groupBreakdown"]] == [g["groupKey"] for g in groups]
        assert sum(Decimal(g["issuedInvoices"]) for g in bucket["groupBreakdown"]) == Decimal(
            bucket["issuedInvoices"]
        )
    assert body["trend"][1]["groupBreakdown"][4] == {
        "groupKey": "other", "groupLabel": "Other", "issuedInvoices": "1.00", "revenue": "0.00",
    }  # fmt: skip

    # Five plans fit: no "other".
    five = await revenue(
        aclient, window(f.merchant, groupBy="plan", subscriptionIds=[s.id for s in subs[:5]])
    )
    assert [g["groupKey"] for g in five["groupBreakdown"]] == [s.plan_id for s in subs[:5]]


async def test_customer_and_subscription_filters(
    f: Factory, engine: AsyncEngine, other_merchant: NewMerchant, aclient: httpx.AsyncClient
) -> None:
    one, two = await f.subscription(), await f.subscription()
    await issued(f, one, "PAID", MAR1, "10.00")
    await issued(f, two, "PAID", MAR1, "20.00")
    await usage(f, two, MAR1, "1.00")
    params = {"startTime": MAR1.isoformat(), "endTime": MAR8.isoformat()}

    by_customer = await revenue(aclient, params | {"customerId": one.customer_id})
    assert (by_customer["netRevenue"], by_customer["invoices"]["issued"]["count"]) == ("10.00", 1)
    by_subs = await revenue(aclient, params | {"subscriptionIds": [two.id]})
    assert by_subs["netRevenue"] == "21.00"
    both = await revenue(aclient, params | {"subscriptionIds": [one.id, two.id]})
    assert both["netRevenue"] == "31.00"
    mismatch = await revenue(aclient, params | {"customerId": one.customer_id, "subscriptionIds": [two.id]})
    assert mismatch["netRevenue"] == "0.00"

    theirs = await Factory(engine, other_merchant).subscription()
    body = assert_error(
        await aclient.get("/v0/revenue", params=params | {"customerId": theirs.customer_id}), 404
    )
    assert theirs.customer_id in body["message"]
    body = assert_error(
        await aclient.get("/v0/revenue", params=params | {"subscriptionIds": [one.id, theirs.id]}), 404
    )
    assert theirs.id in body["message"] and one.id not in body["message"]


async def test_unhappy_paths(
    merchant: NewMerchant, other_merchant: NewMerchant, aclient: httpx.AsyncClient
) -> None:
    base = window(merchant)
    no_filter = {"startTime": base["startTime"], "endTime": base["endTime"]}
    body = assert_error(await aclient.get("/v0/revenue", params=no_filter), 400)
    assert "merchantId" in body["message"] and "customerId" in body["message"]
    body = assert_error(
        await aclient.get("/v0/revenue", params=base | {"merchantId": other_merchant.merchant_id}),
        403,
        "forbidden",
    )
    assert other_merchant.merchant_id in body["message"]
    assert "endTime" in field_errors(
        await aclient.get("/v0/revenue", params=base | {"endTime": base["startTime"]})
    )
    backwards = base | {"startTime": MAR8.isoformat(), "endTime": MAR1.isoformat()}
    assert "endTime" in field_errors(await aclient.get("/v0/revenue", params=backwards))
    assert "startTime" in field_errors(
        await aclient.get("/v0/revenue", params={"merchantId": merchant.merchant_id})
    )
    assert "startTime" in field_errors(
        await aclient.get("/v0/revenue", params=base | {"startTime": "yesterday"})
    )
    assert "bucketWidth" in field_errors(
        await aclient.get("/v0/revenue", params=base | {"bucketWidth": "minute"})
    )
    assert "groupBy" in field_errors(await aclient.get("/v0/revenue", params=base | {"groupBy": "customer"}))
    assert "currency" in field_errors(await aclient.get("/v0/revenue", params=base | {"currency": "dollars"}))
    year = base | {"endTime": (MAR1 + timedelta(days=365)).isoformat(), "bucketWidth": "hour"}
    message = field_errors(await aclient.get("/v0/revenue", params=year))["bucketWidth"]
    assert "8760 hour buckets" in message
    too_many = base | {"subscriptionIds": [f"sub_{n}" for n in range(101)]}
    assert "subscriptionIds" in field_errors(await aclient.get("/v0/revenue", params=too_many))


async def test_revenue_through_sdk(f: Factory, sdk: Paygentic) -> None:
    sub = await f.subscription(await f.plan(name="Pay as you go"))
    await issued(f, sub, "PAID", MAR1 + timedelta(hours=5), "12.34")
    await issued(f, sub, "ISSUED", MAR1 + timedelta(hours=6), "5.66")
    await usage(f, sub, MAR1 + timedelta(hours=7), "0.011")
    await usage(f, sub, MAR1 + timedelta(hours=8), "0.004")

    got = sdk.revenue.get(
        start_time=MAR1,
        end_time=MAR1 + timedelta(days=2),
        merchant_id=f.merchant.merchant_id,
        group_by="plan",
    )
    assert got.net_revenue == "12.36"  # 12.34 + 0.015, rounded once
    assert (got.invoices.issued.count, got.invoices.issued.amount) == (2, "18.00")
    assert (got.invoices.outstanding.amount, got.invoices.paid.amount, got.invoices.written_off.count) == (
        "5.66",
        "12.34",
        0,
    )
    assert got.payments.completed_count == 0 and got.payments.completed_amount == "0.00"
    assert [(b.timestamp, b.issued_invoices) for b in got.trend] == [
        (MAR1, "18.00"),
        (MAR1 + timedelta(days=1), "0.00"),
    ]
    assert got.group_breakdown is not None
    assert [(g.group_key, g.group_label, g.paid.amount) for g in got.group_breakdown] == [
        (sub.plan_id, "Pay as you go", "12.34")
    ]
    assert (
        got.trend[0].group_breakdown is not None
        and got.trend[0].group_breakdown[0].issued_invoices == "18.00"
    )

    by_subscription = sdk.revenue.get(
        start_time=MAR1, end_time=MAR8, subscription_ids=[sub.id], bucket_width="week"
    )
    assert by_subscription.net_revenue == "12.36" and len(by_subscription.trend) == 2

    with pytest.raises(errors.BadRequest):
        sdk.revenue.get(start_time=MAR1, end_time=MAR8)
    with pytest.raises(errors.Error) as caught:
        sdk.revenue.get(start_time=MAR1, end_time=MAR8, merchant_id="org_someone_else")
    assert caught.value.status_code == 403
