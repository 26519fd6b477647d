"""Top-ups for an existing customer (`POST /v0/customers/{id}/topups`) paid through the sandbox checkout:
the subscription's workflow records the payment of the top-up invoice and credits the wallet exactly once;
a declined, expired or cancelled one credits nothing. Real API, workflow, database and ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from activities.subscription import SubscriptionActivities
from db import ledger as ledger_db
from db.session import session_factory
from tests.workflows.billing_harness import GRACE, Billing, eventually
from tests.workflows.test_funding import audit, balances, metered_only_plan, topup_credits
from workflows.subscription_messages import LoadState

JAN31 = datetime(2026, 1, 31, tzinfo=UTC)
NANOS = 10**9


async def active(billing: Billing, **extra: Any) -> tuple[str, dict[str, Any]]:
    """A customer whose pay-as-you-go subscription is active (nothing upfront) and whose wallet is empty."""
    customer = await billing.customer()
    # Started now (or on its clock): no periods to catch up with.
    started = JAN31 if "testClockId" in extra else datetime.now(UTC)
    sub = await billing.subscribe(await metered_only_plan(billing), customer, started, **extra)
    assert sub["status"] == "active"
    return customer, sub


async def topup(billing: Billing, customer: str, amount: str, **extra: Any) -> dict[str, Any]:
    return dict(await billing.post(f"/v0/customers/{customer}/topups", {"amount": amount} | extra, 201))


async def press(billing: Billing, session_id: str, button: str) -> int:
    response = await billing.http.post(f"/checkout/{session_id}/{button}", headers={"Authorization": ""})
    return response.status_code


async def test_a_top_up_paid_on_the_checkout_page_credits_the_wallet_once(billing: Billing) -> None:
    customer, sub = await active(billing)
    first = await topup(billing, customer, "25.00")
    page = await billing.http.get(f"/checkout/{first['paymentSessionId']}", headers={"Authorization": ""})
    assert page.status_code == 200
    assert "Wallet top-up" in page.text and "25.00" in page.text

    assert await press(billing, first["paymentSessionId"], "complete") == 303
    assert await balances(billing, customer) == {("USD", "customer_main"): 25 * NANOS}
    got = await billing.get(f"/v0/customers/{customer}/topups/{first['id']}")
    assert got["status"] == "completed" and got["completedAt"] is not None
    # Paying again: the page says it is paid, the API refuses, the signal is a no-op.
    assert await press(billing, first["paymentSessionId"], "complete") == 200
    again = await billing.http.post(f"/v0/paymentSessions/{first['paymentSessionId']}/complete")
    assert again.status_code == 409
    await billing.pay({"id": sub["id"], "payment": {"invoiceId": first["id"], **_session(first)}})

    # A second top-up through the API twin of the button.
    second = await topup(billing, customer, "4.50")
    done = await billing.post(f"/v0/paymentSessions/{second['paymentSessionId']}/complete", {}, 200)
    assert done["status"] == "completed"

    async def both() -> None:
        assert await balances(billing, customer) == {("USD", "customer_main"): 29_500_000_000}

    await eventually(both)
    assert await topup_credits(billing, first["id"]) == 1 and await topup_credits(billing, second["id"]) == 1
    view = await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert (view["walletBalance"], view["status"]) == ("29.50", "active")
    assert view["payment"]["invoiceId"] != first["id"]  # still Invoice 0's
    invoices = await billing.invoices(sub["id"])
    assert [(i.sequence_number, i.status) for i in invoices] == [
        (-2, "PAID"),
        (-1, "PAID"),
        (0, "PAID"),
        (1, "ACTIVE"),
    ]
    # The workflow's state loads around the top-up invoices (a reconciler restart reads it this way).
    state = await SubscriptionActivities(billing.engine, GRACE, "http://accrue.test").load_subscription_state(
        LoadState(subscription_id=sub["id"])
    )
    assert (state.needs_invoice0, state.current_period, state.status) == (False, 1, "active")
    assert await audit(billing) == []


def _session(topup: dict[str, Any]) -> dict[str, Any]:
    return {"paymentSessionId": topup["paymentSessionId"]}


async def test_declined_expired_and_cancelled_top_ups_credit_nothing(billing: Billing) -> None:
    clock = await billing.clock(JAN31)
    customer, sub = await active(billing, testClockId=clock, sessionExpiryMinutes=30)
    declined = await topup(billing, customer, "10.00")
    assert await press(billing, declined["paymentSessionId"], "decline") == 303
    got = await billing.get(f"/v0/customers/{customer}/topups/{declined['id']}")
    assert got["status"] == "declined"  # still payable until it expires
    invoice = next(i for i in await billing.invoices(sub["id"]) if i.id == declined["id"])
    assert invoice.status == "ISSUED"  # a top-up invoice does not go PAYMENT_FAILED

    await billing.advance(clock, JAN31 + timedelta(minutes=31))
    got = await billing.get(f"/v0/customers/{customer}/topups/{declined['id']}")
    assert got["status"] == "expired"
    assert await press(billing, declined["paymentSessionId"], "complete") == 410
    late = await billing.http.post(f"/v0/paymentSessions/{declined['paymentSessionId']}/complete")
    assert late.status_code == 409

    # An open one when the subscription is terminated: cancelled with it.
    pending = await topup(billing, customer, "7.00")
    await billing.post(f"/v0/subscriptions/{sub['id']}/termination", {"reason": "done"}, 200)
    got = await billing.get(f"/v0/customers/{customer}/topups/{pending['id']}")
    assert got["status"] == "cancelled"
    assert next(i for i in await billing.invoices(sub["id"]) if i.id == pending["id"]).status == "CANCELLED"
    assert await press(billing, pending["paymentSessionId"], "complete") == 410
    cancelled = {e["id"]: e["status"] for e in await billing.outbox("invoice.cancelled.v0")}
    assert cancelled == {pending["id"]: "CANCELLED", declined["id"]: "CANCELLED"}
    got = await billing.get(f"/v0/customers/{customer}/topups/{declined['id']}")
    assert got["status"] == "expired"  # it had lapsed before the termination

    assert await balances(billing, customer) == {}
    assert (
        await topup_credits(billing, declined["id"]) == 0 and await topup_credits(billing, pending["id"]) == 0
    )
    async with session_factory(billing.engine)() as session:
        assert await ledger_db.audit(session, billing.merchant.merchant_id) == []
