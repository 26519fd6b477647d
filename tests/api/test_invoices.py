"""Invoices v2: reads (live vs frozen aggregates, money formatting, filters, token paging), billing line
items, and manual line items with idempotency. Rows come from tests.factories, not from workflows."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors, models
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from db import invoice_totals
from db.invoice_totals import LiveInvoice, Totals
from db.merchants import NewMerchant
from db.models import Invoice, LineItem, MeterEvent, Plan, PlanPrice, Price, Subscription
from db.session import session_factory
from domain.ids import new_id
from tests.factories import ANCHOR, Factory
from tests.helpers import assert_error, field_errors, sdk063_python


@pytest.fixture
async def aclient(api_url: str, merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, headers=auth(merchant), timeout=30) as c:
        yield c


@pytest.fixture
async def other_aclient(api_url: str, other_merchant: NewMerchant) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, headers=auth(other_merchant), timeout=30) as c:
        yield c


def auth(merchant: NewMerchant) -> dict[str, str]:
    return {"Authorization": f"Bearer {merchant.api_key}"}


@pytest.fixture
def factory(engine: AsyncEngine, merchant: NewMerchant) -> Factory:
    return Factory(engine, merchant)


@pytest.fixture
def other_factory(engine: AsyncEngine, other_merchant: NewMerchant) -> Factory:
    return Factory(engine, other_merchant)


async def line_count(engine: AsyncEngine, subscription_id: str) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(LineItem).where(LineItem.subscription_id == subscription_id)
        )
    return int(count or 0)


# ---- get / list ---------------------------------------------------------------------------------------


async def test_invoice_reads_through_sdk(sdk: Paygentic, factory: Factory, api_url: str) -> None:
    sub = await factory.subscription()
    metric = await factory.metric()
    invoice = await factory.invoice(
        sub,
        status="ISSUED",
        subtotal=Decimal("12.5"),
        total_tax=Decimal("1.25"),
        grand_total=Decimal("13.75"),
        item_count=2,
        invoice_number="INV-0001",
        payment_session_id="ps_test123",
    )
    await factory.line_item(invoice, sub, position=0, unit_price=Decimal("10"))
    await factory.line_item(
        invoice,
        sub,
        position=1,
        type="metered",
        billable_metric_id=metric.id,
        quantity=Decimal(250),
        unit_price=Decimal("0.01"),
        tax_rate=Decimal("0.5"),
    )

    got = await sdk.invoices_v2.get_async(id=invoice.id)
    assert (got.id, got.object, got.status, got.subscription_id) == (invoice.id, "invoice", "ISSUED", sub.id)
    assert (got.subtotal, got.total_tax, got.grand_total) == ("12.50", "1.25", "13.75")
    assert (got.paid_amount, got.unpaid_amount) == ("0.00", "13.75")
    assert got.payment_url == f"{api_url}/checkout/ps_test123"
    assert (got.sequence_number, got.item_count, got.invoice_number) == (1, 2, "INV-0001")
    assert got.billing_cadence == "P1M" and got.merchant_id == factory.merchant.merchant_id
    assert "line_items" not in got.model_fields_set

    listed = await sdk.invoices_v2.list_async(request={"subscription_id": sub.id})
    assert [i.id for i in listed.data] == [invoice.id]

    lines = await sdk.invoices_v2.get_line_items_async(id=invoice.id)
    assert (lines.invoice_id, lines.total_count, lines.next_page_token) == (invoice.id, 2, None)
    fee, usage = lines.line_items
    assert (fee.event_type, fee.metric_unit, fee.total_price, fee.line_item_type) == (
        "fee",
        "charge",
        "10.00",
        "charge",
    )
    assert (usage.event_type, usage.event_source_id, usage.billable_metric_id) == (
        "usage",
        metric.id,
        metric.id,
    )
    assert (usage.metric_name, usage.metric_unit, usage.quantity, usage.tax_rate) == (
        "API calls",
        "calls",
        250,
        0.5,
    )
    assert (usage.unit_price, usage.total_price, usage.total_tax, usage.total_amount) == (
        "0.01",
        "2.50",
        "1.25",
        "3.75",
    )

    expanded = await sdk.invoices_v2.get_async(id=invoice.id, expand="lineItems", line_items_limit=1)
    first_page = expanded.line_items
    assert isinstance(first_page, models.LineItems) and first_page.total_count == 2
    assert [li.event_id for li in first_page.line_items] == [fee.event_id]
    assert first_page.next_page_token


@pytest.mark.parametrize(
    ("currency", "stored", "shown"),
    [
        ("USD", "12.5", "12.50"),
        ("USD", "0.005", "0.01"),
        ("USD", "0", "0.00"),
        ("JPY", "1234.5", "1235"),
        ("KWD", "1.2345", "1.235"),
    ],
)
async def test_money_is_rounded_to_the_currency(
    aclient: httpx.AsyncClient, factory: Factory, currency: str, stored: str, shown: str
) -> None:
    sub = await factory.subscription(plan=await factory.plan(currency=currency))
    invoice = await factory.invoice(
        sub, status="DRAFT", subtotal=Decimal(stored), grand_total=Decimal(stored)
    )
    body = (await aclient.get(f"/v2/invoices/{invoice.id}")).json()
    assert (body["subtotal"], body["grandTotal"], body["currency"]) == (shown, shown, currency)


@pytest.mark.parametrize(
    ("status", "paid", "session", "unpaid", "payable"),
    [
        ("ISSUED", "0", "ps_1", "20.00", True),
        ("ISSUED", "5", "ps_1", "15.00", True),
        ("ISSUED", "20", "ps_1", "0.00", False),
        ("ISSUED", "0", None, "20.00", False),
        ("PAYMENT_FAILED", "0", "ps_1", "20.00", False),
        ("PAID", "20", "ps_1", "0.00", False),
        ("DRAFT", "0", "ps_1", "0.00", False),
        ("ACTIVE", "0", None, "0.00", False),
    ],
)
async def test_unpaid_amount_and_payment_url(
    aclient: httpx.AsyncClient,
    factory: Factory,
    status: str,
    paid: str,
    session: str | None,
    unpaid: str,
    payable: bool,
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(
        sub, status=status, grand_total=Decimal(20), paid_amount=Decimal(paid), payment_session_id=session
    )
    body = (await aclient.get(f"/v2/invoices/{invoice.id}")).json()
    assert body["unpaidAmount"] == unpaid
    assert ("paymentUrl" in body) is payable
    if payable:
        assert body["paymentUrl"].endswith(f"/checkout/{session}")


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Replaces the live calculation (the API server runs in this process) and records what it was asked."""
    asked: list[str] = []

    async def fake(
        session: object, invoices: list[Invoice], with_lines: bool = True
    ) -> dict[str, LiveInvoice]:
        live = [i.id for i in invoices if invoice_totals.is_live(i)]
        asked.extend(live)
        return {
            i: LiveInvoice(Totals(Decimal("7.005"), Decimal("0.7"), Decimal("7.705"), 3), []) for i in live
        }

    monkeypatch.setattr(invoice_totals, "live_invoices", fake)
    yield asked


@pytest.mark.parametrize("status", ["ACTIVE", "CLOSING", "CLOSED"])
async def test_open_invoices_show_live_aggregates(
    aclient: httpx.AsyncClient, factory: Factory, live: list[str], status: str
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(
        sub, status=status, subtotal=Decimal(1), grand_total=Decimal(1), item_count=1
    )
    body = (await aclient.get(f"/v2/invoices/{invoice.id}")).json()
    assert (body["subtotal"], body["totalTax"], body["grandTotal"], body["itemCount"]) == (
        "7.01",
        "0.70",
        "7.71",
        3,
    )
    listed = (await aclient.get("/v2/invoices")).json()["data"]
    assert listed[0]["grandTotal"] == "7.71"
    assert live == [invoice.id, invoice.id]


@pytest.mark.parametrize("status", ["CALCULATING", "DRAFT", "ISSUED", "PAID", "CANCELLED", "FAILED"])
async def test_finalized_invoices_show_stored_aggregates(
    aclient: httpx.AsyncClient, factory: Factory, live: list[str], status: str
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(
        sub, status=status, subtotal=Decimal(1), grand_total=Decimal(1), item_count=1
    )
    body = (await aclient.get(f"/v2/invoices/{invoice.id}")).json()
    assert (body["subtotal"], body["grandTotal"], body["itemCount"]) == ("1.00", "1.00", 1)
    assert live == []


async def test_open_invoice_shows_live_figures_not_stale_columns(
    aclient: httpx.AsyncClient, factory: Factory
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub, subtotal=Decimal("3.3"), grand_total=Decimal("3.3"), item_count=4)
    body = (await aclient.get(f"/v2/invoices/{invoice.id}")).json()
    # Nothing billable has happened in the period yet: the live figures are zero, whatever is stored.
    assert (body["status"], body["subtotal"], body["itemCount"]) == ("ACTIVE", "0.00", 0)


async def metered_plan(factory: Factory) -> tuple[Plan, str, str]:
    """A plan billing API calls at 0.50 in arrears and a 20.00 platform fee in advance: (plan, metric, fee)
    ids."""
    plan = await factory.plan()
    metric = await factory.metric(aggregation="COUNT", event_type="api.call")
    fee = await factory.fee()
    prices = [
        Price(
            id=new_id("price"), **factory.tenant, billable_metric_id=metric.id, model="standard",
            payment_term="in_arrears", properties={"unitPrice": "0.50"}, invoice_display_name="API calls",
        ),
        Price(
            id=new_id("price"), **factory.tenant, fee_id=fee.id, model="standard", payment_term="in_advance",
            billing_cadence="P1M", properties={"unitPrice": "20.00"}, invoice_display_name="Platform fee",
        ),
    ]  # fmt: skip
    for position, price in enumerate(prices):
        await factory.add(price)
        await factory.add(PlanPrice(plan_id=plan.id, price_id=price.id, position=position))
    return plan, metric.id, fee.id


async def calls(factory: Factory, subject: str, *at: datetime) -> None:
    for when in at:
        await factory.add(
            MeterEvent(
                id=new_id("event"), **factory.tenant, type="api.call", source="tests", subject=subject,
                data={}, timestamp=when, idempotency_key=new_id("event"),
            )
        )  # fmt: skip


async def test_open_invoice_lists_its_live_lines(aclient: httpx.AsyncClient, factory: Factory) -> None:
    """An ACTIVE invoice lists the lines its live totals count, with the quantities so far, and each line
    says which period it bills: the next period's in-advance fee carries that period."""
    plan, metric_id, fee_id = await metered_plan(factory)
    sub = await factory.subscription(plan)
    feb28, mar31 = datetime(2026, 2, 28, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)
    invoice = await factory.invoice(sub, period_start=ANCHOR, period_end=feb28)
    # The last one is at periodEnd: the next period's.
    await calls(
        factory, sub.customer_id, ANCHOR, ANCHOR + timedelta(days=3), feb28 - timedelta(seconds=1), feb28
    )
    await factory.line_item(
        invoice, sub, type="manual", status="pending", display_name="Setup", quantity=Decimal(2),
        unit_price=Decimal(5), invoice_at=ANCHOR + timedelta(days=1),
    )  # fmt: skip

    got = (await aclient.get(f"/v2/invoices/{invoice.id}")).json()
    assert (got["status"], got["itemCount"], got["subtotal"], got["grandTotal"]) == (
        "ACTIVE",
        3,
        "31.50",
        "31.50",
    )
    body = (await aclient.get(f"/v2/invoices/{invoice.id}/lineItems")).json()
    assert (body["invoiceId"], body["totalCount"], body["nextPageToken"]) == (invoice.id, 3, None)
    lines = [
        (
            i["invoiceDisplayName"], i["eventType"], i["quantity"], i["unitPrice"], i["totalAmount"],
            i["paymentTerm"], datetime.fromisoformat(i["periodStart"]),
            datetime.fromisoformat(i["periodEnd"]),
        )
        for i in body["lineItems"]
    ]  # fmt: skip
    assert lines == [
        ("API calls", "usage", 3, "0.50", "1.50", "in_arrears", ANCHOR, feb28),
        ("Platform fee", "fee", 1, "20.00", "20.00", "in_advance", feb28, mar31),
        ("Setup", "fee", 2, "5.00", "10.00", None, ANCHOR, feb28),
    ]
    assert body["lineItems"][0]["billableMetricId"] == metric_id
    assert body["lineItems"][1]["eventSourceId"] == fee_id

    # Token paging walks the same live lines; expand=lineItems shows them too.
    first = (await aclient.get(f"/v2/invoices/{invoice.id}/lineItems", params={"limit": 2})).json()
    rest = (
        await aclient.get(
            f"/v2/invoices/{invoice.id}/lineItems", params={"pageToken": first["nextPageToken"]}
        )
    ).json()
    assert [i["invoiceDisplayName"] for i in first["lineItems"] + rest["lineItems"]] == [
        line[0] for line in lines
    ]
    assert rest["nextPageToken"] is None
    expanded = (await aclient.get(f"/v2/invoices/{invoice.id}", params={"expand": "lineItems"})).json()
    assert expanded["lineItems"] == body and expanded["itemCount"] == 3


async def test_a_page_of_live_invoices_is_priced_in_a_fixed_number_of_queries(
    factory: Factory, engine: AsyncEngine
) -> None:
    """GET /v2/invoices prices its whole page together: the statements do not grow with the page, and each
    invoice gets the totals it has alone."""
    plan, _, _ = await metered_plan(factory)
    feb28 = datetime(2026, 2, 28, tzinfo=UTC)
    invoices = []
    for n in range(4):
        sub = await factory.subscription(plan)
        invoices.append(await factory.invoice(sub, period_start=ANCHOR, period_end=feb28))
        await calls(factory, sub.customer_id, *(ANCHOR + timedelta(hours=h) for h in range(n)))
    frozen = await factory.invoice(
        await factory.subscription(plan), status="ISSUED", subtotal=Decimal(7), grand_total=Decimal(7)
    )
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    async def priced(page: list[Invoice]) -> tuple[list[Totals], int]:
        async with session_factory(engine)() as session:
            connection = await session.connection()
            statements.clear()
            event.listen(connection.sync_connection, "before_cursor_execute", record)
            try:
                return await invoice_totals.current_totals_many(session, page), len(statements)
            finally:
                event.remove(connection.sync_connection, "before_cursor_execute", record)

    one, one_count = await priced(invoices[:1])
    page, page_count = await priced([*invoices, frozen])
    assert page_count == one_count
    assert [t.grand_total for t in page] == [Decimal(20), Decimal("20.5"), Decimal(21), Decimal("21.5"), 7]
    assert page[0] == one[0] and [t.item_count for t in page[:4]] == [2, 2, 2, 2]


async def test_list_filters_pages_and_orders_newest_first(
    aclient: httpx.AsyncClient, factory: Factory, merchant: NewMerchant
) -> None:
    customer = await factory.customer()
    first = await factory.subscription(customer=customer)
    second = await factory.subscription()
    paid = await factory.invoice(first, sequence_number=1, status="PAID")
    open_ = await factory.invoice(first, sequence_number=2, status="ACTIVE")
    other = await factory.invoice(second, sequence_number=1, status="ACTIVE")

    async def ids(**params: Any) -> list[str]:
        response = await aclient.get("/v2/invoices", params=params)
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["data"]]

    assert await ids() == [other.id, open_.id, paid.id]
    assert await ids(status="ACTIVE") == [other.id, open_.id]
    assert await ids(subscriptionId=first.id) == [open_.id, paid.id]
    assert await ids(customerId=customer.id) == [open_.id, paid.id]
    assert await ids(subscriptionId=first.id, status="PAID") == [paid.id]
    assert await ids(merchantId=merchant.merchant_id, limit=1, offset=1) == [open_.id]
    assert await ids(subscriptionId="sub_unknown") == []
    page = (await aclient.get("/v2/invoices", params={"limit": 2})).json()
    assert page["object"] == "list"
    assert page["pagination"] == {"limit": 2, "offset": 0, "total": 3, "hasMore": True}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "OPEN"}, "status"),
        ({"status": "active"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 10_001}, "offset"),
        ({"nextActionAt": "soon"}, "nextActionAt"),
    ],
)
def test_list_rejects_bad_parameters(client: httpx.Client, params: dict[str, Any], field: str) -> None:
    assert field in field_errors(client.get("/v2/invoices", params=params))


def test_list_for_another_merchant_or_the_platform_queue_is_forbidden(
    sdk: Paygentic, client: httpx.Client, other_merchant: NewMerchant
) -> None:
    assert_error(
        client.get("/v2/invoices", params={"merchantId": other_merchant.merchant_id}), 403, "forbidden"
    )
    with pytest.raises(errors.Error) as caught:
        sdk.invoices_v2.list(request={"next_action_at": "ready"})
    assert caught.value.status_code == 403 and "nextActionAt" in caught.value.message


async def test_other_merchants_invoices_are_not_found(
    aclient: httpx.AsyncClient, other_aclient: httpx.AsyncClient, factory: Factory
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub)
    await factory.line_item(invoice, sub)
    for path in [f"/v2/invoices/{invoice.id}", f"/v2/invoices/{invoice.id}/lineItems"]:
        assert_error(await other_aclient.get(path), 404, "not_found")
    assert_error(await other_aclient.get("/v2/invoices/lineItems", params={"invoiceId": invoice.id}), 404)
    assert_error(await other_aclient.get("/v2/invoices/lineItems", params={"subscriptionId": sub.id}), 404)
    assert (await other_aclient.get("/v2/invoices")).json()["data"] == []
    assert (await other_aclient.get("/v2/invoices", params={"subscriptionId": sub.id})).json()["data"] == []
    assert (await aclient.get(f"/v2/invoices/{invoice.id}")).status_code == 200


def test_unknown_invoice_is_a_typed_404(sdk: Paygentic) -> None:
    with pytest.raises(errors.Error) as caught:
        sdk.invoices_v2.get(id="inv_missing")
    assert caught.value.status_code == 404 and "inv_missing" in caught.value.message


# ---- invoice line items: token paging ---------------------------------------------------------------------


async def test_token_paging_walks_every_line_once(
    sdk: Paygentic, aclient: httpx.AsyncClient, factory: Factory
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub, status="ISSUED")  # stored lines: frozen
    # Positions tie on purpose: the token must order by (position, id) and never repeat or skip a line.
    made = [await factory.line_item(invoice, sub, position=p // 2, display_name=f"l{p}") for p in range(5)]
    expected = [li.id for li in sorted(made, key=lambda li: (li.position, li.id))]

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = await sdk.invoices_v2.get_line_items_async(id=invoice.id, limit=2, page_token=token)
        assert page.total_count == 5
        seen += [li.event_id for li in page.line_items]
        pages += 1
        next_token = page.next_page_token
        assert next_token is None or isinstance(next_token, str)
        token = next_token
        if token is None:
            break
    assert (seen, pages) == (expected, 3)

    expanded: list[str] = []
    params: dict[str, Any] = {"expand": "lineItems", "lineItemsLimit": 3}
    while True:
        lines = (await aclient.get(f"/v2/invoices/{invoice.id}", params=params)).json()["lineItems"]
        expanded += [li["eventId"] for li in lines["lineItems"]]
        if lines["nextPageToken"] is None:
            break
        params["lineItemsPageToken"] = lines["nextPageToken"]
    assert expanded == expected


async def test_empty_invoice_has_an_empty_last_page(aclient: httpx.AsyncClient, factory: Factory) -> None:
    invoice = await factory.invoice(await factory.subscription())
    body = (await aclient.get(f"/v2/invoices/{invoice.id}/lineItems")).json()
    assert body == {"invoiceId": invoice.id, "lineItems": [], "totalCount": 0, "nextPageToken": None}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        _b64(b"not json"),
        _b64(b'{"a": 1}'),
        _b64(b'["inv_other", 0, "li_x"]'),
        _b64(b'[null, "0", 7]'),
    ],
)
async def test_invalid_page_tokens_are_400(aclient: httpx.AsyncClient, factory: Factory, token: str) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub)
    await factory.line_item(invoice, sub)
    response = await aclient.get(f"/v2/invoices/{invoice.id}/lineItems", params={"pageToken": token})
    assert "pageToken" in field_errors(response)
    response = await aclient.get(
        f"/v2/invoices/{invoice.id}", params={"expand": "lineItems", "lineItemsPageToken": token}
    )
    assert "lineItemsPageToken" in field_errors(response)


async def test_token_of_another_invoice_is_refused(aclient: httpx.AsyncClient, factory: Factory) -> None:
    sub = await factory.subscription()
    first = await factory.invoice(sub, sequence_number=1, status="ISSUED")
    second = await factory.invoice(sub, sequence_number=2, status="ISSUED")
    for p in range(2):
        await factory.line_item(first, sub, position=p)
    token = (await aclient.get(f"/v2/invoices/{first.id}/lineItems", params={"limit": 1})).json()[
        "nextPageToken"
    ]
    assert token
    assert "pageToken" in field_errors(
        await aclient.get(f"/v2/invoices/{second.id}/lineItems", params={"pageToken": token})
    )


@pytest.mark.parametrize(
    ("suffix", "params", "field"),
    [
        ("/lineItems", {"limit": 0}, "limit"),
        ("/lineItems", {"limit": 1001}, "limit"),
        ("", {"expand": "lineItems", "lineItemsLimit": 1001}, "lineItemsLimit"),
        ("", {"expand": "customer"}, "expand"),
    ],
)
async def test_line_item_paging_bounds(
    aclient: httpx.AsyncClient, factory: Factory, suffix: str, params: dict[str, Any], field: str
) -> None:
    invoice = await factory.invoice(await factory.subscription())
    assert field in field_errors(await aclient.get(f"/v2/invoices/{invoice.id}{suffix}", params=params))


async def test_invoice_line_item_mapping(aclient: httpx.AsyncClient, factory: Factory) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub, status="DRAFT")
    fee = await factory.fee(name="Platform", description="Monthly platform fee")
    await factory.line_item(
        invoice, sub, position=0, fee_id=fee.id, unit_price=Decimal("49"), tax_rate=Decimal("0.1")
    )
    await factory.line_item(
        invoice,
        sub,
        position=1,
        type="metered",
        billable_metric_id=(await factory.metric()).id,
        quantity=None,
        metered_quantity=Decimal(1000),
        unit_price=Decimal("0.000012"),
        subtotal=Decimal("0.012"),
    )
    await factory.line_item(
        invoice,
        sub,
        position=2,
        type="discount",
        fee_id=fee.id,
        unit_price=Decimal("-5"),
        display_name="Grant",
    )
    manual = await factory.line_item(
        invoice, sub, position=3, type="manual", display_name="Setup", description="One-off setup"
    )
    items = (await aclient.get(f"/v2/invoices/{invoice.id}/lineItems")).json()["lineItems"]
    by_type = {i["eventType"]: i for i in items}
    assert [i["eventType"] for i in items] == ["fee", "usage", "discount", "fee"]

    assert items[0] | {"eventId": "x"} == {
        "eventType": "fee",
        "eventId": "x",
        "eventSourceId": fee.id,
        "billableMetricId": fee.id,
        "invoiceDisplayName": "Platform fee",
        "lineItemType": "charge",
        "meterEventId": "",
        "metricName": "Platform",
        "metricDescription": "Monthly platform fee",
        "metricUnit": "charge",
        "quantity": 1,
        "unitPrice": "49.00",
        "totalPrice": "49.00",
        "totalTax": "4.90",
        "totalAmount": "53.90",
        "taxRate": 0.1,
        "priceId": None,
        "periodStart": items[0]["periodStart"],
        "periodEnd": items[0]["periodEnd"],
        "paymentTerm": None,
    }
    usage = by_type["usage"]
    assert (usage["quantity"], usage["unitPrice"], usage["totalPrice"], usage["metricUnit"]) == (
        1000,
        "0.000012",
        "0.01",
        "calls",
    )
    assert (by_type["discount"]["lineItemType"], by_type["discount"]["totalAmount"]) == ("refund", "-5.00")
    assert (items[3]["eventSourceId"], items[3]["metricName"], items[3]["metricDescription"]) == (
        manual.id,
        "Setup",
        "One-off setup",
    )


# ---- billing line items (GET /v2/invoices/lineItems) ---------------------------------------------------


async def test_list_line_items_through_sdk(sdk: Paygentic, factory: Factory) -> None:
    sub = await factory.subscription()
    closed = await factory.invoice(sub, sequence_number=1, status="PAID")
    active = await factory.invoice(sub, sequence_number=2, status="ACTIVE")
    invoiced = await factory.line_item(closed, sub, unit_price=Decimal("49"), status="invoiced")
    metered = await factory.line_item(
        active, sub, type="metered", status="pending", quantity=Decimal(3), unit_price=Decimal("0.005")
    )
    manual = await factory.line_item(active, sub, type="manual", status="pending", position=1)

    everything = await sdk.invoices_v2.list_line_items_async(request={"subscription_id": sub.id})
    assert everything.total_count == 3 and everything.object == "list"
    assert {li.id for li in everything.data} == {invoiced.id, metered.id, manual.id}
    assert (everything.summary.fee_subtotal, everything.summary.metered_estimated_subtotal) == (
        "59.00",
        "0.02",
    )
    assert everything.summary.currency == "USD"

    pending = await sdk.invoices_v2.list_line_items_async(
        request={"subscription_id": sub.id, "status": "pending"}
    )
    assert {li.id for li in pending.data} == {metered.id, manual.id}
    on_invoice = await sdk.invoices_v2.list_line_items_async(request={"invoice_id": closed.id})
    assert [li.id for li in on_invoice.data] == [invoiced.id]
    assert on_invoice.data[0].invoice_id == closed.id and on_invoice.data[0].unit_price == "49.00"
    paged = await sdk.invoices_v2.list_line_items_async(
        request={"subscription_id": sub.id, "limit": 1, "offset": 2}
    )
    assert len(paged.data) == 1 and paged.total_count == 3


async def test_line_item_wire_shape(aclient: httpx.AsyncClient, factory: Factory) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub)
    line = await factory.line_item(
        invoice,
        sub,
        type="metered",
        status="pending",
        quantity=None,
        metered_quantity=Decimal("1500"),
        unit_price=Decimal("0.000012"),
        subtotal=Decimal(0),
        payment_term="in_arrears",
    )
    body = (await aclient.get("/v2/invoices/lineItems", params={"invoiceId": invoice.id})).json()
    assert body["totalCount"] == 1
    assert body["summary"] == {"feeSubtotal": "0.00", "meteredEstimatedSubtotal": "0.00", "currency": "USD"}
    item = body["data"][0]
    assert item["id"] == line.id and item["customerId"] == sub.customer_id
    assert (item["quantity"], item["meteredQuantity"], item["unitPrice"]) == (None, "1500", "0.000012")
    assert (item["subtotal"], item["taxesTotal"], item["total"]) == ("0.00", None, "0.00")
    assert (item["paymentTerm"], item["status"], item["type"]) == ("in_arrears", "pending", "metered")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "subscriptionId"),
        ({"status": "pending"}, "subscriptionId"),
        ({"invoiceId": "inv_x", "status": "pending"}, "status"),
        ({"subscriptionId": "sub_x", "status": "open"}, "status"),
        ({"subscriptionId": "sub_x", "limit": 1001}, "limit"),
        ({"subscriptionId": "sub_x", "limit": 0}, "limit"),
        ({"subscriptionId": "sub_x", "offset": 10_001}, "offset"),
    ],
)
def test_list_line_items_rejects_bad_parameters(
    client: httpx.Client, params: dict[str, Any], field: str
) -> None:
    assert field in field_errors(client.get("/v2/invoices/lineItems", params=params))


def test_list_line_items_of_unknown_subscription_is_404(sdk: Paygentic) -> None:
    with pytest.raises(errors.Error) as caught:
        sdk.invoices_v2.list_line_items(request={"subscription_id": "sub_missing"})
    assert caught.value.status_code == 404


# ---- manual line items (POST /v2/invoices/lineItems) -----------------------------------------------------


def manual(target: dict[str, str], **overrides: object) -> dict[str, object]:
    return {"displayName": "Setup", "currency": "USD", "quantity": 2, "unitPrice": 29.99} | target | overrides


async def test_manual_line_item_through_sdk(sdk: Paygentic, factory: Factory) -> None:
    sub = await factory.subscription()
    active = await factory.invoice(sub, period_end=datetime.now(UTC) + timedelta(days=10))
    item = await sdk.invoices_v2.create_line_item_async(
        display_name="Onboarding",
        currency="USD",
        quantity=2,
        unit_price=29.99,
        subscription_id=sub.id,
        description="Two onboarding sessions",
    )
    assert (item.type, item.status, item.subscription_id, item.invoice_id) == (
        "manual",
        "pending",
        sub.id,
        active.id,
    )
    assert (item.unit_price, item.quantity, item.subtotal, item.total) == ("29.99", "2", "59.98", "59.98")
    assert item.description == "Two onboarding sessions" and item.taxes_total is None
    listed = await sdk.invoices_v2.list_line_items_async(request={"subscription_id": sub.id})
    assert [li.id for li in listed.data] == [item.id]

    credit = await sdk.invoices_v2.create_line_item_async(
        display_name="Goodwill credit", currency="USD", quantity=1, unit_price=-10.5, invoice_id=active.id
    )
    assert (credit.invoice_id, credit.unit_price, credit.total) == (active.id, "-10.50", "-10.50")
    lines = (await sdk.invoices_v2.get_line_items_async(id=active.id)).line_items
    assert [(li.event_id, li.line_item_type) for li in lines] == [(item.id, "charge"), (credit.id, "refund")]


async def test_manual_line_joins_the_active_invoice_only_for_its_period(
    aclient: httpx.AsyncClient, factory: Factory
) -> None:
    sub = await factory.subscription()
    start = datetime(2026, 5, 1, tzinfo=UTC)
    active = await factory.invoice(sub, period_start=start, period_end=start + timedelta(days=31))
    inside = await aclient.post(
        "/v2/invoices/lineItems", json=manual({"subscriptionId": sub.id}, invoiceAt="2026-05-20T00:00:00Z")
    )
    later = await aclient.post(
        "/v2/invoices/lineItems", json=manual({"subscriptionId": sub.id}, invoiceAt="2026-06-01T00:00:00Z")
    )
    assert inside.status_code == later.status_code == 201, later.text
    assert inside.json()["invoiceId"] == active.id
    assert later.json()["invoiceId"] is None and later.json()["invoiceAt"] == "2026-06-01T00:00:00.000Z"


async def test_a_line_posted_while_the_next_period_opens_joins_that_period(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine
) -> None:
    """open_period holds the subscription FOR UPDATE while it makes the next invoice ACTIVE; a line posted
    meanwhile waits for it and joins the new invoice, instead of waiting unattached until the period after."""
    sub = await factory.subscription()
    start = datetime(2026, 5, 1, tzinfo=UTC)
    await factory.invoice(sub, period_start=start, period_end=start + timedelta(days=31), status="CLOSING")
    following = await factory.invoice(
        sub,
        sequence_number=2,
        status="DRAFT",  # stands in for "not created yet": the transaction below makes it the open one
        period_start=start + timedelta(days=31),
        period_end=start + timedelta(days=61),
    )
    async with engine.connect() as conn:  # plays open_period for period 2
        async with conn.begin():
            await conn.execute(select(Subscription.id).where(Subscription.id == sub.id).with_for_update())
            posting = asyncio.ensure_future(
                aclient.post(
                    "/v2/invoices/lineItems",
                    json=manual({"subscriptionId": sub.id}, invoiceAt="2026-06-05T00:00:00Z"),
                )
            )
            await asyncio.sleep(0.5)
            assert not posting.done(), posting.result().text
            await conn.execute(update(Invoice).where(Invoice.id == following.id).values(status="ACTIVE"))
    response = await posting
    assert response.status_code == 201, response.text
    assert response.json()["invoiceId"] == following.id


async def test_manual_line_without_an_open_period_waits_pending(
    aclient: httpx.AsyncClient, factory: Factory
) -> None:
    sub = await factory.subscription(status="pending_payment")
    await factory.invoice(sub, sequence_number=0, status="ISSUED")
    response = await aclient.post(
        "/v2/invoices/lineItems",
        json=manual(
            {"subscriptionId": sub.id}, periodStart="2026-02-01T00:00:00Z", periodEnd="2026-03-01T00:00:00"
        ),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["invoiceId"], body["status"]) == (None, "pending")
    assert (body["periodStart"], body["periodEnd"]) == (
        "2026-02-01T00:00:00.000Z",
        "2026-03-01T00:00:00.000Z",
    )


async def test_manual_line_defaults_to_the_test_clock_time(
    aclient: httpx.AsyncClient, factory: Factory
) -> None:
    clock = await factory.test_clock(current_time=datetime(2026, 2, 10, 12, tzinfo=UTC))
    sub = await factory.subscription(test_clock_id=clock.id)
    active = await factory.invoice(sub, period_start=datetime(2026, 1, 31, tzinfo=UTC))
    body = (await aclient.post("/v2/invoices/lineItems", json=manual({"subscriptionId": sub.id}))).json()
    assert body["invoiceAt"] == body["periodStart"] == body["periodEnd"] == "2026-02-10T12:00:00.000Z"
    assert body["invoiceId"] == active.id


@pytest.mark.parametrize("where", ["header", "body"])
async def test_replay_with_the_same_key_returns_the_same_item(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine, where: str
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub)
    body = manual({"invoiceId": invoice.id}, description="setup")
    headers = {"Idempotency-Key": "setup-1"} if where == "header" else {}
    if where == "body":
        body["idempotencyKey"] = "setup-1"
    first = await aclient.post("/v2/invoices/lineItems", json=body, headers=headers)
    again = await aclient.post("/v2/invoices/lineItems", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json() == first.json()
    assert await line_count(engine, sub.id) == 1


async def test_header_and_body_keys_are_the_same_key(aclient: httpx.AsyncClient, factory: Factory) -> None:
    sub = await factory.subscription()
    await factory.invoice(sub)
    first = await aclient.post(
        "/v2/invoices/lineItems", json=manual({"subscriptionId": sub.id}), headers={"Idempotency-Key": "k"}
    )
    again = await aclient.post(
        "/v2/invoices/lineItems", json=manual({"subscriptionId": sub.id}, idempotencyKey="k")
    )
    assert (first.status_code, again.status_code) == (201, 200) and again.json()["id"] == first.json()["id"]
    both = await aclient.post(
        "/v2/invoices/lineItems",
        json=manual({"subscriptionId": sub.id}, idempotencyKey="k"),
        headers={"Idempotency-Key": "k"},
    )
    assert both.status_code == 200 and both.json()["id"] == first.json()["id"]


async def test_sdk_replay_with_idempotency_header(
    sdk: Paygentic, factory: Factory, engine: AsyncEngine
) -> None:
    sub = await factory.subscription()
    await factory.invoice(sub)
    args: dict[str, Any] = {
        "display_name": "Setup",
        "currency": "USD",
        "quantity": 1,
        "unit_price": 100,
        "subscription_id": sub.id,
        "idempotency_key_param": "sdk-key",
    }
    assert (await sdk.invoices_v2.create_line_item_async(**args)).id == (
        await sdk.invoices_v2.create_line_item_async(**args)
    ).id
    assert await line_count(engine, sub.id) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"unitPrice": 30}, "unitPrice"),
        ({"quantity": 3}, "quantity"),
        ({"displayName": "Other"}, "displayName"),
        ({"description": "other"}, "description"),
        ({"periodStart": "2026-01-01T00:00:00Z"}, "periodStart"),
    ],
)
async def test_same_key_for_a_different_item_is_409(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine, change: dict[str, object], field: str
) -> None:
    sub = await factory.subscription()
    await factory.invoice(sub)
    first = manual({"subscriptionId": sub.id}, idempotencyKey="k1")
    assert (await aclient.post("/v2/invoices/lineItems", json=first)).status_code == 201
    body = assert_error(await aclient.post("/v2/invoices/lineItems", json=first | change), 409, "conflict")
    assert field in body["details"]["differingFields"]
    assert await line_count(engine, sub.id) == 1


async def test_without_a_key_every_request_is_a_new_item(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine
) -> None:
    sub = await factory.subscription()
    await factory.invoice(sub)
    for _ in range(2):
        assert (
            await aclient.post("/v2/invoices/lineItems", json=manual({"subscriptionId": sub.id}))
        ).status_code == 201
    assert await line_count(engine, sub.id) == 2


async def test_concurrent_replays_store_one_item(
    api_url: str, merchant: NewMerchant, factory: Factory, engine: AsyncEngine
) -> None:
    sub = await factory.subscription()
    await factory.invoice(sub)
    headers = {"Authorization": f"Bearer {merchant.api_key}", "Idempotency-Key": "race"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as aclient:
        responses = await asyncio.gather(
            *(
                aclient.post("/v2/invoices/lineItems", json=manual({"subscriptionId": sub.id}))
                for _ in range(8)
            )
        )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await line_count(engine, sub.id) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subscriptionId": None}, "subscriptionId"),
        ({"invoiceId": "inv_x"}, "subscriptionId"),
        ({"displayName": None}, "displayName"),
        ({"displayName": ""}, "displayName"),
        ({"displayName": "x" * 256}, "displayName"),
        ({"displayName": 7}, "displayName"),
        ({"description": "x" * 1001}, "description"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "US"}, "currency"),
        ({"currency": 840}, "currency"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": -1}, "quantity"),
        ({"quantity": "2"}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"quantity": None}, "quantity"),
        ({"quantity": 0.0000000001}, "quantity"),
        ({"quantity": 1e30}, "quantity"),
        ({"unitPrice": "29.99"}, "unitPrice"),
        ({"unitPrice": None}, "unitPrice"),
        ({"quantity": 1e15, "unitPrice": 1e15}, "unitPrice"),
        ({"invoiceAt": "tomorrow"}, "invoiceAt"),
        ({"periodStart": "2026-03-01T00:00:00Z", "periodEnd": "2026-02-01T00:00:00Z"}, "periodEnd"),
        ({"idempotencyKey": ""}, "idempotencyKey"),
        ({"idempotencyKey": "k" * 256}, "idempotencyKey"),
    ],
)
async def test_create_rejects_bad_fields(
    aclient: httpx.AsyncClient,
    factory: Factory,
    engine: AsyncEngine,
    overrides: dict[str, object],
    field: str,
) -> None:
    sub = await factory.subscription()
    await factory.invoice(sub)
    body = {k: v for k, v in (manual({"subscriptionId": sub.id}) | overrides).items() if v is not None}
    assert field in field_errors(await aclient.post("/v2/invoices/lineItems", json=body))
    assert await line_count(engine, sub.id) == 0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"quantity": NaN', "quantity"),
        ('"quantity": Infinity', "quantity"),
        ('"unitPrice": -Infinity', "unitPrice"),
    ],
)
async def test_create_rejects_non_finite_numbers(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine, raw: str, field: str
) -> None:
    sub = await factory.subscription()
    await factory.invoice(sub)
    body = {k: v for k, v in manual({"subscriptionId": sub.id}).items() if k != field}
    content = json.dumps(body)[:-1] + ", " + raw + "}"
    response = await aclient.post(
        "/v2/invoices/lineItems", content=content, headers={"content-type": "application/json"}
    )
    assert field in field_errors(response)
    assert await line_count(engine, sub.id) == 0


async def test_header_key_rules(aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine) -> None:
    sub = await factory.subscription()
    await factory.invoice(sub)
    body = manual({"subscriptionId": sub.id}, idempotencyKey="body-key")
    assert "idempotencyKey" in field_errors(
        await aclient.post("/v2/invoices/lineItems", json=body, headers={"Idempotency-Key": "header-key"})
    )
    assert "Idempotency-Key" in field_errors(
        await aclient.post(
            "/v2/invoices/lineItems",
            json=manual({"subscriptionId": sub.id}),
            headers={"Idempotency-Key": "k" * 256},
        )
    )
    assert await line_count(engine, sub.id) == 0


@pytest.mark.parametrize("status", ["CLOSED", "CALCULATING", "DRAFT", "ISSUED", "PAID", "CANCELLED"])
async def test_invoice_must_be_open(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine, status: str
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub, status=status)
    body = assert_error(
        await aclient.post("/v2/invoices/lineItems", json=manual({"invoiceId": invoice.id})), 409, "conflict"
    )
    assert status in body["message"]
    assert await line_count(engine, sub.id) == 0


async def test_closing_invoice_still_takes_lines(aclient: httpx.AsyncClient, factory: Factory) -> None:
    # Even the final invoice of a terminated subscription, while its grace window runs.
    sub = await factory.subscription(status="terminated")
    invoice = await factory.invoice(sub, status="CLOSING")
    response = await aclient.post("/v2/invoices/lineItems", json=manual({"invoiceId": invoice.id}))
    assert response.status_code == 201 and response.json()["invoiceId"] == invoice.id


async def test_subscription_rules(aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine) -> None:
    terminated = await factory.subscription(status="terminated")
    assert_error(
        await aclient.post("/v2/invoices/lineItems", json=manual({"subscriptionId": terminated.id})), 409
    )
    legacy = await factory.subscription(plan=await factory.plan(billing_version=0))
    body = assert_error(
        await aclient.post("/v2/invoices/lineItems", json=manual({"subscriptionId": legacy.id})), 422
    )
    assert "billingVersion" in body["message"]
    euro = await factory.subscription(plan=await factory.plan(currency="EUR"))
    body = assert_error(
        await aclient.post("/v2/invoices/lineItems", json=manual({"subscriptionId": euro.id})), 422
    )
    assert "EUR" in body["message"]
    for sub in (terminated, legacy, euro):
        assert await line_count(engine, sub.id) == 0


async def test_other_merchants_targets_are_not_found(
    other_aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub)
    for target in ({"subscriptionId": sub.id}, {"invoiceId": invoice.id}, {"subscriptionId": "sub_nope"}):
        assert_error(
            await other_aclient.post("/v2/invoices/lineItems", json=manual(target)), 404, "not_found"
        )
    assert await line_count(engine, sub.id) == 0


async def test_keys_are_per_subscription(aclient: httpx.AsyncClient, factory: Factory) -> None:
    first, second = await factory.subscription(), await factory.subscription()
    for sub in (first, second):
        await factory.invoice(sub)
    a = await aclient.post(
        "/v2/invoices/lineItems", json=manual({"subscriptionId": first.id}, idempotencyKey="same")
    )
    b = await aclient.post(
        "/v2/invoices/lineItems", json=manual({"subscriptionId": second.id}, idempotencyKey="same")
    )
    assert (a.status_code, b.status_code) == (201, 201) and a.json()["id"] != b.json()["id"]


async def test_generated_line_keys_do_not_collide_with_caller_keys(
    aclient: httpx.AsyncClient, factory: Factory
) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub)
    await factory.line_item(invoice, sub, idempotency_key=f"{invoice.id}:0")
    response = await aclient.post(
        "/v2/invoices/lineItems", json=manual({"subscriptionId": sub.id}, idempotencyKey=f"{invoice.id}:0")
    )
    assert response.status_code == 201, response.text


# ---- paygentic-sdk 0.6.3 --------------------------------------------------------------------------------

SDK063 = """
import json, sys
from paygentic_sdk import Paygentic
url, key, invoice_id, subscription_id = sys.argv[1:5]
out = {}
def run(name, call):
    try:
        out[name] = call().model_dump(mode="json", by_alias=True)
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"
with Paygentic(server_url=url, bearer_auth=key) as p:
    run("get", lambda: p.invoices_v2.get(id=invoice_id, expand="lineItems"))
    run("list", lambda: p.invoices_v2.list(request={"subscription_id": subscription_id, "offset": 0}))
    run("get_line_items", lambda: p.invoices_v2.get_line_items(id=invoice_id))
    run("list_line_items", lambda: p.invoices_v2.list_line_items(request={"invoice_id": invoice_id}))
    run("create_line_item", lambda: p.invoices_v2.create_line_item(
        display_name="Setup", currency="USD", quantity=1, unit_price=5, subscription_id=subscription_id))
print(json.dumps(out))
"""


async def test_sdk_063_parses_invoices(api_url: str, merchant: NewMerchant, factory: Factory) -> None:
    sub = await factory.subscription()
    invoice = await factory.invoice(sub, status="DRAFT", payment_session_id=None)
    await factory.line_item(invoice, sub)
    run = await asyncio.to_thread(
        subprocess.run,
        [sdk063_python(), "-c", SDK063, api_url, merchant.api_key, invoice.id, sub.id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(isinstance(v, dict) for v in out.values()), out
    assert out["get"]["customerId"] == sub.customer_id
    assert out["get"]["lineItems"]["totalCount"] == 1
    assert out["list"]["pagination"]["total"] == 1 and out["list"]["data"][0]["customerId"] == sub.customer_id
    assert out["list_line_items"]["data"][0]["customerId"] == sub.customer_id
    assert out["create_line_item"]["customerId"] == sub.customer_id
