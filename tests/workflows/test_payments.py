"""The sandbox payment provider end to end on the time-skipping server: the hosted checkout page and
`POST /v0/paymentSessions/{id}/complete|decline`, each recorded by the subscription's real workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant, create_merchant
from db.models import PaymentSession, TestClock
from db.session import session_factory
from domain.ids import new_id
from tests.factories import Factory
from tests.helpers import assert_error
from tests.workflows.billing_harness import GRACE, Billing, eventually

JAN31 = datetime(2026, 1, 31, tzinfo=UTC)
SUCCESS = "https://merchant.example/welcome?plan=pro"
FAILURE = "https://merchant.example/payment-failed"


async def fee_plan(billing: Billing) -> str:
    """$49 platform fee in advance (Invoice 0) and tokens at $0.001 in arrears."""
    plan, _ = await billing.quickstart_catalog()
    return plan


async def pending(billing: Billing, **extra: Any) -> tuple[dict[str, Any], str]:
    """A clock-bound subscription waiting for its $49 Invoice 0, and its clock."""
    plan = await fee_plan(billing)
    clock = await billing.clock(JAN31)
    sub = await billing.subscribe(plan, await billing.customer(), JAN31, testClockId=clock, **extra)
    assert sub["status"] == "pending_payment"
    return sub, clock


def path_of(url: str) -> str:
    return httpx.URL(url).raw_path.decode()


async def page(billing: Billing, path: str) -> httpx.Response:
    # No API key: the checkout is opened by the payer, whose only credential is the session id.
    return await billing.http.get(path, headers={"Authorization": ""})


async def press(billing: Billing, session_id: str, button: str) -> httpx.Response:
    return await billing.http.post(f"/checkout/{session_id}/{button}", headers={"Authorization": ""})


async def state(billing: Billing, sub: dict[str, Any]) -> tuple[str, list[str]]:
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    return got["status"], [i.status for i in await billing.invoices(sub["id"])]


async def activated(billing: Billing, sub: dict[str, Any]) -> None:
    """The page answers once the payment is recorded; period 1 opens a moment later, in the workflow."""

    async def check() -> None:
        assert await state(billing, sub) == ("active", ["PAID", "ACTIVE"])

    await eventually(check)


async def test_checkout_page_shows_the_invoice_and_pay_activates(billing: Billing) -> None:
    sub, _ = await pending(billing, redirectUrls={"onSuccess": SUCCESS, "onFailure": FAILURE})
    session_id = sub["payment"]["paymentSessionId"]
    assert sub["payment"]["checkoutUrl"] == f"{billing.app.state.settings.base_url}/checkout/{session_id}"

    shown = await page(billing, path_of(sub["payment"]["checkoutUrl"]))
    assert shown.status_code == 200 and shown.headers["content-type"].startswith("text/html")
    html = shown.text
    invoice0 = (await billing.invoices(sub["id"]))[0]
    for text in (
        "SANDBOX",
        "Test Merchant",
        f"Invoice {invoice0.invoice_number}",
        "Jan 31, 2026 – Feb 28, 2026",
        "Platform fee",
        "Subtotal",
        "Tax",
        "0.00 USD",
        "Total due",
        "49.00 USD",
        "Pay (test)",
        "Decline (test)",
        f'action="/checkout/{session_id}/complete"',
        f'action="/checkout/{session_id}/decline"',
    ):
        assert text in html, text
    assert shown.headers["referrer-policy"] == "no-referrer"

    paid = await press(billing, session_id, "complete")
    assert (paid.status_code, paid.headers["location"]) == (303, SUCCESS)
    # The redirect waits for the workflow: the merchant's success page already sees an active subscription.
    await activated(billing, sub)

    after = await page(billing, f"/checkout/{session_id}")
    assert after.status_code == 200 and "Payment received" in after.text and "Pay (test)" not in after.text
    again = await press(billing, session_id, "complete")
    assert again.status_code == 200 and "Payment received" in again.text
    done = await page(billing, f"/checkout/{session_id}/done")
    assert done.status_code == 200 and "Payment received" in done.text


async def test_page_decline_keeps_invoice0_unpaid_and_a_later_pay_works(billing: Billing) -> None:
    sub, _ = await pending(billing, redirectUrls={"onSuccess": SUCCESS, "onFailure": FAILURE})
    session_id = sub["payment"]["paymentSessionId"]

    declined = await press(billing, session_id, "decline")
    assert (declined.status_code, declined.headers["location"]) == (303, FAILURE)
    assert await state(billing, sub) == ("pending_payment", ["ISSUED"])
    got = await billing.get(f"/v0/subscriptions/{sub['id']}")
    assert got["payment"]["status"] == "pending" and got["payment"]["paymentSessionId"] == session_id

    retry = await page(billing, f"/checkout/{session_id}")
    assert retry.status_code == 200 and "was declined" in retry.text and "Pay (test)" in retry.text
    done = await page(billing, f"/checkout/{session_id}/done")
    assert done.status_code == 200 and "Payment declined" in done.text
    # Declining again records nothing new and lands on the failure page again.
    twice = await press(billing, session_id, "decline")
    assert (twice.status_code, twice.headers["location"]) == (303, FAILURE)

    paid = await press(billing, session_id, "complete")
    assert (paid.status_code, paid.headers["location"]) == (303, SUCCESS)
    await activated(billing, sub)


async def test_buttons_without_redirect_urls_land_on_the_done_page(billing: Billing) -> None:
    sub, _ = await pending(billing)
    session_id = sub["payment"]["paymentSessionId"]
    waiting = await page(billing, f"/checkout/{session_id}/done")
    assert waiting.status_code == 200 and "Confirming" in waiting.text
    assert 'http-equiv="refresh"' in waiting.text
    declined = await press(billing, session_id, "decline")
    assert (declined.status_code, declined.headers["location"]) == (303, f"/checkout/{session_id}/done")
    paid = await press(billing, session_id, "complete")
    assert (paid.status_code, paid.headers["location"]) == (303, f"/checkout/{session_id}/done")
    done = await page(billing, paid.headers["location"])
    assert done.status_code == 200 and "Payment received" in done.text and "49.00 USD" in done.text


async def test_api_decline_then_complete_then_409(billing: Billing) -> None:
    sub, _ = await pending(billing)
    session_id = sub["payment"]["paymentSessionId"]
    base = f"/v0/paymentSessions/{session_id}"
    expected = {
        "object": "paymentSession",
        "id": session_id,
        "invoiceId": sub["payment"]["invoiceId"],
        "subscriptionId": sub["id"],
        "amount": "49.00",
        "currency": "USD",
        "expiresAt": "2026-01-31T04:00:00.000Z",  # sessionExpiryMinutes defaults to 240
    }

    declined = await billing.post(f"{base}/decline", {}, 200)
    assert declined == expected | {"status": "declined"}
    assert await state(billing, sub) == ("pending_payment", ["ISSUED"])
    body = assert_error(await billing.http.post(f"{base}/decline"), 409, "conflict")
    assert "is declined" in body["message"] and body["details"] == {"status": "declined"}

    completed = await billing.post(f"{base}/complete", {}, 200)
    assert completed == expected | {"status": "completed"}
    await activated(billing, sub)
    assert await billing.get(base) == expected | {"status": "completed"}

    for action in ("complete", "decline"):
        body = assert_error(await billing.http.post(f"{base}/{action}"), 409, "conflict")
        assert "is completed" in body["message"] and body["details"] == {"status": "completed"}


async def test_expiry_is_judged_on_the_subscription_clock(billing: Billing, engine: AsyncEngine) -> None:
    sub, clock = await pending(billing, sessionExpiryMinutes=60)
    session_id = sub["payment"]["paymentSessionId"]
    # The clock reads past the expiry before the workflow has heard of it: the session is already over.
    async with session_factory(engine)() as db:
        late = JAN31 + timedelta(minutes=60)
        await db.execute(update(TestClock).where(TestClock.id == clock).values(current_time=late))
        await db.commit()
        assert (await db.get_one(PaymentSession, session_id)).status == "open"
    shown = await page(billing, f"/checkout/{session_id}")
    assert shown.status_code == 410 and "expired" in shown.text and "Pay (test)" not in shown.text
    assert (await press(billing, session_id, "complete")).status_code == 410
    body = assert_error(await billing.http.post(f"/v0/paymentSessions/{session_id}/complete"), 409)
    assert "is expired" in body["message"] and body["details"] == {"status": "expired"}

    await billing.advance(clock, JAN31 + timedelta(minutes=61))
    assert await state(billing, sub) == ("terminated", ["CANCELLED"])
    async with session_factory(engine)() as db:
        assert (await db.get_one(PaymentSession, session_id)).status == "expired"
    assert (await page(billing, f"/checkout/{session_id}")).status_code == 410
    assert (await page(billing, f"/checkout/{session_id}/done")).status_code == 410


async def test_pay_just_before_expiry_works(billing: Billing) -> None:
    sub, clock = await pending(billing, sessionExpiryMinutes=60)
    session_id = sub["payment"]["paymentSessionId"]
    await billing.post(f"/v0/paymentSessions/{session_id}/decline", {}, 200)
    await billing.advance(clock, JAN31 + timedelta(minutes=59))
    assert (await billing.post(f"/v0/paymentSessions/{session_id}/complete", {}, 200))[
        "status"
    ] == "completed"
    await activated(billing, sub)


async def test_cancelled_checkout(billing: Billing) -> None:
    sub, _ = await pending(billing)
    session_id = sub["payment"]["paymentSessionId"]
    await billing.post(f"/v0/subscriptions/{sub['id']}/termination", {"reason": "Changed my mind"}, 200)
    shown = await page(billing, f"/checkout/{session_id}")
    assert shown.status_code == 410 and "cancelled" in shown.text
    body = assert_error(await billing.http.post(f"/v0/paymentSessions/{session_id}/complete"), 409)
    assert "is cancelled" in body["message"]


async def test_other_merchants_and_unknown_sessions_are_404(
    billing: Billing, other_merchant: NewMerchant
) -> None:
    sub, _ = await pending(billing)
    session_id = sub["payment"]["paymentSessionId"]
    other = {"Authorization": f"Bearer {other_merchant.api_key}"}
    for action in ("complete", "decline"):
        response = await billing.http.post(f"/v0/paymentSessions/{session_id}/{action}", headers=other)
        assert "Payment session" in assert_error(response, 404, "not_found")["message"]
        missing = await billing.http.post(f"/v0/paymentSessions/{new_id('payment_session')}/{action}")
        assert_error(missing, 404, "not_found")
    assert_error(await billing.http.get(f"/v0/paymentSessions/{session_id}", headers=other), 404)
    assert_error(
        await billing.http.post(f"/v0/paymentSessions/{session_id}/complete", headers={"Authorization": ""}),
        401,
    )
    assert await state(billing, sub) == ("pending_payment", ["ISSUED"])
    for path in (f"/checkout/{new_id('payment_session')}", "/checkout/nonsense", "/checkout/ps_x/done"):
        assert (await page(billing, path)).status_code == 404


async def test_live_keys_get_403_and_live_checkouts_take_no_payment(
    billing: Billing, engine: AsyncEngine
) -> None:
    sub, _ = await pending(billing)
    async with session_factory(engine)() as db:
        live = await create_merchant(db, "Live Merchant", "live")
    live_key = {"Authorization": f"Bearer {live.api_key}"}
    for action in ("complete", "decline"):
        response = await billing.http.post(
            f"/v0/paymentSessions/{sub['payment']['paymentSessionId']}/{action}", headers=live_key
        )
        assert "sandbox" in assert_error(response, 403, "forbidden")["message"]

    # A live subscription's checkout (rows written directly: the sandbox provider never charges in live).
    factory = Factory(engine, live)
    live_sub = await factory.subscription(status="pending_payment", current_period=0)
    invoice = await factory.invoice(live_sub, sequence_number=0, status="ISSUED", grand_total=Decimal(10))
    payment = await factory.add(
        PaymentSession(
            id=new_id("payment_session"), merchant_id=live.merchant_id, environment="live",
            subscription_id=live_sub.id, invoice_id=invoice.id, status="open", amount=Decimal(10),
            currency="USD", expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
    )  # fmt: skip
    shown = await page(billing, f"/checkout/{payment.id}")
    assert shown.status_code == 403 and "live environment" in shown.text and "Pay (test)" not in shown.text
    assert (await press(billing, payment.id, "complete")).status_code == 403
    response = await billing.http.post(f"/v0/paymentSessions/{payment.id}/complete", headers=live_key)
    assert_error(response, 403, "forbidden")
    async with session_factory(engine)() as db:
        assert (await db.get_one(PaymentSession, payment.id)).status == "open"


async def test_period_invoice_paid_through_its_payment_url(billing: Billing) -> None:
    sub, clock = await pending(billing)
    await billing.post(f"/v0/paymentSessions/{sub['payment']['paymentSessionId']}/complete", {}, 200)
    await billing.advance(clock, datetime(2026, 2, 28, tzinfo=UTC) + GRACE)
    invoice = (await billing.invoices(sub["id"]))[1]
    shown = await billing.get(f"/v2/invoices/{invoice.id}")
    assert shown["status"] == "ISSUED"
    url = shown["paymentUrl"]
    assert url == f"{billing.app.state.settings.base_url}/checkout/{invoice.payment_session_id}"
    html = (await page(billing, path_of(url))).text
    assert "49.00 USD" in html and "Service period Jan 31, 2026 – Feb 28, 2026" in html
    # Each line says which period it bills: the in-advance fee is the next period's.
    fee_row = html[html.index("Platform fee") :].split("</tr>")[0]
    assert "Feb 28, 2026 – Mar 31, 2026" in fee_row and "49.00 USD" in fee_row

    session_id = str(invoice.payment_session_id)
    declined = await billing.post(f"/v0/paymentSessions/{session_id}/decline", {}, 200)
    assert declined["status"] == "declined" and declined["invoiceId"] == invoice.id
    assert [i.status for i in await billing.invoices(sub["id"])][1] == "PAYMENT_FAILED"
    await billing.post(f"/v0/paymentSessions/{session_id}/complete", {}, 200)
    assert [i.status for i in await billing.invoices(sub["id"])] == ["PAID", "PAID", "ACTIVE"]
