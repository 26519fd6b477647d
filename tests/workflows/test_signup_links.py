"""Signup (authorization) links and the portal's Sources section, against the API app, the production
worker and the Stripe fake: a link subscribes one customer and sends them to their portal, where they
connect (and disconnect) their Stripe key; links that open nothing; failures that change nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select

from api import portal_tokens
from db.models import AuthorizationLink, Customer, OutboxEvent, SourceInstallation, Subscription
from db.session import session_factory
from settings import Settings
from tests.stripe_fake import new_key, revoke_key
from tests.workflows import source_harness
from tests.workflows.source_harness import Revenue

env, revenue = source_harness.env, source_harness.revenue  # the module's fixtures


async def plan_with_source(revenue: Revenue) -> tuple[str, str]:
    plan, metric = await revenue.catalog("0.05")
    return plan, await revenue.source(plan, metric)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def notice(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["notice"][0]


async def outbox(revenue: Revenue, event_type: str) -> list[dict[str, Any]]:
    async with session_factory(revenue.billing.engine)() as session:
        rows = await session.scalars(
            select(OutboxEvent)
            .where(
                OutboxEvent.merchant_id == revenue.billing.merchant.merchant_id,
                OutboxEvent.event_type == event_type,
            )
            .order_by(OutboxEvent.seq)
        )
        return [r.payload for r in rows]


SIGNUP = {"name": "Prospect Labs", "email": "owner@prospect.example", "country": "US", "zipCode": "94107"}


async def test_a_link_signs_one_customer_up_and_the_portal_connects_their_stripe(revenue: Revenue) -> None:
    plan, source = await plan_with_source(revenue)
    http = revenue.billing.http
    link = await revenue.billing.post(
        f"/v0/plans/{plan}/authorizationLinks", {"email": SIGNUP["email"], "expiresIn": "P1D"}, 201
    )
    assert (link["object"], link["status"], link["planId"], link["email"]) == (
        "authorizationLink", "pending", plan, SIGNUP["email"],
    )  # fmt: skip
    page = await http.get(path_of(link["url"]))
    assert page.status_code == 200
    assert f'value="{SIGNUP["email"]}"' in page.text and "connect your Stripe account" in page.text

    signed_up = await http.post(path_of(link["url"]), data=SIGNUP)
    assert signed_up.status_code == 303, signed_up.text
    portal = path_of(signed_up.headers["location"])
    assert portal.startswith("/portal/")  # nothing due up front: straight to the portal
    done = await revenue.billing.get(f"/v0/plans/{plan}/authorizationLinks/{link['id']}")
    assert done["status"] == "completed" and done["customerId"] and done["subscriptionId"]
    async with session_factory(revenue.billing.engine)() as session:
        sub = await session.get_one(Subscription, done["subscriptionId"])
        assert (sub.plan_id, sub.customer_id, sub.status) == (plan, done["customerId"], "active")
    assert [p["id"] for p in await outbox(revenue, "customer.created.v0")] == [done["customerId"]]
    # Single use: the link now opens nothing, and a second submission changes nothing.
    again = await http.get(path_of(link["url"]))
    assert again.status_code == 410 and "already used" in again.text
    assert (await http.post(path_of(link["url"]), data=SIGNUP)).status_code == 410

    shown = unescape((await http.get(portal)).text)
    assert "Sources" in shown and "Not connected yet." in shown
    connect_action = re.search(r'action="([^"]+/connect)"', shown)
    assert connect_action is not None
    refused = await http.post(connect_action.group(1), data={"stripeSecretKey": "sk_live_abc123"})
    assert "live key" in notice(refused) and "sk_live_abc123" not in notice(refused)

    key = new_key()
    connected = await http.post(connect_action.group(1), data={"stripeSecretKey": key})
    assert notice(connected).startswith("Connected")
    shown = unescape((await http.get(path_of(connected.headers["location"]))).text)
    assert 'data-testid="source-status">active<' in shown and f"…{key[-4:]}" in shown
    assert key not in shown
    async with session_factory(revenue.billing.engine)() as session:
        [inst] = await session.scalars(
            select(SourceInstallation).where(SourceInstallation.source_id == source)
        )
        assert (inst.status, inst.subscription_id) == ("active", sub.id)

    disconnect_action = re.search(r'action="([^"]+/disconnect)"', shown)
    assert disconnect_action is not None
    gone = await http.post(disconnect_action.group(1))
    assert notice(gone).startswith("Disconnected")
    shown = unescape((await http.get(portal)).text)
    assert 'data-testid="source-status">disconnected<' in shown and "Connect Stripe" in shown

    # A revoked key is refused by Stripe: the portal says so, and a fresh key connects again.
    revoked = new_key()
    revoke_key(revenue.stripe, revoked)
    said = notice(await http.post(connect_action.group(1), data={"stripeSecretKey": revoked}))
    assert said.startswith("Stripe did not accept the key") and "401" in said


async def test_failed_signups_change_nothing_and_are_reported(revenue: Revenue, settings: Settings) -> None:
    plan, _ = await plan_with_source(revenue)
    http = revenue.billing.http
    first = await revenue.billing.post(f"/v0/plans/{plan}/authorizationLinks", {}, 201)
    assert (await http.post(path_of(first["url"]), data=SIGNUP)).status_code == 303

    # The same customer through another link: refused on the page, the link stays usable, webhook says why.
    second = await revenue.billing.post(f"/v0/plans/{plan}/authorizationLinks", {}, 201)
    refused = await http.post(path_of(second["url"]), data=SIGNUP)
    assert refused.status_code == 409 and "already has a subscription to this plan" in unescape(refused.text)
    assert (await revenue.billing.get(f"/v0/plans/{plan}/authorizationLinks/{second['id']}"))["status"] == (
        "pending"
    )
    [failure] = await outbox(revenue, "customer.creation_failed.v0")
    assert failure["authorizationLinkId"] == second["id"] and failure["consumer"]["email"] == SIGNUP["email"]
    # A form that does not validate: the field's reason, nothing written.
    bad = await http.post(path_of(second["url"]), data=SIGNUP | {"email": "not-an-email", "country": "USA"})
    assert bad.status_code == 400
    assert 'data-testid="error-email"' in bad.text and 'data-testid="error-country"' in bad.text
    async with session_factory(revenue.billing.engine)() as session:
        customers = await session.scalars(
            select(Customer).where(Customer.merchant_id == revenue.billing.merchant.merchant_id)
        )
        assert len(list(customers)) == 1
        link = await session.get_one(AuthorizationLink, second["id"])
        assert (link.status, link.customer_id) == ("pending", None)

    # Links that open nothing.
    token = urlsplit(second["url"]).path.rsplit("/", 1)[1]
    tampered = await http.get(f"/authorize/{token[:-2]}{'AA' if not token.endswith('AA') else 'BB'}")
    assert tampered.status_code == 403
    key = portal_tokens.signing_key(settings)
    expired = portal_tokens.issue_signup(second["id"], datetime.now(UTC) - timedelta(seconds=1), key)
    assert (await http.get(f"/authorize/{expired}")).status_code == 410
    cross = await http.post(path_of(second["url"]), data=SIGNUP, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403

    # The API's checks.
    for body, field in (
        ({"expiresIn": "P31D"}, "expiresIn"),
        ({"expiresIn": "later"}, "expiresIn"),
        ({"redirectUrl": "ftp://x"}, "redirectUrl"),
        ({"email": "nope"}, "email"),
    ):
        response = await http.post(f"/v0/plans/{plan}/authorizationLinks", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["field"] == field
    assert (await http.post("/v0/plans/plan_unknown/authorizationLinks", json={})).status_code == 404
    unknown_clock = await http.post(f"/v0/plans/{plan}/authorizationLinks", json={"testClockId": "tc_nope"})
    assert unknown_clock.status_code == 404
    missing = await http.get(f"/v0/plans/{plan}/authorizationLinks/auth_unknown")
    assert missing.status_code == 404


async def test_a_link_on_a_test_clock_subscribes_on_that_clock(revenue: Revenue) -> None:
    plan, _ = await plan_with_source(revenue)
    at = datetime(2029, 3, 1, tzinfo=UTC)
    clock = await revenue.billing.clock(at)
    link = await revenue.billing.post(f"/v0/plans/{plan}/authorizationLinks", {"testClockId": clock}, 201)
    assert link["testClockId"] == clock
    assert (await revenue.billing.http.post(path_of(link["url"]), data=SIGNUP)).status_code == 303
    done = await revenue.billing.get(f"/v0/plans/{plan}/authorizationLinks/{link['id']}")
    async with session_factory(revenue.billing.engine)() as session:
        sub = await session.get_one(Subscription, done["subscriptionId"])
        assert (sub.test_clock_id, sub.started_at, sub.status) == (clock, at, "active")
