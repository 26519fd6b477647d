"""graduated and package prices end to end (docs/api-extensions.md): created through the API, billed exactly
on the period invoice at tier boundaries and package edges, and shown on the live invoice and the portal
while the period runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.workflows.billing_harness import GRACE, Billing, assert_recomputable

D = Decimal
START = datetime(2028, 1, 1, tzinfo=UTC)
PERIOD_END = datetime(2028, 2, 1, tzinfo=UTC)
GRADUATED = {
    "tiers": [
        {"upTo": "100", "unitPrice": "0.10", "flatPrice": "2"},
        {"upTo": "1000", "unitPrice": "0.05"},
        {"upTo": None, "unitPrice": "0.01", "flatPrice": "1"},
    ]
}
VOLUME = {"tiers": [{"upTo": "100", "unitPrice": "5"}, {"upTo": None, "unitPrice": "3"}]}


def package(rounding: str) -> dict[str, Any]:
    return {"packageSize": "1000", "packagePrice": "5", "rounding": rounding}


# (tokens, graduated (quantity, unitPrice, subtotal)), (calls, package (packages, subtotal)), rounding
CASES: dict[str, tuple[int, tuple[str, str, str], int, tuple[str, str], str]] = {
    "inside the first band, one started package": (
        40, ("40", "0.15", "6.00"), 1, ("1", "5.00"), "up",  # 40 × 0.10 + flat 2
    ),
    "on the first band's edge, a full package": (
        100, ("100", "0.12", "12.00"), 1000, ("1", "5.00"), "up",
    ),
    "one unit into band two, one unit into package two": (
        101, ("101", "0.119306931", "12.05"), 1001, ("2", "10.00"), "up",
    ),
    "on band two's edge; down keeps complete packages": (
        1000, ("1000", "0.057", "57.00"), 2999, ("2", "10.00"), "down",
    ),
    "into the last band (its flat price once); below one package, down": (
        1001, ("1001", "0.057952048", "58.01"), 999, ("0", "0.00"), "down",
    ),
}  # fmt: skip


@pytest.mark.parametrize("tokens,graduated,calls,packaged,rounding", CASES.values(), ids=CASES)
async def test_graduated_and_package_on_live_and_period_invoices(
    billing: Billing,
    tokens: int,
    graduated: tuple[str, str, str],
    calls: int,
    packaged: tuple[str, str],
    rounding: str,
) -> None:
    product = await billing.product()
    token_metric = await billing.metric(product, "llm.tokens", unit="tokens")
    call_metric = await billing.metric(product, "api.calls", unit="calls")
    prices = [
        await billing.price(
            billableMetricId=token_metric, model="graduated", paymentTerm="in_arrears",
            invoiceDisplayName="Tokens", properties=GRADUATED,
        ),
        await billing.price(
            billableMetricId=call_metric, model="package", paymentTerm="in_arrears",
            invoiceDisplayName="Calls", properties=package(rounding),
        ),
    ]  # fmt: skip
    plan = await billing.plan(product, prices)
    customer = await billing.customer()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, customer, START, testClockId=clock)
    # Split across two events each, so the period sum (not one event) picks the band and the packages.
    for value, event_type in ((tokens, "llm.tokens"), (calls, "api.calls")):
        first = value // 2
        await billing.event(customer, event_type, START + timedelta(days=1), value=first)
        await billing.event(customer, event_type, START + timedelta(days=2), value=value - first)
    await billing.advance(clock, START + timedelta(days=10))

    # While the period runs: the live invoice and the portal price the usage so far as the close will.
    invoice = (await billing.invoices(sub["id"]))[1]
    live = await billing.get(f"/v2/invoices/{invoice.id}/lineItems")
    by_name = {line["invoiceDisplayName"]: line for line in live["lineItems"]}
    assert (by_name["Tokens"]["unitPrice"], by_name["Tokens"]["totalPrice"]) == graduated[1:]
    assert (str(by_name["Calls"]["quantity"]), by_name["Calls"]["totalPrice"]) == packaged
    assert by_name["Calls"]["unitPrice"] == "5.00"
    expected_total = D(graduated[2]) + D(packaged[1])
    assert D((await billing.get(f"/v2/invoices/{invoice.id}"))["grandTotal"]) == expected_total

    link = (await billing.post(f"/v0/subscriptions/{sub['id']}/portal", {}))["url"]
    page = await billing.http.get("/portal/" + link.split("/portal/", 1)[1])
    assert page.status_code == 200
    usage = page.text.split("Usage this period", 1)[1].split("Invoices", 1)[0]
    assert f"{tokens} tokens" in usage and f"{calls} call{'' if calls == 1 else 's'}" in usage
    assert "5.00 USD per 1000 calls" in usage
    assert f">{graduated[2]} USD<" in usage and f">{packaged[1]} USD<" in usage

    await billing.advance(clock, PERIOD_END + GRACE)
    invoice = (await billing.invoices(sub["id"]))[1]
    lines = await billing.lines(invoice.id)
    assert [
        (line.display_name, line.quantity, line.metered_quantity, line.unit_price, line.subtotal)
        for line in lines
    ] == [
        ("Tokens", D(graduated[0]), D(tokens), D(graduated[1]), D(graduated[2])),
        ("Calls", D(packaged[0]), D(calls), D(5), D(packaged[1])),
    ]
    assert (invoice.status, invoice.grand_total) == ("ISSUED", expected_total)
    assert_recomputable(invoice, lines)


@pytest.mark.parametrize(("calls", "subtotal"), [(100, "500.00"), (101, "303.00")])
async def test_volume_bands_price_every_unit_at_the_band_of_the_period(
    billing: Billing, calls: int, subtotal: str
) -> None:
    product = await billing.product()
    metric = await billing.metric(product, "api.calls", unit="calls")
    price = await billing.price(
        billableMetricId=metric, model="volume", paymentTerm="in_arrears", invoiceDisplayName="Calls",
        properties=VOLUME,
    )  # fmt: skip
    plan = await billing.plan(product, [price])
    customer = await billing.customer()
    clock = await billing.clock(START)
    sub = await billing.subscribe(plan, customer, START, testClockId=clock)
    await billing.event(customer, "api.calls", START + timedelta(days=1), value=60)
    await billing.event(customer, "api.calls", START + timedelta(days=2), value=calls - 60)
    await billing.advance(clock, PERIOD_END + GRACE)
    invoice = (await billing.invoices(sub["id"]))[1]
    [line] = await billing.lines(invoice.id)
    assert (line.quantity, line.subtotal, invoice.grand_total) == (D(calls), D(subtotal), D(subtotal))
