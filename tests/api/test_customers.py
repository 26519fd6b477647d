from __future__ import annotations

import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors, models
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.routers import customers as customers_router
from db.merchants import NewMerchant
from db.models import BillableMetric, Organization, Plan, Product
from db.session import session_factory
from domain.ids import new_id
from tests.helpers import assert_error, field_errors, sdk063_python

ADDRESS = {"line1": "1 Main St", "city": "San Francisco", "state": "CA", "country": "US", "zipCode": "94107"}
JANE: dict[str, Any] = {"name": "Jane Doe", "email": "jane@example.com", "address": ADDRESS}


def create(client: httpx.Client, merchant: NewMerchant, **overrides: object) -> httpx.Response:
    body = {"merchantId": merchant.merchant_id, "consumer": JANE} | overrides
    return client.post("/v0/customers", json=body)


def listing(client: httpx.Client, merchant: NewMerchant, **params: str | int) -> httpx.Response:
    return client.get("/v0/customers", params={"organizationId": merchant.merchant_id, **params})


def total(client: httpx.Client, merchant: NewMerchant) -> int:
    count: int = listing(client, merchant).json()["pagination"]["total"]
    return count


def run_sdk063(api_url: str, api_key: str, script: str, **args: str) -> Any:
    """Run `script` under paygentic-sdk 0.6.3 (own interpreter) with `sdk` bound; returns its JSON output."""
    python = sdk063_python()
    prelude = (
        "import json, sys\nimport paygentic_sdk._version as v\nfrom paygentic_sdk import Paygentic\n"
        "assert v.__version__ == '0.6.3', v.__version__\nargs = json.load(sys.stdin)\n"
        "sdk = Paygentic(server_url=args['url'], bearer_auth=args['key'])\n"
    )
    # -I: the repository's own packages (api, db, ...) must not shadow anything on the child's sys.path.
    done = subprocess.run(
        [python, "-I", "-c", prelude + script],
        input=json.dumps({"url": api_url, "key": api_key, **args}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def add_catalog(engine: AsyncEngine, merchant: NewMerchant) -> list[str]:
    """A plan and a billable metric of `merchant`: the ids taxRates may use as keys."""
    tenant = {"merchant_id": merchant.merchant_id, "environment": merchant.environment}
    product = Product(id=new_id("product"), name="API", description="d", metadata_={}, **tenant)
    metric = BillableMetric(
        id=new_id("billable_metric"),
        product_id=product.id,
        name="calls",
        description="d",
        unit="calls",
        aggregation="COUNT",
        **tenant,
    )
    plan = Plan(
        id=new_id("plan"),
        product_id=product.id,
        name="Pay as you go",
        currency="USD",
        billing_cadence="P1M",
        default_tax_code="eservice",
        default_tax_rate=Decimal(0),
        tax_behavior="exclusive",
        renewal_reminder_enabled=True,
        renewal_reminder_days=3,
        billing_version=0,
        **tenant,
    )
    async with session_factory(engine)() as session:
        session.add(product)
        await session.flush()
        session.add_all([metric, plan])
        await session.commit()
    return [plan.id, metric.id]


@pytest.fixture
async def catalog(engine: AsyncEngine, merchant: NewMerchant) -> list[str]:
    return await add_catalog(engine, merchant)


@pytest.fixture
async def foreign_catalog(engine: AsyncEngine, other_merchant: NewMerchant) -> list[str]:
    return await add_catalog(engine, other_merchant)


def test_customer_lifecycle_through_sdk(sdk: Paygentic, merchant: NewMerchant) -> None:
    jane = models.CreateCustomerConsumer.model_validate(JANE)
    created = sdk.customers.create(merchant_id=merchant.merchant_id, consumer=jane, external_id="crm-1")
    assert isinstance(created, models.CreateCustomerResponseBody2)
    assert created.customer_id.startswith("cus_") and created.valid_tax_address.valid is True

    again = sdk.customers.create(
        merchant_id=merchant.merchant_id, consumer=jane.model_copy(update={"email": "JANE@Example.COM"})
    )
    assert isinstance(again, models.CreateCustomerResponseBody1)
    assert again.customer_id == created.customer_id

    fetched = sdk.customers.get(id=created.customer_id)
    assert (fetched.merchant_id, fetched.external_id, fetched.object) == (
        merchant.merchant_id,
        "crm-1",
        "customer",
    )
    assert fetched.consumer_id.startswith("org_") and fetched.valid_tax_address.valid is True
    assert fetched.organization is not None and fetched.organization.id == fetched.consumer_id
    assert fetched.organization.name == "Jane Doe"
    assert fetched.organization.billing_emails == ["jane@example.com"]
    assert fetched.organization.address is not None and fetched.organization.address.zip_code == "94107"
    assert fetched.notification_settings is not None and fetched.notification_settings.invoice_paid is True
    assert fetched.tax_id is None and fetched.tax_rates == {}

    updated = sdk.customers.update(
        id=created.customer_id,
        tax_id="GB123456789",
        tax_rates={"default": 13.5},
        notification_settings={"invoice_paid": False},
    )
    assert (updated.tax_id, updated.tax_rates) == ("GB123456789", {"default": 13.5})
    assert updated.notification_settings is not None
    assert (updated.notification_settings.invoice_paid, updated.notification_settings.invoice_issued) == (
        False,
        True,
    )
    assert updated.updated_at >= fetched.updated_at

    listed = sdk.customers.list(organization_id=merchant.merchant_id, email="example.com")
    assert [c.id for c in listed.data] == [created.customer_id]
    assert listed.pagination.total == 1

    assert sdk.customers.delete(id=created.customer_id) is None
    with pytest.raises(errors.Error) as caught:
        sdk.customers.get(id=created.customer_id)
    assert caught.value.status_code == 404


def test_sdk_063_parses_get_and_list(api_url: str, client: httpx.Client, merchant: NewMerchant) -> None:
    customer_id = create(client, merchant, taxRates={"default": 7}).json()["customerId"]
    script = (
        "c = sdk.customers.get(id=args['customer'])\n"
        "page = sdk.customers.list(organization_id=args['org'])\n"
        "print(json.dumps({'id': c.id, 'valid': c.valid_tax_address.valid, 'rates': c.tax_rates,"
        " 'ids': [x.id for x in page.data], 'total': page.pagination.total}))\n"
    )
    out = run_sdk063(api_url, merchant.api_key, script, customer=customer_id, org=merchant.merchant_id)
    assert out == {
        "id": customer_id,
        "valid": True,
        "rates": {"default": 7.0},
        "ids": [customer_id],
        "total": 1,
    }


def test_repeat_create_returns_existing_and_changes_nothing(
    client: httpx.Client, merchant: NewMerchant
) -> None:
    first = create(client, merchant, externalId="crm-1", taxId="DE1", taxRates={"default": 10})
    assert first.status_code == 201, first.text
    customer_id = first.json()["customerId"]
    before = client.get(f"/v0/customers/{customer_id}").json()

    other_address = {"country": "DE"}
    repeat = create(
        client,
        merchant,
        consumer=JANE | {"name": "Someone Else", "address": other_address, "phone": "+1"},
        externalId="crm-2",
        taxId="DE2",
        taxRates={"default": 20},
    )
    assert repeat.status_code == 200, repeat.text
    assert repeat.json() == {"customerId": customer_id, "validTaxAddress": {"valid": True, "message": None}}
    assert client.get(f"/v0/customers/{customer_id}").json() == before
    assert total(client, merchant) == 1


def test_concurrent_creates_with_one_email_give_one_customer(
    api_url: str, merchant: NewMerchant, client: httpx.Client
) -> None:
    workers = 8
    barrier = threading.Barrier(workers)
    body = {"merchantId": merchant.merchant_id, "consumer": JANE | {"email": "race@example.com"}}

    def post(_: int) -> httpx.Response:
        headers = {"Authorization": f"Bearer {merchant.api_key}"}
        with httpx.Client(base_url=api_url, headers=headers, timeout=30) as c:
            barrier.wait()
            return c.post("/v0/customers", json=body)

    with ThreadPoolExecutor(workers) as pool:
        responses = list(pool.map(post, range(workers)))
    assert sorted(r.status_code for r in responses) == [200] * (workers - 1) + [201], [
        r.text for r in responses
    ]
    assert len({r.json()["customerId"] for r in responses}) == 1
    assert total(client, merchant) == 1


def test_create_from_consumer_id(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    customer_id = create(client, merchant).json()["customerId"]
    consumer_id = client.get(f"/v0/customers/{customer_id}").json()["consumerId"]

    same = create(client, merchant, consumer=None, consumerId=consumer_id)
    assert (same.status_code, same.json()["customerId"]) == (200, customer_id)

    assert client.delete(f"/v0/customers/{customer_id}").status_code == 204
    recreated = create(client, merchant, consumer=None, consumerId=consumer_id)
    assert recreated.status_code == 201, recreated.text
    assert recreated.json()["customerId"] != customer_id

    theirs = create(other_client, other_merchant, consumer=None, consumerId=consumer_id)
    assert_error(theirs, 403, "forbidden")
    assert total(other_client, other_merchant) == 0


@pytest.mark.parametrize("consumer_id", ["org_doesnotexist", "MERCHANT", "OTHER_MERCHANT"])
def test_consumer_id_must_be_a_managed_consumer_of_this_merchant(
    client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant, consumer_id: str
) -> None:
    consumer_id = {"MERCHANT": merchant.merchant_id, "OTHER_MERCHANT": other_merchant.merchant_id}.get(
        consumer_id, consumer_id
    )
    response = create(client, merchant, consumer=None, consumerId=consumer_id)
    assert consumer_id in assert_error(response, 403, "forbidden")["message"]
    assert total(client, merchant) == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"merchantId": None}, "merchantId"),
        ({"merchantId": 7}, "merchantId"),
        ({"consumer": None}, "consumer"),
        ({"consumerId": "org_x"}, "consumer"),
        ({"consumer": {"name": "J", "address": ADDRESS}}, "consumer.email"),
        ({"consumer": {"email": "j@example.com", "address": ADDRESS}}, "consumer.name"),
        ({"consumer": {"name": "J", "email": "j@example.com"}}, "consumer.address"),
        ({"consumer": JANE | {"name": ""}}, "consumer.name"),
        ({"consumer": JANE | {"email": "jane"}}, "consumer.email"),
        ({"consumer": JANE | {"email": "jane@example"}}, "consumer.email"),
        ({"consumer": JANE | {"email": "ja@ne@example.com"}}, "consumer.email"),
        ({"consumer": JANE | {"email": "jane doe@example.com"}}, "consumer.email"),
        ({"consumer": JANE | {"email": 42}}, "consumer.email"),
        ({"consumer": JANE | {"phone": 555}}, "consumer.phone"),
        ({"consumer": JANE | {"address": ADDRESS | {"country": "us"}}}, "consumer.address.country"),
        ({"consumer": JANE | {"address": ADDRESS | {"country": "USA"}}}, "consumer.address.country"),
        ({"consumer": JANE | {"address": ADDRESS | {"zipCode": 94107}}}, "consumer.address.zipCode"),
        ({"consumer": JANE | {"address": "San Francisco"}}, "consumer.address"),
        ({"externalId": "x" * 256}, "externalId"),
        ({"externalId": 12}, "externalId"),
        ({"taxId": 12}, "taxId"),
        ({"taxRates": {"default": 101}}, "taxRates.default"),
        ({"taxRates": {"default": -1}}, "taxRates.default"),
        ({"taxRates": {"default": "13"}}, "taxRates.default"),
        ({"taxRates": {"default": True}}, "taxRates.default"),
        ({"taxRates": 13}, "taxRates"),
        ({"taxRates": {"plan_doesnotexist": 5}}, "taxRates.plan_doesnotexist"),
    ],
)
def test_create_rejects_bad_fields(
    client: httpx.Client, merchant: NewMerchant, overrides: dict[str, object], field: str
) -> None:
    assert field in field_errors(create(client, merchant, **overrides))
    assert total(client, merchant) == 0


def test_create_for_another_merchant_is_forbidden(client: httpx.Client, other_merchant: NewMerchant) -> None:
    assert_error(create(client, other_merchant), 403, "forbidden")
    assert (
        client.get("/v0/customers", params={"organizationId": other_merchant.merchant_id}).status_code == 403
    )


@pytest.mark.parametrize(
    ("address", "valid", "missing"),
    [
        (ADDRESS, True, None),
        ({"country": "CA", "state": "ON", "zipCode": "M5V 2T6"}, True, None),
        ({"country": "DE", "zipCode": "10115"}, True, None),
        ({"country": "US", "zipCode": "94107"}, False, "state"),
        ({"country": "CA", "zipCode": "M5V 2T6"}, False, "state"),
        ({"country": "DE"}, False, "zipCode"),
        ({"zipCode": "94107", "state": "CA"}, False, "Country"),
        ({}, False, "Country"),
    ],
)
def test_valid_tax_address(
    client: httpx.Client, merchant: NewMerchant, address: dict[str, str], valid: bool, missing: str | None
) -> None:
    created = create(client, merchant, consumer=JANE | {"address": address})
    assert created.status_code == 201, created.text
    verdict = created.json()["validTaxAddress"]
    assert verdict["valid"] is valid
    if missing is not None:
        assert missing in verdict["message"]
    fetched = client.get(f"/v0/customers/{created.json()['customerId']}").json()
    assert fetched["validTaxAddress"] == verdict


def test_external_id_is_unique_per_merchant(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    jane = create(client, merchant, externalId="crm-1").json()["customerId"]
    bob = {"name": "Bob", "email": "bob@example.com", "address": ADDRESS}
    clash = create(client, merchant, consumer=bob, externalId="crm-1")
    assert "crm-1" in assert_error(clash, 409, "conflict")["message"]
    assert total(client, merchant) == 1

    assert create(other_client, other_merchant, externalId="crm-1").status_code == 201

    bob_id = create(client, merchant, consumer=bob).json()["customerId"]
    assert_error(client.patch(f"/v0/customers/{bob_id}", json={"externalId": "crm-1"}), 409, "conflict")
    assert client.get(f"/v0/customers/{bob_id}").json()["externalId"] is None

    cleared = client.patch(f"/v0/customers/{jane}", json={"externalId": None})
    assert cleared.status_code == 200 and cleared.json()["externalId"] is None
    taken = client.patch(f"/v0/customers/{bob_id}", json={"externalId": "crm-1"})
    assert taken.status_code == 200 and taken.json()["externalId"] == "crm-1"
    assert [c["id"] for c in listing(client, merchant, externalId="crm-1").json()["data"]] == [bob_id]


async def test_failed_create_leaves_no_consumer_behind(
    api_url: str, merchant: NewMerchant, engine: AsyncEngine
) -> None:
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers) as client:
        body = {"merchantId": merchant.merchant_id, "consumer": JANE, "externalId": "crm-1"}
        assert (await client.post("/v0/customers", json=body)).status_code == 201
        bob = {"name": "Bob", "email": "bob@example.com", "address": ADDRESS}
        clash = await client.post("/v0/customers", json=body | {"consumer": bob})
        assert clash.status_code == 409, clash.text
    async with engine.connect() as conn:
        query = select(Organization.name).where(Organization.owner_merchant_id == merchant.merchant_id)
        assert list((await conn.execute(query)).scalars()) == ["Jane Doe"]


def test_tax_rate_keys_are_plans_metrics_or_default(
    client: httpx.Client, merchant: NewMerchant, catalog: list[str], foreign_catalog: list[str]
) -> None:
    plan, metric = catalog
    rates = {"default": 13, plan: 20, metric: 7.25}
    created = create(client, merchant, taxRates=rates)
    assert created.status_code == 201, created.text
    url = f"/v0/customers/{created.json()['customerId']}"
    assert client.get(url).json()["taxRates"] == rates

    for foreign in foreign_catalog:
        assert f"taxRates.{foreign}" in field_errors(client.patch(url, json={"taxRates": {foreign: 1}}))
        assert f"taxRates.{foreign}" in field_errors(create(client, merchant, taxRates={foreign: 1}))
    assert client.get(url).json()["taxRates"] == rates

    flat = client.patch(url, json={"taxRates": 5})
    assert flat.status_code == 200 and flat.json()["taxRates"] == {"default": 5}
    emptied = client.patch(url, json={"taxRates": {}})
    assert emptied.status_code == 200 and emptied.json()["taxRates"] == {}


def test_list_requires_the_callers_organization(
    client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    create(client, merchant)
    assert "organizationId" in field_errors(client.get("/v0/customers"))
    assert_error(listing(client, other_merchant), 403, "forbidden")


def test_list_filters_and_pages(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant, other_merchant: NewMerchant
) -> None:
    people = [
        ("Ada Lovelace", "ada@acme.com"),
        ("Alan Turing", "alan@ACME.com"),
        ("Grace 100%", "grace@navy.mil"),
    ]
    ids = [
        create(client, merchant, consumer=JANE | {"name": n, "email": e}, externalId=f"x-{i}").json()[
            "customerId"
        ]
        for i, (n, e) in enumerate(people)
    ]
    create(other_client, other_merchant, consumer=JANE | {"name": "Ada Other", "email": "ada@acme.com"})

    def found(**params: str | int) -> list[str]:
        response = listing(client, merchant, **params)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["data"]]

    assert found() == ids
    assert found(name="LOVE") == [ids[0]]
    assert found(email="acme.com") == ids[:2]
    assert found(name="100%") == [ids[2]]
    assert found(name="e%l") == []
    assert found(name="e 1") == [ids[2]]
    assert found(name="a_a") == []
    assert found(externalId="x-1") == [ids[1]]
    assert found(externalId="x-") == []
    first = listing(client, merchant, limit=2, offset=0).json()
    second = listing(client, merchant, limit=2, offset=2).json()
    assert [c["id"] for c in first["data"] + second["data"]] == ids
    assert first["object"] == "list"
    assert first["pagination"] == {"limit": 2, "offset": 0, "total": 3, "hasMore": True}


@pytest.mark.parametrize(("param", "value"), [("name", "ab"), ("email", "ab"), ("email", "x" * 256)])
def test_list_filter_length_is_checked(
    client: httpx.Client, merchant: NewMerchant, param: str, value: str
) -> None:
    assert param in field_errors(listing(client, merchant, **{param: value}))


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"taxRates": None}, "taxRates"),
        ({"taxRates": 100.5}, "taxRates"),
        ({"taxRates": "5"}, "taxRates"),
        ({"taxRates": {"default": -0.1}}, "taxRates.default"),
        ({"notificationSettings": None}, "notificationSettings"),
        ({"notificationSettings": {"invoicePaid": "no"}}, "notificationSettings.invoicePaid"),
        ({"notificationSettings": {"invoicePaid": None}}, "notificationSettings.invoicePaid"),
        ({"taxId": 5}, "taxId"),
        ({"externalId": ""}, "externalId"),
    ],
)
def test_update_rejects_bad_fields_and_leaves_customer_unchanged(
    client: httpx.Client, merchant: NewMerchant, patch: dict[str, object], field: str
) -> None:
    customer_id = create(client, merchant, taxRates={"default": 10}).json()["customerId"]
    before = client.get(f"/v0/customers/{customer_id}").json()
    assert field in field_errors(client.patch(f"/v0/customers/{customer_id}", json=patch))
    assert client.get(f"/v0/customers/{customer_id}").json() == before


def test_update_tax_id_and_notification_settings(client: httpx.Client, merchant: NewMerchant) -> None:
    customer_id = create(client, merchant).json()["customerId"]
    url = f"/v0/customers/{customer_id}"
    assert client.patch(url, json={"taxId": "GB1"}).json()["taxId"] == "GB1"
    client.patch(url, json={"notificationSettings": {"renewalReminder": False}})
    settings = client.patch(url, json={"notificationSettings": {"invoiceIssued": False}}).json()
    assert settings["notificationSettings"] == {
        "invoiceIssued": False,
        "invoicePaid": True,
        "renewalReminder": False,
    }
    cleared = client.patch(url, json={"taxId": None}).json()
    assert cleared["taxId"] is None and cleared["notificationSettings"]["renewalReminder"] is False


def test_other_merchants_customer_is_not_found(
    client: httpx.Client, other_client: httpx.Client, merchant: NewMerchant
) -> None:
    customer_id = create(client, merchant).json()["customerId"]
    url = f"/v0/customers/{customer_id}"
    assert_error(other_client.get(url), 404, "not_found")
    assert_error(other_client.patch(url, json={"taxId": "X"}), 404, "not_found")
    assert_error(other_client.delete(url), 404, "not_found")
    assert client.get(url).json()["taxId"] is None


def test_delete_frees_the_email_for_a_new_customer(client: httpx.Client, merchant: NewMerchant) -> None:
    customer_id = create(client, merchant).json()["customerId"]
    deleted = client.delete(f"/v0/customers/{customer_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(client.get(f"/v0/customers/{customer_id}"), 404, "not_found")
    assert_error(client.delete(f"/v0/customers/{customer_id}"), 404, "not_found")
    assert total(client, merchant) == 0

    moved = {"country": "DE", "zipCode": "10115", "city": "Berlin"}
    again = create(client, merchant, consumer=JANE | {"name": "Jane Moved", "address": moved})
    assert again.status_code == 201, again.text
    assert again.json()["customerId"] != customer_id
    organization = client.get(f"/v0/customers/{again.json()['customerId']}").json()["organization"]
    assert organization["name"] == "Jane Moved" and organization["address"]["country"] == "DE"


def test_delete_with_blockers_is_409_and_keeps_the_customer(
    sdk: Paygentic, client: httpx.Client, merchant: NewMerchant, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer_id = create(client, merchant).json()["customerId"]
    blocker = {"type": "subscriptions", "count": 1, "items": [{"id": "sub_1", "status": "active"}]}

    async def subscriptions(_: object, customer: Any) -> dict[str, Any] | None:
        return blocker if customer.id == customer_id else None

    # The API runs in this process, so the stand-in query is what the real delete consults.
    monkeypatch.setattr(customers_router, "BLOCKERS", [subscriptions])
    body = assert_error(client.delete(f"/v0/customers/{customer_id}"), 409, "conflict")
    assert body["details"] == {"blockers": [blocker]}
    with pytest.raises(errors.DeleteCustomerConflictError) as caught:
        sdk.customers.delete(id=customer_id)
    assert caught.value.data.details is not None and caught.value.data.details.blockers is not None
    assert caught.value.data.details.blockers[0].count == 1
    assert client.get(f"/v0/customers/{customer_id}").status_code == 200
