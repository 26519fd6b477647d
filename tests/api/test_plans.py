from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors

from db.merchants import NewMerchant
from tests.api.test_prices import Catalog, created, make_catalog, sdk063_get
from tests.helpers import assert_error, field_errors

VERSION_TRANSITION = {"effectiveDate": "end_of_current_period", "proration": "none"}


@pytest.fixture
def cat(client: httpx.Client, merchant: NewMerchant) -> Catalog:
    return make_catalog(client, merchant)


def plan_body(cat: Catalog, **overrides: Any) -> dict[str, Any]:
    body = {
        "merchantId": cat.merchant.merchant_id,
        "name": "Pro",
        "currency": "USD",
        "productId": cat.product,
    }
    return body | overrides


def create(cat: Catalog, **overrides: Any) -> httpx.Response:
    return cat.client.post("/v0/plans", json=plan_body(cat, **overrides))


def total(client: httpx.Client) -> int:
    return int(client.get("/v0/plans").json()["pagination"]["total"])


def test_plan_lifecycle_through_sdk(sdk: Paygentic, cat: Catalog, client: httpx.Client) -> None:
    usage, fee = cat.price(), cat.fee_price()
    plan = sdk.plans.create(
        currency="USD",
        merchant_id=cat.merchant.merchant_id,
        name="Pro",
        description="500K tokens",
        invoice_display_name="Pro plan",
        prices=[fee["id"], usage["id"]],
    )
    assert plan.id.startswith("plan_") and plan.object == "plan"
    # productId was left out: it comes from the prices' metric and fee.
    assert (plan.product_id, plan.merchant_id, plan.currency) == (
        cat.product,
        cat.merchant.merchant_id,
        "USD",
    )
    assert (plan.billing_cadence, plan.billing_version) == ("P1M", 0)  # 0.1.34 always sends billingVersion 0
    assert (plan.default_tax_code, plan.default_tax_rate, plan.tax_behavior) == ("eservice", 0, "exclusive")
    assert (plan.renewal_reminder_enabled, plan.renewal_reminder_days) == (True, 3)
    assert (plan.description, plan.invoice_display_name, plan.deleted_at) == ("500K tokens", "Pro plan", None)
    assert plan.prices is not None and [p.id for p in plan.prices] == [fee["id"], usage["id"]]
    assert plan.payment_term is not None
    assert (plan.payment_term.instant, plan.payment_term.in_arrears) == (False, True)

    raw = client.get(f"/v0/plans/{plan.id}").json()
    assert raw["billingInterval"] == "monthly" and raw["versionTransition"] == VERSION_TRANSITION
    assert raw["paymentTerm"] == {"instant": False, "in_arrears": True, "in_advance": True}
    assert raw["prices"][0]["merchantId"] == cat.merchant.merchant_id
    assert (raw["prices"][0]["tax"], raw["prices"][0]["model"]) == ({"supplyScope": "IN_SCOPE"}, "standard")

    assert sdk.plans.get(id=plan.id).name == "Pro"
    updated = sdk.plans.update(
        id=plan.id, name="Pro 2", billing_interval="quarterly", default_tax_rate=8.875, prices=[usage["id"]]
    )
    assert (updated.name, updated.billing_cadence, updated.default_tax_rate) == ("Pro 2", "P3M", 8.875)
    assert updated.prices is not None and [p.id for p in updated.prices] == [usage["id"]]
    assert updated.payment_term is not None and updated.payment_term.in_arrears is True
    assert updated.updated_at >= plan.updated_at
    listed = sdk.plans.list(request={"merchant_id": cat.merchant.merchant_id, "product_id": cat.product})
    assert listed.data is not None and [p.id for p in listed.data] == [plan.id]
    assert listed.pagination is not None and listed.pagination.total == 1


def test_defaults_without_the_sdk(cat: Catalog) -> None:
    plan = created(create(cat))
    assert plan["billingVersion"] == 1  # absent → Standard billing
    assert (plan["billingCadence"], plan["billingInterval"]) == ("P1M", "monthly")
    assert (plan["defaultTaxCode"], plan["defaultTaxRate"], plan["taxBehavior"]) == (
        "eservice",
        0,
        "exclusive",
    )
    assert (plan["renewalReminderEnabled"], plan["renewalReminderDays"]) == (True, 3)
    assert plan["prices"] == [] and plan["description"] is None
    assert plan["paymentTerm"] == {"instant": False, "in_arrears": False, "in_advance": False}


@pytest.mark.parametrize(
    ("given", "cadence", "interval"),
    [
        ({"billingInterval": "monthly"}, "P1M", "monthly"),
        ({"billingInterval": "quarterly"}, "P3M", "quarterly"),
        ({"billingInterval": "yearly"}, "P1Y", "yearly"),
        ({"billingInterval": "annual"}, "P1Y", "yearly"),
        ({"billingCadence": "P3M"}, "P3M", "quarterly"),
        ({"billingCadence": "P1Y", "billingInterval": "monthly"}, "P1Y", "yearly"),
    ],
)
def test_cadence_takes_precedence_over_interval(
    cat: Catalog, client: httpx.Client, given: dict[str, str], cadence: str, interval: str
) -> None:
    plan = created(create(cat, **given))
    assert (plan["billingCadence"], plan["billingInterval"]) == (cadence, interval)
    patched = client.patch(f"/v0/plans/{plan['id']}", json=given).json()
    assert (patched["billingCadence"], patched["billingInterval"]) == (cadence, interval)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "US"}, "currency"),
        ({"currency": 840}, "currency"),
        ({"merchantId": None}, "merchantId"),
        ({"billingCadence": "P2M"}, "billingCadence"),
        ({"billingInterval": "weekly"}, "billingInterval"),
        ({"defaultTaxRate": "8.5"}, "defaultTaxRate"),
        ({"defaultTaxRate": -1}, "defaultTaxRate"),
        ({"defaultTaxRate": 100.5}, "defaultTaxRate"),
        ({"defaultTaxRate": 8.12345}, "defaultTaxRate"),
        ({"defaultTaxRate": True}, "defaultTaxRate"),
        ({"defaultTaxCode": ""}, "defaultTaxCode"),
        ({"taxBehavior": "both"}, "taxBehavior"),
        ({"renewalReminderEnabled": "yes"}, "renewalReminderEnabled"),
        ({"renewalReminderDays": 0}, "renewalReminderDays"),
        ({"renewalReminderDays": 31}, "renewalReminderDays"),
        ({"renewalReminderDays": "3"}, "renewalReminderDays"),
        ({"billingVersion": 2}, "billingVersion"),
        ({"billingVersion": True}, "billingVersion"),
        ({"billingVersion": "1"}, "billingVersion"),
        ({"prices": "price_x"}, "prices"),
        ({"prices": [1]}, "prices.0"),
        ({"productId": 5}, "productId"),
    ],
)
def test_create_rejects_bad_fields(
    cat: Catalog, client: httpx.Client, overrides: dict[str, Any], field: str
) -> None:
    assert field in field_errors(create(cat, **overrides))
    assert total(client) == 0


@pytest.mark.parametrize(("rate", "expected"), [(8.875, "8.875"), (0, "0"), (100, "100"), (13, "13")])
def test_tax_rate_is_kept_exactly(cat: Catalog, client: httpx.Client, rate: float, expected: str) -> None:
    plan = created(create(cat, defaultTaxRate=rate))
    fetched = client.get(f"/v0/plans/{plan['id']}").json()
    assert Decimal(str(fetched["defaultTaxRate"])) == Decimal(expected)


def test_merchant_and_product_must_be_the_callers(
    cat: Catalog, client: httpx.Client, other_client: httpx.Client, other_merchant: NewMerchant
) -> None:
    theirs = make_catalog(other_client, other_merchant)
    assert_error(create(cat, merchantId=other_merchant.merchant_id), 403, "forbidden")
    assert_error(create(cat, productId=theirs.product), 404, "not_found")
    assert_error(create(cat, productId="prod_missing"), 404, "not_found")
    assert total(client) == 0


def test_prices_must_exist_and_be_the_callers(
    cat: Catalog, client: httpx.Client, other_client: httpx.Client, other_merchant: NewMerchant
) -> None:
    theirs = make_catalog(other_client, other_merchant).price()
    mine = cat.price()
    for ids in ([mine["id"], "price_missing"], [theirs["id"]]):
        body = assert_error(create(cat, prices=ids), 404, "not_found")
        assert ids[-1] in body["message"]
    assert total(client) == 0


def test_duplicate_price_ids_are_rejected(cat: Catalog, client: httpx.Client) -> None:
    price = cat.price()
    assert price["id"] in field_errors(create(cat, prices=[price["id"], price["id"]]))["prices"]
    assert total(client) == 0


def test_a_metric_is_priced_once_per_plan(cat: Catalog, client: httpx.Client) -> None:
    first, second = cat.price(), cat.price(paymentTerm="instant")
    message = field_errors(create(cat, prices=[first["id"], second["id"]], billingVersion=0))["prices"]
    assert cat.metric in message
    assert total(client) == 0


def test_product_is_derived_or_required(cat: Catalog, client: httpx.Client) -> None:
    without = plan_body(cat)
    del without["productId"]
    assert "productId is required" in field_errors(client.post("/v0/plans", json=without))["productId"]
    other_product = cat.new_product()
    elsewhere = created(
        client.post(
            "/v0/prices",
            json={
                "billableMetricId": cat.new_metric(product=other_product),
                "model": "standard",
                "paymentTerm": "in_arrears",
                "invoiceDisplayName": "x",
                "properties": {"unitPrice": "1"},
            },
        )
    )
    mine = cat.price()
    mixed = without | {"prices": [mine["id"], elsewhere["id"]]}
    assert "productId is required" in field_errors(client.post("/v0/plans", json=mixed))["productId"]
    assert other_product in field_errors(create(cat, prices=[mine["id"], elsewhere["id"]]))["prices"]
    assert total(client) == 0
    derived = created(client.post("/v0/plans", json=without | {"prices": [elsewhere["id"]]}))
    assert derived["productId"] == other_product


def test_instant_prices_need_legacy_billing(cat: Catalog, client: httpx.Client) -> None:
    instant = cat.price(paymentTerm="instant")
    message = field_errors(create(cat, prices=[instant["id"]]))["prices"]
    assert "billingVersion 0" in message and instant["id"] in message
    assert total(client) == 0
    legacy = created(create(cat, prices=[instant["id"]], billingVersion=0))
    assert legacy["paymentTerm"] == {"instant": True, "in_arrears": False, "in_advance": False}


def test_percentage_metric_unit_must_match_the_plan_currency(cat: Catalog, client: httpx.Client) -> None:
    share = cat.price(
        billableMetricId=cat.usd_metric,
        model="percentage",
        properties={"percentage": "0.05", "minCharge": "0", "maxCharge": "2000"},
    )
    assert "EUR" in field_errors(create(cat, currency="EUR", prices=[share["id"]]))["prices"]
    assert total(client) == 0
    assert created(create(cat, prices=[share["id"]]))["prices"][0]["id"] == share["id"]


def test_patch_replaces_prices_in_order(cat: Catalog, client: httpx.Client) -> None:
    usage, fee = cat.price(), cat.fee_price()
    other_metric = cat.price(billableMetricId=cat.usd_metric)
    plan = created(create(cat, prices=[usage["id"]]))
    url = f"/v0/plans/{plan['id']}"
    reordered = client.patch(url, json={"prices": [fee["id"], other_metric["id"], usage["id"]]}).json()
    assert [p["id"] for p in reordered["prices"]] == [fee["id"], other_metric["id"], usage["id"]]
    assert reordered["paymentTerm"]["in_advance"] is True
    again = client.patch(url, json={"prices": [usage["id"], fee["id"]]}).json()
    assert [p["id"] for p in again["prices"]] == [usage["id"], fee["id"]]
    assert client.get(url).json()["prices"] == again["prices"]
    cleared = client.patch(url, json={"prices": []}).json()
    assert cleared["prices"] == [] and cleared["updatedAt"] >= plan["updatedAt"]


def test_patch_rules_and_nothing_written_on_failure(
    cat: Catalog, client: httpx.Client, other_client: httpx.Client, other_merchant: NewMerchant
) -> None:
    usage, instant = cat.price(), cat.price(billableMetricId=cat.usd_metric, paymentTerm="instant")
    plan = created(create(cat, prices=[usage["id"]], description="d"))
    url = f"/v0/plans/{plan['id']}"
    theirs = make_catalog(other_client, other_merchant).price()
    assert_error(client.patch(url, json={"prices": [theirs["id"]]}), 404)
    assert "prices" in field_errors(client.patch(url, json={"prices": [usage["id"], usage["id"]]}))
    assert "prices" in field_errors(client.patch(url, json={"prices": [instant["id"]]}))
    for patch, field in [
        ({"name": None}, "name"),
        ({"prices": None}, "prices"),
        ({"renewalReminderDays": 40}, "renewalReminderDays"),
        ({"defaultTaxRate": "5"}, "defaultTaxRate"),
        ({"billingCadence": None}, "billingCadence"),
    ]:
        assert field in field_errors(client.patch(url, json=patch)), patch
    assert client.get(url).json() == plan
    assert_error(other_client.patch(url, json={"name": "x"}), 404)
    assert_error(other_client.get(url), 404)
    assert client.get(url).json() == plan


def test_patch_updates_settings_and_clears_description(cat: Catalog, client: httpx.Client) -> None:
    plan = created(create(cat, description="d", invoiceDisplayName="Pro"))
    patch = {
        "description": None,
        "invoiceDisplayName": None,
        "defaultTaxCode": "saas",
        "defaultTaxRate": 20,
        "taxBehavior": "inclusive",
        "renewalReminderEnabled": False,
        "renewalReminderDays": 30,
        "billingVersion": 0,  # not patchable: ignored like any unknown key
    }
    updated = client.patch(f"/v0/plans/{plan['id']}", json=patch).json()
    assert (updated["description"], updated["invoiceDisplayName"]) == (None, None)
    assert (updated["defaultTaxCode"], updated["defaultTaxRate"], updated["taxBehavior"]) == (
        "saas",
        20,
        "inclusive",
    )
    assert (updated["renewalReminderEnabled"], updated["renewalReminderDays"], updated["billingVersion"]) == (
        False,
        30,
        1,
    )


def test_list_pages_and_filters(
    cat: Catalog, client: httpx.Client, other_client: httpx.Client, other_merchant: NewMerchant
) -> None:
    ids = [created(create(cat, name=f"p{i}"))["id"] for i in range(3)]
    other_product = cat.new_product()
    elsewhere = created(create(cat, productId=other_product))["id"]
    first = client.get("/v0/plans", params={"limit": 2, "offset": 0}).json()
    second = client.get("/v0/plans", params={"limit": 2, "offset": 2}).json()
    assert [p["id"] for p in first["data"] + second["data"]] == [*ids, elsewhere]
    assert first["pagination"] == {"limit": 2, "offset": 0, "total": 4, "hasMore": True}
    by_product = client.get("/v0/plans", params={"productId": other_product}).json()
    assert [p["id"] for p in by_product["data"]] == [elsewhere]
    assert_error(client.get("/v0/plans", params={"merchantId": other_merchant.merchant_id}), 403, "forbidden")
    assert other_client.get("/v0/plans").json()["pagination"]["total"] == 0


def test_sdk_surfaces_errors_as_typed_errors(sdk: Paygentic, cat: Catalog) -> None:
    with pytest.raises(errors.Error) as missing:
        sdk.plans.get(id="plan_doesnotexist")
    assert missing.value.status_code == 404
    with pytest.raises(errors.BadRequest) as bad:
        sdk.plans.create(currency="USD", merchant_id=cat.merchant.merchant_id, name="Pro")
    assert bad.value.status_code == 400 and "productId is required" in bad.value.message


def test_sdk_0_6_3_parses_plans(api_url: str, cat: Catalog, merchant: NewMerchant) -> None:
    prices = [
        cat.price(feature={"featureId": cat.feature}),
        cat.fee_price(),
        cat.price(
            billableMetricId=cat.usd_metric,
            model="volume",
            properties={
                "default": "1",
                "parameters": {"function": "linear", "gradient": "0", "min": "0", "max": "1"},
            },
        ),
    ]
    plan = created(create(cat, prices=[p["id"] for p in prices], defaultTaxRate=8.5))
    empty = created(create(cat, name="Empty"))
    parsed = sdk063_get(api_url, merchant, "plans", [plan["id"], empty["id"]])
    got = parsed[plan["id"]]
    assert isinstance(got, dict), got
    assert got["versionTransition"] == VERSION_TRANSITION and got["defaultTaxRate"] == 8.5
    assert [p["id"] for p in got["prices"]] == [p["id"] for p in prices]
    assert all(
        p["merchantId"] == merchant.merchant_id and p["tax"]["supplyScope"] == "IN_SCOPE"
        for p in got["prices"]
    )
    assert isinstance(parsed[empty["id"]], dict), parsed[empty["id"]]
