"""Subscriptions API without a workflow: request validation of create and termination (everything is
checked before anything is stored or Temporal is asked), lookups (404/403), list filters, get, available
plans, and SDK 0.1.34 parsing. Rows come from tests.factories; the API under test cannot reach Temporal,
so a create that passes validation would answer 503 (covered with a worker in
tests/workflows/test_subscriptions_api.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import NewMerchant, create_merchant
from db.models import Customer, Organization, Subscription
from db.session import session_factory
from tests.factories import ANCHOR, Factory
from tests.helpers import assert_error, field_errors

START_ISO = "2026-01-31T00:00:00Z"


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
def factory(engine: AsyncEngine, merchant: NewMerchant) -> Factory:
    return Factory(engine, merchant)


@pytest.fixture
def other_factory(engine: AsyncEngine, other_merchant: NewMerchant) -> Factory:
    return Factory(engine, other_merchant)


async def counts(engine: AsyncEngine, merchant: NewMerchant) -> tuple[int, int, int]:
    """Subscriptions, customers and consumers of the merchant: what a failed create must not change."""
    async with engine.connect() as conn:
        subs = await conn.scalar(
            select(func.count())
            .select_from(Subscription)
            .where(Subscription.merchant_id == merchant.merchant_id)
        )
        customers = await conn.scalar(
            select(func.count()).select_from(Customer).where(Customer.merchant_id == merchant.merchant_id)
        )
        consumers = await conn.scalar(
            select(func.count())
            .select_from(Organization)
            .where(Organization.owner_merchant_id == merchant.merchant_id)
        )
    return int(subs or 0), int(customers or 0), int(consumers or 0)


def inline_customer(**address: Any) -> dict[str, Any]:
    return {
        "name": "Jane Doe",
        "email": "jane@acme.example",
        "address": {"country": "US", "zipCode": "78701", "state": "TX"} | address,
    }


# ---- create: validation ---------------------------------------------------------------------------------

LONG = "x" * 256

BAD_CREATES: list[tuple[str, dict[str, Any], str]] = [
    # (case id, body overrides (None value = drop the key), field reported)
    ("name missing", {"name": None}, "name"),
    ("name empty", {"name": "  "}, "name"),
    ("name too long", {"name": LONG}, "name"),
    ("name number", {"name": 7}, "name"),
    ("planId missing", {"planId": None}, "planId"),
    ("planId number", {"planId": 12}, "planId"),
    ("startedAt missing", {"startedAt": None}, "startedAt"),
    ("startedAt garbage", {"startedAt": "next tuesday"}, "startedAt"),
    ("startedAt bool", {"startedAt": True}, "startedAt"),
    ("neither customer", {"customerId": None}, "customerId"),
    ("both customers", {"customer": inline_customer()}, "customerId"),
    ("customerId number", {"customerId": 5}, "customerId"),
    ("endingAt equal", {"endingAt": START_ISO}, "endingAt"),
    ("endingAt before", {"endingAt": "2026-01-30T23:59:59Z"}, "endingAt"),
    ("endingAt garbage", {"endingAt": "soon"}, "endingAt"),
    ("autoCharge string", {"autoCharge": "true"}, "autoCharge"),
    ("autoCharge number", {"autoCharge": 1}, "autoCharge"),
    ("autoCharge null", {"autoCharge": "null"}, "autoCharge"),
    ("taxExempt string", {"taxExempt": "false"}, "taxExempt"),
    ("minimumAccountBalance number", {"minimumAccountBalance": 20}, "minimumAccountBalance"),
    ("minimumAccountBalance text", {"minimumAccountBalance": "twenty"}, "minimumAccountBalance"),
    ("minimumAccountBalance exponent", {"minimumAccountBalance": "1e3"}, "minimumAccountBalance"),
    ("minimumAccountBalance negative", {"minimumAccountBalance": "-5.00"}, "minimumAccountBalance"),
    ("prefundAmount number", {"prefundAmount": 200.0}, "prefundAmount"),
    ("prefundAmount negative", {"prefundAmount": "-1"}, "prefundAmount"),
    ("redirectUrls not object", {"redirectUrls": "https://a.example"}, "redirectUrls"),
    ("onSuccess ftp", {"redirectUrls": {"onSuccess": "ftp://a.example/ok"}}, "redirectUrls.onSuccess"),
    ("onSuccess relative", {"redirectUrls": {"onSuccess": "/done"}}, "redirectUrls.onSuccess"),
    ("onFailure spaces", {"redirectUrls": {"onFailure": "https://a.example/x y"}}, "redirectUrls.onFailure"),
    ("onFailure number", {"redirectUrls": {"onFailure": 3}}, "redirectUrls.onFailure"),
    ("sessionExpiryMinutes zero", {"sessionExpiryMinutes": 0}, "sessionExpiryMinutes"),
    ("sessionExpiryMinutes over a week", {"sessionExpiryMinutes": 10081}, "sessionExpiryMinutes"),
    ("sessionExpiryMinutes string", {"sessionExpiryMinutes": "60"}, "sessionExpiryMinutes"),
    ("sessionExpiryMinutes bool", {"sessionExpiryMinutes": True}, "sessionExpiryMinutes"),
    ("testClockId number", {"testClockId": 1}, "testClockId"),
    ("renewalReminderEnabled string", {"renewalReminderEnabled": "yes"}, "renewalReminderEnabled"),
    ("renewalReminderDays zero", {"renewalReminderDays": 0}, "renewalReminderDays"),
    ("renewalReminderDays 31", {"renewalReminderDays": 31}, "renewalReminderDays"),
    ("renewalReminderDays string", {"renewalReminderDays": "3"}, "renewalReminderDays"),
    ("renewalReminderDays fraction", {"renewalReminderDays": 2.5}, "renewalReminderDays"),
]


def body_with(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    body = dict(base)
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        elif value == "null":
            body[key] = None
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("overrides", "field"), [c[1:] for c in BAD_CREATES], ids=[c[0] for c in BAD_CREATES]
)
async def test_create_rejects_bad_fields(
    aclient: httpx.AsyncClient,
    factory: Factory,
    engine: AsyncEngine,
    merchant: NewMerchant,
    overrides: dict[str, Any],
    field: str,
) -> None:
    plan = await factory.plan()
    customer = await factory.customer()
    before = await counts(engine, merchant)
    base = {"name": "Acme - Pro", "planId": plan.id, "customerId": customer.id, "startedAt": START_ISO}
    response = await aclient.post("/v0/subscriptions", json=body_with(base, overrides))
    problems = field_errors(response)
    assert field in problems, problems
    assert await counts(engine, merchant) == before


BAD_INLINE: list[tuple[str, dict[str, Any], str]] = [
    ("no name", {"name": None}, "customer.name"),
    ("no email", {"email": None}, "customer.email"),
    ("bad email", {"email": "jane-at-acme"}, "customer.email"),
    ("no address", {"address": None}, "customer.address"),
    ("no country", {"address": {"zipCode": "78701"}}, "customer.address.country"),
    ("no zip", {"address": {"country": "US"}}, "customer.address.zipCode"),
    ("empty zip", {"address": {"country": "US", "zipCode": ""}}, "customer.address.zipCode"),
    ("lowercase country", {"address": {"country": "us", "zipCode": "78701"}}, "customer.address.country"),
    ("3-letter country", {"address": {"country": "USA", "zipCode": "78701"}}, "customer.address.country"),
    ("tax rate over 100", {"taxRates": {"default": 101}}, "customer.taxRates.default"),
    ("tax rate string", {"taxRates": {"default": "13"}}, "customer.taxRates.default"),
    ("not an object", {"__replace__": "jane@acme.example"}, "customer"),
]


@pytest.mark.parametrize(("change", "field"), [c[1:] for c in BAD_INLINE], ids=[c[0] for c in BAD_INLINE])
async def test_inline_customer_is_validated_and_nothing_is_written(
    aclient: httpx.AsyncClient,
    factory: Factory,
    engine: AsyncEngine,
    merchant: NewMerchant,
    change: dict[str, Any],
    field: str,
) -> None:
    plan = await factory.plan()
    before = await counts(engine, merchant)
    customer: Any = change["__replace__"] if "__replace__" in change else body_with(inline_customer(), change)
    body = {"name": "Acme - Pro", "planId": plan.id, "customer": customer, "startedAt": START_ISO}
    problems = field_errors(await aclient.post("/v0/subscriptions", json=body))
    assert field in problems, problems
    assert await counts(engine, merchant) == before


async def test_inline_customer_tax_rate_key_must_be_a_plan_or_metric(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    plan = await factory.plan()
    before = await counts(engine, merchant)
    customer = inline_customer() | {"taxRates": {"plan_doesnotexist": 10}}
    body = {"name": "Acme - Pro", "planId": plan.id, "customer": customer, "startedAt": START_ISO}
    assert "customer.taxRates.plan_doesnotexist" in field_errors(
        await aclient.post("/v0/subscriptions", json=body)
    )
    assert await counts(engine, merchant) == before


async def test_body_must_be_a_json_object(aclient: httpx.AsyncClient) -> None:
    assert "body" in field_errors(await aclient.post("/v0/subscriptions", content=b"{nope"))
    assert "body" in field_errors(await aclient.post("/v0/subscriptions"))


# ---- create: lookups ------------------------------------------------------------------------------------


async def test_unknown_or_foreign_plan_and_customer_are_404(
    aclient: httpx.AsyncClient,
    factory: Factory,
    other_factory: Factory,
    engine: AsyncEngine,
    merchant: NewMerchant,
) -> None:
    plan = await factory.plan()
    customer = await factory.customer()
    deleted = await factory.plan(deleted_at=ANCHOR)
    foreign_plan = await other_factory.plan()
    foreign_customer = await other_factory.customer()
    before = await counts(engine, merchant)
    base = {"name": "Acme - Pro", "startedAt": START_ISO}
    for plan_id, customer_id, missing in [
        ("plan_doesnotexist", customer.id, "plan_doesnotexist"),
        (foreign_plan.id, customer.id, foreign_plan.id),
        (deleted.id, customer.id, deleted.id),
        (plan.id, "cus_doesnotexist", "cus_doesnotexist"),
        (plan.id, foreign_customer.id, foreign_customer.id),
    ]:
        response = await aclient.post(
            "/v0/subscriptions", json=base | {"planId": plan_id, "customerId": customer_id}
        )
        assert missing in assert_error(response, 404, "not_found")["message"]
    # An inline customer for a foreign plan stores no customer either.
    response = await aclient.post(
        "/v0/subscriptions", json=base | {"planId": foreign_plan.id, "customer": inline_customer()}
    )
    assert_error(response, 404, "not_found")
    assert await counts(engine, merchant) == before


@pytest.fixture
async def live_merchant(engine: AsyncEngine) -> NewMerchant:
    async with session_factory(engine)() as session:
        return await create_merchant(session, "Live Merchant", "live")


async def test_test_clock_must_be_the_callers_live_sandbox_clock(
    aclient: httpx.AsyncClient,
    api_url: str,
    factory: Factory,
    other_factory: Factory,
    engine: AsyncEngine,
    merchant: NewMerchant,
    live_merchant: NewMerchant,
) -> None:
    plan = await factory.plan()
    customer = await factory.customer()
    foreign = await other_factory.test_clock()
    deleted = await factory.test_clock(deleted_at=ANCHOR)
    base = {"name": "Acme - Pro", "planId": plan.id, "customerId": customer.id, "startedAt": START_ISO}
    before = await counts(engine, merchant)
    for clock_id in (foreign.id, deleted.id, "tc_doesnotexist"):
        response = await aclient.post("/v0/subscriptions", json=base | {"testClockId": clock_id})
        assert clock_id in assert_error(response, 404, "not_found")["message"]
    assert await counts(engine, merchant) == before

    live = Factory(engine, live_merchant)
    live_plan, live_customer = await live.plan(), await live.customer()
    live_clock = await live.test_clock()  # cannot be made through the API; the key is what is refused
    headers = {"Authorization": f"Bearer {live_merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as live_client:
        response = await live_client.post(
            "/v0/subscriptions",
            json=base
            | {"planId": live_plan.id, "customerId": live_customer.id, "testClockId": live_clock.id},
        )
    assert "sandbox" in assert_error(response, 403, "forbidden")["message"]
    assert (await counts(engine, live_merchant))[0] == 0


async def test_create_needs_a_key(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as anonymous:
        assert_error(await anonymous.post("/v0/subscriptions", json={}), 401)


async def test_stored_but_workflow_not_started_is_503_with_the_id(
    aclient: httpx.AsyncClient, factory: Factory, engine: AsyncEngine, merchant: NewMerchant
) -> None:
    """This API server has no Temporal: the records are kept and the message says to repeat the request
    (the retry that then succeeds is in tests/workflows/test_subscriptions_api.py)."""
    plan, customer = await factory.plan(), await factory.customer()
    body = {"name": "Acme - Pro", "planId": plan.id, "customerId": customer.id, "startedAt": START_ISO}
    first = assert_error(await aclient.post("/v0/subscriptions", json=body), 503, "service_unavailable")
    again = assert_error(await aclient.post("/v0/subscriptions", json=body), 503, "service_unavailable")
    assert "repeat the same request" in first["message"]
    async with engine.connect() as conn:
        stored = list(await conn.scalars(select(Subscription.id).where(Subscription.plan_id == plan.id)))
    assert len(stored) == 1 and stored[0] in first["message"] and stored[0] in again["message"]


# ---- get / list -----------------------------------------------------------------------------------------


async def test_get_is_tenant_scoped(
    aclient: httpx.AsyncClient, other_aclient: httpx.AsyncClient, factory: Factory
) -> None:
    sub = await factory.subscription()
    assert (await aclient.get(f"/v0/subscriptions/{sub.id}")).json()["id"] == sub.id
    assert sub.id in assert_error(await other_aclient.get(f"/v0/subscriptions/{sub.id}"), 404)["message"]
    assert_error(await aclient.get("/v0/subscriptions/sub_doesnotexist"), 404, "not_found")


REQUIRED_0134 = {
    "id",
    "object",
    "createdAt",
    "customerId",
    "name",
    "planId",
    "startedAt",
    "status",
    "updatedAt",
}
REQUIRED_063 = {
    "merchantId",
    "versionPolicy",
    "elapsedPeriodBilling",
    "billingStartsAt",
    "billingAnchor",
    "billingCadence",
    "paymentTermDays",
}


async def test_get_shape_of_a_stored_row(aclient: httpx.AsyncClient, factory: Factory) -> None:
    plan = await factory.plan(billing_cadence="P3M")
    sub = await factory.subscription(
        plan,
        started_at=datetime(2026, 1, 31, 10, 30, tzinfo=UTC),
        billing_anchor=datetime(2026, 1, 31, 10, tzinfo=UTC),
        minimum_account_balance="12.5",
    )
    got = (await aclient.get(f"/v0/subscriptions/{sub.id}")).json()
    assert REQUIRED_0134 | REQUIRED_063 <= set(got)
    assert got["object"] == "subscription" and got["merchantId"] == factory.merchant.merchant_id
    assert (got["startedAt"], got["billingAnchor"], got["billingStartsAt"]) == (
        "2026-01-31T10:30:00.000Z",
        "2026-01-31T10:00:00.000Z",
        "2026-01-31T10:00:00.000Z",
    )
    assert (got["billingCadence"], got["versionPolicy"], got["elapsedPeriodBilling"]) == (
        "P3M",
        "floating",
        "none",
    )
    assert got["paymentTermDays"] == 0
    assert got["minimumAccountBalance"] == got["prefundAmount"] == "12500000000"
    assert got["payment"] is None and got["customer"] is None  # no Invoice 0; customer only on list


async def test_list_filters(
    aclient: httpx.AsyncClient, other_aclient: httpx.AsyncClient, factory: Factory, other_factory: Factory
) -> None:
    plan = await factory.plan()
    jane, john = await factory.customer(), await factory.customer()
    day = timedelta(days=1)
    a = await factory.subscription(plan, jane, status="active", started_at=ANCHOR)
    b = await factory.subscription(plan, john, status="pending_payment", started_at=ANCHOR + day)
    c = await factory.subscription(plan, jane, status="terminated", started_at=ANCHOR + 2 * day)
    await other_factory.subscription()

    async def ids(**params: Any) -> list[str]:
        response = await aclient.get("/v0/subscriptions", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["pagination"]["total"] == len(body["data"])
        return sorted(s["id"] for s in body["data"])

    assert await ids() == sorted([a.id, b.id, c.id])
    assert await ids(customerId=jane.id) == sorted([a.id, c.id])
    assert await ids(consumerId=john.consumer_id) == [b.id]
    assert await ids(status="active") == [a.id]
    assert await ids(status=["active", "pending_payment"]) == sorted([a.id, b.id])
    assert await ids(status="terminated", customerId=jane.id) == [c.id]
    # startedBefore is inclusive; a naive value is UTC, as the SDK sends naive datetimes.
    assert await ids(startedBefore="2026-02-01T00:00:00Z") == sorted([a.id, b.id])
    assert await ids(startedBefore="2026-01-31T23:59:59") == [a.id]
    assert await ids(startedBefore="2026-02-01T01:00:00+01:00") == sorted([a.id, b.id])
    assert await ids(merchantId=factory.merchant.merchant_id) == sorted([a.id, b.id, c.id])
    assert await ids(customerId="cus_doesnotexist") == []
    assert await ids(customerId=(await other_factory.customer()).id) == []

    other = (await other_aclient.get("/v0/subscriptions")).json()
    assert other["pagination"]["total"] == 1 and other["data"][0]["id"] not in (a.id, b.id, c.id)

    page = (await aclient.get("/v0/subscriptions", params={"limit": 2, "offset": 0})).json()
    rest = (await aclient.get("/v0/subscriptions", params={"limit": 2, "offset": 2})).json()
    assert page["pagination"] == {"limit": 2, "offset": 0, "total": 3, "hasMore": True}
    assert sorted(s["id"] for s in page["data"] + rest["data"]) == sorted([a.id, b.id, c.id])


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"status": "cancelled"}, 400, "status"),
        ({"status": ["active", "paused"]}, 400, "status"),
        ({"startedBefore": "yesterday"}, 400, "startedBefore"),
        ({"include": "plan"}, 400, "include"),
        ({"limit": 0}, 400, "limit"),
        ({"limit": 101}, 400, "limit"),
        ({"offset": -1}, 400, "offset"),
    ],
)
async def test_list_rejects_bad_parameters(
    aclient: httpx.AsyncClient, params: dict[str, Any], status: int, field: str
) -> None:
    assert field in field_errors(await aclient.get("/v0/subscriptions", params=params))


async def test_list_for_another_merchant_is_403(
    aclient: httpx.AsyncClient, other_merchant: NewMerchant
) -> None:
    response = await aclient.get("/v0/subscriptions", params={"merchantId": other_merchant.merchant_id})
    assert_error(response, 403, "forbidden")


async def test_list_include_customer(
    aclient: httpx.AsyncClient, factory: Factory, merchant: NewMerchant, engine: AsyncEngine
) -> None:
    customer = await factory.customer()
    sub = await factory.subscription(customer=customer)
    async with session_factory(engine)() as session:
        consumer = await session.get_one(Organization, customer.consumer_id)
        merchant_org = await session.get_one(Organization, merchant.merchant_id)
    listed = (await aclient.get("/v0/subscriptions", params={"include": "customer"})).json()["data"]
    assert [s["id"] for s in listed] == [sub.id]
    assert listed[0]["customer"] == {
        "id": customer.id,
        "merchantId": merchant.merchant_id,
        "merchant": {
            "id": merchant.merchant_id,
            "name": merchant_org.name,
            "email": f"owner+{merchant.merchant_id}@accrue.local",
        },
        "consumer": {"id": consumer.id, "name": consumer.name, "email": consumer.email},
    }
    plain = (await aclient.get("/v0/subscriptions")).json()["data"]
    assert plain[0]["customer"] is None


async def test_sdk_0134_parses_get_and_list(sdk: Paygentic, factory: Factory, merchant: NewMerchant) -> None:
    sub = (await factory.subscription()).id
    got = sdk.subscriptions.get(id=sub)
    assert got.id == sub and got.object == "subscription" and got.status == "active"
    listed = sdk.subscriptions.list(
        request={"merchant_id": merchant.merchant_id, "status": "active", "include": "customer"}
    )
    assert listed.data is not None and [s.id for s in listed.data] == [sub]
    embedded = listed.data[0].customer
    assert (
        embedded is not None
        and embedded.merchant is not None
        and embedded.merchant.id == merchant.merchant_id
    )
    with pytest.raises(errors.Error) as caught:
        sdk.subscriptions.get(id="sub_doesnotexist")
    assert caught.value.status_code == 404


# ---- termination: validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [{}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 1001}, {"reason": 42}, {"reason": None}],
    ids=["missing", "empty", "blank", "too long", "number", "null"],
)
async def test_termination_reason_is_required_and_bounded(
    aclient: httpx.AsyncClient, factory: Factory, body: dict[str, Any]
) -> None:
    sub = await factory.subscription()
    assert "reason" in field_errors(await aclient.post(f"/v0/subscriptions/{sub.id}/termination", json=body))
    assert (await aclient.get(f"/v0/subscriptions/{sub.id}")).json()["status"] == "active"


async def test_terminating_a_terminated_subscription_is_409(
    aclient: httpx.AsyncClient, factory: Factory
) -> None:
    sub = await factory.subscription(
        status="terminated", terminated_at=ANCHOR, terminated_by="system", termination_reason="endingAt"
    )
    response = await aclient.post(f"/v0/subscriptions/{sub.id}/termination", json={"reason": "again"})
    assert "already terminated" in assert_error(response, 409, "conflict")["message"]


async def test_terminating_unknown_or_foreign_subscription_is_404(
    aclient: httpx.AsyncClient, other_factory: Factory
) -> None:
    foreign = await other_factory.subscription()
    for sub_id in (foreign.id, "sub_doesnotexist"):
        response = await aclient.post(f"/v0/subscriptions/{sub_id}/termination", json={"reason": "x"})
        assert_error(response, 404, "not_found")


async def test_termination_without_temporal_is_503_and_changes_nothing(
    aclient: httpx.AsyncClient, factory: Factory
) -> None:
    sub = await factory.subscription()
    response = await aclient.post(f"/v0/subscriptions/{sub.id}/termination", json={"reason": "Asked"})
    assert "retry" in assert_error(response, 503, "service_unavailable")["message"]
    assert (await aclient.get(f"/v0/subscriptions/{sub.id}")).json()["status"] == "active"


# ---- available plans ------------------------------------------------------------------------------------


async def test_available_plans_exclude_every_plan_of_a_subscribed_product(
    aclient: httpx.AsyncClient, factory: Factory, other_factory: Factory
) -> None:
    llm, vision, audio = await factory.product(), await factory.product(), await factory.product()
    llm_pro = await factory.plan(product_id=llm.id, name="LLM Pro")
    await factory.plan(product_id=llm.id, name="LLM Basic")
    vision_pro = await factory.plan(product_id=vision.id, name="Vision Pro")
    vision_basic = await factory.plan(product_id=vision.id, name="Vision Basic")
    audio_pro = await factory.plan(product_id=audio.id, name="Audio Pro")
    audio_basic = await factory.plan(product_id=audio.id, name="Audio basic (legacy)")
    await factory.plan(product_id=audio.id, name="Audio retired", deleted_at=ANCHOR)
    jane, john = await factory.customer(), await factory.customer()
    await factory.subscription(llm_pro, jane, status="active")
    await factory.subscription(vision_basic, jane, status="pending_payment")
    await factory.subscription(audio_pro, jane, status="terminated")
    await factory.subscription(audio_basic, john, status="active")  # another customer's
    await other_factory.plan()

    async def names(customer_id: str, **params: Any) -> list[str]:
        response = await aclient.get("/v0/plans/available", params={"customerId": customer_id} | params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list"
        if "limit" not in params:
            assert body["pagination"]["total"] == len(body["data"])
        return [p["name"] for p in body["data"]]

    assert await names(jane.id) == ["Audio Pro", "Audio basic (legacy)"]
    assert await names(john.id) == ["LLM Pro", "LLM Basic", "Vision Pro", "Vision Basic"]
    assert await names(jane.id, productId=audio.id) == ["Audio Pro", "Audio basic (legacy)"]
    assert await names(jane.id, productId=llm.id) == []
    assert await names(jane.id, search="BASIC") == ["Audio basic (legacy)"]
    assert await names(john.id, search="pro", productId=vision.id) == ["Vision Pro"]
    assert await names(john.id, search="%") == []  # a literal, not a wildcard
    assert await names(john.id, limit=1, offset=1) == ["LLM Basic"]
    assert vision_pro.name == "Vision Pro"


async def test_available_plans_need_a_known_own_customer(
    aclient: httpx.AsyncClient, other_factory: Factory
) -> None:
    foreign = await other_factory.customer()
    for customer_id in ("cus_doesnotexist", foreign.id):
        response = await aclient.get("/v0/plans/available", params={"customerId": customer_id})
        assert customer_id in assert_error(response, 404, "not_found")["message"]
    assert "customerId" in field_errors(await aclient.get("/v0/plans/available"))


async def test_sdk_0134_parses_available_plans(sdk: Paygentic, factory: Factory) -> None:
    plan_id, customer_id = (await factory.plan(name="Only plan")).id, (await factory.customer()).id
    available = sdk.plans.list_available(customer_id=customer_id, search="only")
    assert available.data is not None and [p.id for p in available.data] == [plan_id]
    with pytest.raises(errors.Error) as caught:
        sdk.plans.list_available(customer_id="cus_doesnotexist")
    assert caught.value.status_code == 404
