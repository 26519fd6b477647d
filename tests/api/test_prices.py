from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from paygentic_sdk import Paygentic, errors, models

from db.merchants import NewMerchant
from tests.helpers import assert_error, field_errors, sdk063_python

STANDARD = {"unitPrice": "0.000012"}


# ---- catalog builders, shared with test_plans -------------------------------------------------------------


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@dataclass
class Catalog:
    """One product with a token metric, a USD revenue metric, a fee and a feature, made through the API."""

    client: httpx.Client
    merchant: NewMerchant
    product: str
    metric: str
    usd_metric: str
    fee: str
    feature: str

    def new_product(self, name: str = "Other") -> str:
        body = {"merchantId": self.merchant.merchant_id, "name": name, "description": "d"}
        return str(created(self.client.post("/v0/products", json=body))["id"])

    def new_metric(self, product: str | None = None, unit: str = "tokens", name: str = "tokens") -> str:
        body = {
            "merchantId": self.merchant.merchant_id,
            "productId": product or self.product,
            "name": name,
            "description": "d",
            "unit": unit,
            "aggregation": "SUM",
            "valueProperty": "$.value",
        }
        return str(created(self.client.post("/v0/billableMetrics", json=body))["id"])

    def new_fee(self, product: str | None = None) -> str:
        body = {
            "merchantId": self.merchant.merchant_id,
            "productId": product or self.product,
            "name": "Platform",
            "description": "d",
        }
        return str(created(self.client.post("/v0/fees", json=body))["id"])

    def new_feature(self, product: str | None = None, key: str = "api-access") -> str:
        body = {
            "merchantId": self.merchant.merchant_id,
            "productId": product or self.product,
            "key": key,
            "name": "API access",
            "type": "static",
        }
        return str(created(self.client.post("/v0/features", json=body))["id"])

    def price(self, **overrides: Any) -> dict[str, Any]:
        return created(self.client.post("/v0/prices", json=metric_price(self.metric) | overrides))

    def fee_price(self, **overrides: Any) -> dict[str, Any]:
        return created(self.client.post("/v0/prices", json=fee_price(self.fee) | overrides))


def make_catalog(client: httpx.Client, merchant: NewMerchant) -> Catalog:
    cat = Catalog(client, merchant, "", "", "", "", "")
    cat.product = cat.new_product("LLM")
    cat.metric = cat.new_metric()
    cat.usd_metric = cat.new_metric(unit="USD", name="revenue")
    cat.fee = cat.new_fee()
    cat.feature = cat.new_feature()
    return cat


def metric_price(metric: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "billableMetricId": metric,
        "model": "standard",
        "paymentTerm": "in_arrears",
        "invoiceDisplayName": "Tokens",
        "properties": STANDARD,
    }
    return body | overrides


def fee_price(fee: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "feeId": fee,
        "paymentTerm": "in_advance",
        "billingCadence": "P1M",
        "invoiceDisplayName": "Platform",
        "properties": {"unitPrice": "49.00"},
    }
    return body | overrides


SDK063_GET = """
import json, sys
from paygentic_sdk import Paygentic
url, key, resource, ids = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
out = {}
with Paygentic(server_url=url, bearer_auth=key) as p:
    for id_ in ids:
        try:
            obj = getattr(p, resource).get(id=id_)
            out[id_] = obj.model_dump(mode="json", by_alias=True)
        except Exception as exc:
            out[id_] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def sdk063_get(api_url: str, merchant: NewMerchant, resource: str, ids: list[str]) -> dict[str, Any]:
    """`<resource>.get` for each id under paygentic-sdk 0.6.3: id → parsed model dump, or the error text."""
    run = subprocess.run(
        [sdk063_python(), "-c", SDK063_GET, api_url, merchant.api_key, resource, *ids],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


# ---- tests ---------------------------------------------------------------------------------------------


@pytest.fixture
def cat(client: httpx.Client, merchant: NewMerchant) -> Catalog:
    return make_catalog(client, merchant)


def total(client: httpx.Client) -> int:
    return int(client.get("/v0/prices").json()["pagination"]["total"])


def test_metric_price_lifecycle_through_sdk(sdk: Paygentic, cat: Catalog, client: httpx.Client) -> None:
    price = sdk.prices.create(
        invoice_display_name="Tokens",
        payment_term="in_arrears",
        properties=models.PriceProperties1(unit_price="0.000012"),
        billable_metric_id=cat.metric,
        model="standard",
        grant_discount_enabled=True,
        feature=models.PriceFeatureInput(feature_id=cat.feature, entitlement_template={"limit": 5}),
    )
    assert price.id.startswith("price_") and price.object == "price"
    assert (price.billable_metric_id, price.fee_id, price.model, price.payment_term) == (
        cat.metric,
        None,
        "standard",
        "in_arrears",
    )
    assert price.properties == models.PriceProperties1(unit_price="0.000012")
    assert price.grant_discount_enabled is True and price.billing_cadence is None
    assert price.features is not None and len(price.features) == 1
    link = price.features[0]
    assert link.id.startswith("pf_") and link.feature_id == cat.feature
    assert link.entitlement_template == {"limit": 5}
    assert link.feature is not None and (link.feature.key, link.feature.type) == ("api-access", "static")

    raw = client.get(f"/v0/prices/{price.id}").json()
    assert raw["merchantId"] == cat.merchant.merchant_id
    assert (raw["tax"], raw["quantity"]) == ({"supplyScope": "IN_SCOPE"}, 1)

    updated = sdk.prices.update(id=price.id, invoice_display_name="Input tokens", billing_cadence="P1M")
    assert (updated.invoice_display_name, updated.billing_cadence) == ("Input tokens", "P1M")
    assert updated.features is not None and updated.features[0].id == link.id  # omitted feature: kept
    assert updated.updated_at >= price.updated_at
    listed = sdk.prices.list(request={"billable_metric_id": cat.metric})
    assert listed.data is not None and [p.id for p in listed.data] == [price.id]
    assert sdk.prices.delete(id=price.id) is None
    assert_error(client.get(f"/v0/prices/{price.id}"), 404, "not_found")


def test_fee_price_defaults_to_standard_through_sdk(sdk: Paygentic, cat: Catalog) -> None:
    price = sdk.prices.create(
        invoice_display_name="Setup",
        payment_term="in_advance",
        properties=models.PriceProperties1(unit_price="99.00"),
        fee_id=cat.fee,
        billing_cadence="P0D",
    )
    assert (price.fee_id, price.billable_metric_id, price.model) == (cat.fee, None, "standard")
    assert (price.billing_cadence, price.grant_discount_enabled, price.features) == ("P0D", False, [])
    fetched = sdk.prices.get(id=price.id)
    assert fetched.properties == models.PriceProperties1(unit_price="99.00")


@pytest.mark.parametrize(
    ("model", "properties"),
    [
        ("standard", {"unitPrice": "0.10"}),
        ("dynamic", {"minPrice": "0.010", "maxPrice": "0.10"}),
        ("dynamic", {"minPrice": "0.05", "maxPrice": "0.05"}),
        (
            "volume",
            {
                "default": "0.05",
                "parameters": {"function": "linear", "gradient": "-0.00001", "min": "0.01", "max": "0.05"},
            },
        ),
        ("percentage", {"percentage": "0.0290", "minCharge": "0.30", "maxCharge": "100.00"}),
        ("percentage", {"percentage": "10.0", "minCharge": "0", "maxCharge": "0"}),
    ],
)
def test_properties_are_stored_and_echoed_exactly(
    cat: Catalog, client: httpx.Client, model: str, properties: dict[str, Any]
) -> None:
    metric = cat.usd_metric if model == "percentage" else cat.metric
    price = cat.price(billableMetricId=metric, model=model, properties=properties | {"unknown": "x"})
    echoed = client.get(f"/v0/prices/{price['id']}").json()["properties"]
    # Volume adds `tiers: []` for SDK 0.6.3, whose volume shape requires it.
    expected = properties | {"tiers": []} if model == "volume" else properties
    assert price["properties"] == expected and echoed == expected


@pytest.mark.parametrize(
    ("model", "properties", "field", "fragment"),
    [
        ("standard", {}, "properties.unitPrice", "required"),
        ("standard", {"unitPrice": 0.5}, "properties.unitPrice", "not a JSON number"),
        ("standard", {"unitPrice": "-1"}, "properties.unitPrice", "negative"),
        ("standard", {"unitPrice": "1e3"}, "properties.unitPrice", "decimal"),
        ("standard", {"unitPrice": "0.0000000001"}, "properties.unitPrice", "decimal places"),
        ("standard", {"minPrice": "1", "maxPrice": "2"}, "properties.unitPrice", "standard"),
        ("dynamic", {"minPrice": "0.2", "maxPrice": "0.1"}, "properties.minPrice", "maxPrice"),
        ("dynamic", {"minPrice": "0.2"}, "properties.maxPrice", "required"),
        ("volume", {"default": "1"}, "properties.parameters", "linear"),
        ("volume", {"default": "1", "parameters": "linear"}, "properties.parameters", "object"),
        (
            "volume",
            {"default": "1", "parameters": {"function": "log", "gradient": "1", "min": "0", "max": "1"}},
            "properties.parameters.function",
            "linear",
        ),
        (
            "volume",
            {"default": "1", "parameters": {"function": "linear", "gradient": "1", "min": "2", "max": "1"}},
            "properties.parameters.min",
            "max",
        ),
        (
            "volume",
            {"default": "1", "parameters": {"function": "linear", "gradient": 1, "min": "0", "max": "1"}},
            "properties.parameters.gradient",
            "string",
        ),
        (
            "volume",
            {"default": "-1", "parameters": {"function": "linear", "gradient": "1", "min": "0", "max": "1"}},
            "properties.default",
            "negative",
        ),
        (
            "percentage",
            {"percentage": "11", "minCharge": "0", "maxCharge": "1"},
            "properties.percentage",
            "10",
        ),
        (
            "percentage",
            {"percentage": "0.12345", "minCharge": "0", "maxCharge": "1"},
            "properties.percentage",
            "4",
        ),
        (
            "percentage",
            {"percentage": "5%", "minCharge": "0", "maxCharge": "1"},
            "properties.percentage",
            "0.05",
        ),
        (
            "percentage",
            {"percentage": 0.05, "minCharge": "0", "maxCharge": "1"},
            "properties.percentage",
            "0.05",
        ),
        (
            "percentage",
            {"percentage": "0.05", "minCharge": "5", "maxCharge": "1"},
            "properties.minCharge",
            "max",
        ),
        ("percentage", {"percentage": "0.05", "maxCharge": "1"}, "properties.minCharge", "required"),
    ],
)
def test_properties_must_match_the_model(
    cat: Catalog, client: httpx.Client, model: str, properties: dict[str, Any], field: str, fragment: str
) -> None:
    metric = cat.usd_metric if model == "percentage" else cat.metric
    body = metric_price(metric, model=model, properties=properties)
    errs = field_errors(client.post("/v0/prices", json=body))
    assert fragment in errs[field], errs
    assert total(client) == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"invoiceDisplayName": None}, "invoiceDisplayName"),
        ({"invoiceDisplayName": 7}, "invoiceDisplayName"),
        ({"paymentTerm": "sometimes"}, "paymentTerm"),
        ({"paymentTerm": None}, "paymentTerm"),
        ({"properties": None}, "properties"),
        ({"properties": ["0.1"]}, "properties"),
        ({"model": "tiered"}, "model"),
        ({"billableMetricId": 12}, "billableMetricId"),
        ({"billingCadence": 30}, "billingCadence"),
        ({"grantDiscountEnabled": "true"}, "grantDiscountEnabled"),
        ({"feature": {"entitlementTemplate": {}}}, "feature.featureId"),
        ({"feature": {"featureId": "feat_x", "entitlementTemplate": "x"}}, "feature.entitlementTemplate"),
    ],
)
def test_create_rejects_bad_fields(
    cat: Catalog, client: httpx.Client, overrides: dict[str, Any], field: str
) -> None:
    assert field in field_errors(client.post("/v0/prices", json=metric_price(cat.metric, **overrides)))
    assert total(client) == 0


@pytest.mark.parametrize("both", [True, False])
def test_exactly_one_of_metric_or_fee(cat: Catalog, client: httpx.Client, both: bool) -> None:
    body = metric_price(cat.metric, feeId=cat.fee) if both else fee_price(cat.fee, feeId=None)
    errs = field_errors(client.post("/v0/prices", json=body))
    assert "exactly one" in errs["billableMetricId"] and "exactly one" in errs["feeId"]
    assert total(client) == 0


def test_unknown_or_foreign_references_are_not_found(
    cat: Catalog, client: httpx.Client, other_client: httpx.Client, other_merchant: NewMerchant
) -> None:
    theirs = make_catalog(other_client, other_merchant)
    for body in [
        metric_price("bm_missing"),
        metric_price(theirs.metric),
        fee_price(theirs.fee),
        fee_price("fee_missing"),
        metric_price(cat.metric, feature={"featureId": theirs.feature}),
    ]:
        assert_error(client.post("/v0/prices", json=body), 404, "not_found")
    assert total(client) == 0
    # And the other merchant cannot see or touch ours.
    mine = cat.price()
    assert_error(other_client.get(f"/v0/prices/{mine['id']}"), 404)
    assert_error(other_client.patch(f"/v0/prices/{mine['id']}", json={"invoiceDisplayName": "x"}), 404)
    assert_error(other_client.delete(f"/v0/prices/{mine['id']}"), 404)
    assert other_client.get("/v0/prices").json()["pagination"]["total"] == 0
    assert client.get(f"/v0/prices/{mine['id']}").json()["invoiceDisplayName"] == "Tokens"


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"model": "dynamic", "properties": {"minPrice": "1", "maxPrice": "2"}}, "model", "standard"),
        ({"paymentTerm": "instant"}, "paymentTerm", "in_advance or in_arrears"),
        ({"billingCadence": None}, "billingCadence", "required for fee prices"),
        ({"billingCadence": "P2X"}, "billingCadence", "P1M"),
        ({"grantDiscountEnabled": True}, "grantDiscountEnabled", "standard billable-metric"),
    ],
)
def test_fee_price_rules(
    cat: Catalog, client: httpx.Client, overrides: dict[str, Any], field: str, fragment: str
) -> None:
    errs = field_errors(client.post("/v0/prices", json=fee_price(cat.fee, **overrides)))
    assert fragment in errs[field], errs
    assert total(client) == 0


@pytest.mark.parametrize("term", ["in_advance", "in_arrears"])
@pytest.mark.parametrize("cadence", ["P0D", "P1M", "P3M", "P1Y", "P7D", "P2W"])
def test_fee_price_terms_and_cadences(cat: Catalog, term: str, cadence: str) -> None:
    price = cat.fee_price(paymentTerm=term, billingCadence=cadence)
    assert (price["paymentTerm"], price["billingCadence"], price["model"]) == (term, cadence, "standard")


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"model": None}, "model", "required for billable-metric prices"),
        ({"paymentTerm": "in_advance"}, "paymentTerm", "in_advance is for fee prices"),
        ({"billingCadence": "P0D"}, "billingCadence", "fee prices"),
        ({"billingCadence": "P1001D"}, "billingCadence", "1000"),
        ({"billingCadence": "P0M"}, "billingCadence", "P1M"),
        ({"billingCadence": "PT1H"}, "billingCadence", "P1M"),
        ({"billingCadence": "monthly"}, "billingCadence", "P1M"),
        (
            {
                "model": "dynamic",
                "properties": {"minPrice": "1", "maxPrice": "2"},
                "grantDiscountEnabled": True,
            },
            "grantDiscountEnabled",
            "standard",
        ),
    ],
)
def test_metric_price_rules(
    cat: Catalog, client: httpx.Client, overrides: dict[str, Any], field: str, fragment: str
) -> None:
    errs = field_errors(client.post("/v0/prices", json=metric_price(cat.metric, **overrides)))
    assert fragment in errs[field], errs
    assert total(client) == 0


@pytest.mark.parametrize(
    ("term", "cadence"), [("instant", None), ("in_arrears", "P1M"), ("in_arrears", "P1Y6M")]
)
def test_metric_price_terms_and_cadences(cat: Catalog, term: str, cadence: str | None) -> None:
    price = cat.price(paymentTerm=term, billingCadence=cadence)
    assert (price["paymentTerm"], price["billingCadence"]) == (term, cadence)


def test_percentage_needs_a_currency_metric(cat: Catalog, client: httpx.Client) -> None:
    props = {"percentage": "0.05", "minCharge": "0", "maxCharge": "2000"}
    errs = field_errors(
        client.post("/v0/prices", json=metric_price(cat.metric, model="percentage", properties=props))
    )
    assert "currency code" in errs["model"] and "'tokens'" in errs["model"]
    assert total(client) == 0
    assert (
        cat.price(billableMetricId=cat.usd_metric, model="percentage", properties=props)["model"]
        == "percentage"
    )


def test_errors_are_reported_together(cat: Catalog, client: httpx.Client) -> None:
    body = fee_price(cat.fee, paymentTerm="instant", billingCadence=None, properties={"unitPrice": 1})
    assert set(field_errors(client.post("/v0/prices", json=body))) == {
        "paymentTerm",
        "billingCadence",
        "properties.unitPrice",
    }


def test_feature_must_belong_to_the_same_product(cat: Catalog, client: httpx.Client) -> None:
    elsewhere = cat.new_feature(product=cat.new_product())
    body = metric_price(cat.metric, feature={"featureId": elsewhere})
    errs = field_errors(client.post("/v0/prices", json=body))
    assert cat.product in errs["feature.featureId"]
    assert total(client) == 0


def test_patch_feature_null_removes_it_and_omitted_keeps_it(cat: Catalog, client: httpx.Client) -> None:
    price = cat.price(feature={"featureId": cat.feature})
    first = price["features"][0]
    assert first["entitlementTemplate"] == {} and first["feature"]["name"] == "API access"

    same = client.patch(
        f"/v0/prices/{price['id']}",
        json={"feature": {"featureId": cat.feature, "entitlementTemplate": {"n": 2}}},
    ).json()
    assert same["features"][0]["id"] == first["id"] and same["features"][0]["entitlementTemplate"] == {"n": 2}

    other = cat.new_feature(key="seats")
    moved = client.patch(f"/v0/prices/{price['id']}", json={"feature": {"featureId": other}}).json()
    assert moved["features"][0]["featureId"] == other and moved["features"][0]["id"] != first["id"]

    kept = client.patch(f"/v0/prices/{price['id']}", json={"invoiceDisplayName": "Renamed"}).json()
    assert kept["features"] == moved["features"]
    removed = client.patch(f"/v0/prices/{price['id']}", json={"feature": None}).json()
    assert removed["features"] == []
    assert client.get(f"/v0/prices/{price['id']}").json()["features"] == []


def test_patch_validates_the_merged_price_and_writes_nothing_on_failure(
    cat: Catalog, client: httpx.Client
) -> None:
    price = cat.price()
    url = f"/v0/prices/{price['id']}"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "dynamic"}, "properties.minPrice"),
        ({"properties": {"minPrice": "1", "maxPrice": "2"}}, "properties.unitPrice"),
        ({"paymentTerm": "in_advance"}, "paymentTerm"),
        ({"invoiceDisplayName": None}, "invoiceDisplayName"),
        ({"paymentTerm": None}, "paymentTerm"),
        ({"grantDiscountEnabled": True, "model": "percentage"}, "grantDiscountEnabled"),
    ]
    for patch, field in cases:
        assert field in field_errors(client.patch(url, json=patch)), patch
    assert client.get(url).json() == price

    fee = cat.fee_price()
    assert "billingCadence" in field_errors(
        client.patch(f"/v0/prices/{fee['id']}", json={"billingCadence": None})
    )
    assert "model" in field_errors(client.patch(f"/v0/prices/{fee['id']}", json={"model": "volume"}))


def test_patch_can_change_every_field(cat: Catalog, client: httpx.Client) -> None:
    price = cat.price(billingCadence="P1M")
    props = {"percentage": "0.05", "minCharge": "0.30", "maxCharge": "100"}
    patch = {
        "billableMetricId": cat.usd_metric,
        "model": "percentage",
        "properties": props,
        "paymentTerm": "instant",
        "billingCadence": None,
        "invoiceDisplayName": "Revenue share",
        "feature": {"featureId": cat.feature},
        "grantDiscountEnabled": False,
    }
    updated = client.patch(f"/v0/prices/{price['id']}", json=patch).json()
    assert (updated["billableMetricId"], updated["model"], updated["properties"]) == (
        cat.usd_metric,
        "percentage",
        props,
    )
    assert (updated["paymentTerm"], updated["billingCadence"], updated["invoiceDisplayName"]) == (
        "instant",
        None,
        "Revenue share",
    )
    assert [f["featureId"] for f in updated["features"]] == [cat.feature]


def test_patching_a_metric_onto_a_fee_price_replaces_the_fee(cat: Catalog, client: httpx.Client) -> None:
    price = cat.fee_price()
    url = f"/v0/prices/{price['id']}"
    assert "paymentTerm" in field_errors(client.patch(url, json={"billableMetricId": cat.metric}))
    switched = client.patch(url, json={"billableMetricId": cat.metric, "paymentTerm": "in_arrears"}).json()
    assert (switched["billableMetricId"], switched["feeId"], switched["model"]) == (
        cat.metric,
        None,
        "standard",
    )


def test_patch_to_foreign_metric_is_not_found(
    cat: Catalog, client: httpx.Client, other_client: httpx.Client, other_merchant: NewMerchant
) -> None:
    theirs = make_catalog(other_client, other_merchant)
    price = cat.price()
    assert_error(client.patch(f"/v0/prices/{price['id']}", json={"billableMetricId": theirs.metric}), 404)
    assert client.get(f"/v0/prices/{price['id']}").json()["billableMetricId"] == cat.metric


def test_patch_must_keep_linked_plans_valid(cat: Catalog, client: httpx.Client) -> None:
    price = cat.price()
    plan = {"merchantId": cat.merchant.merchant_id, "name": "Pro", "currency": "USD", "prices": [price["id"]]}
    created(client.post("/v0/plans", json=plan | {"billingVersion": 1}))
    errs = field_errors(client.patch(f"/v0/prices/{price['id']}", json={"paymentTerm": "instant"}))
    assert "Legacy" in errs["plans"]
    elsewhere = cat.new_metric(product=cat.new_product())
    errs = field_errors(client.patch(f"/v0/prices/{price['id']}", json={"billableMetricId": elsewhere}))
    assert "belongs to product" in errs["plans"]
    assert client.get(f"/v0/prices/{price['id']}").json() == price


def test_delete_refuses_a_price_linked_to_a_plan(cat: Catalog, client: httpx.Client) -> None:
    price, spare = cat.price(), cat.fee_price()
    plan_body = {"merchantId": cat.merchant.merchant_id, "name": "Pro", "currency": "USD"}
    plan = created(client.post("/v0/plans", json=plan_body | {"prices": [price["id"], spare["id"]]}))
    body = assert_error(client.delete(f"/v0/prices/{price['id']}"), 409, "conflict")
    assert plan["id"] in body["message"]
    assert body["details"]["blockers"] == [{"type": "plans", "count": 1, "items": [{"id": plan["id"]}]}]
    assert client.get(f"/v0/prices/{price['id']}").status_code == 200

    assert client.patch(f"/v0/plans/{plan['id']}", json={"prices": [spare["id"]]}).status_code == 200
    assert client.delete(f"/v0/prices/{price['id']}").status_code == 204
    assert_error(client.delete(f"/v0/prices/{price['id']}"), 404)


def test_list_pages_and_filters(
    cat: Catalog, client: httpx.Client, other_merchant: NewMerchant, merchant: NewMerchant
) -> None:
    ids = [cat.price(invoiceDisplayName=f"p{i}")["id"] for i in range(3)]
    fee = cat.fee_price()["id"]
    first = client.get("/v0/prices", params={"limit": 2, "offset": 0}).json()
    second = client.get("/v0/prices", params={"limit": 2, "offset": 2}).json()
    assert [p["id"] for p in first["data"] + second["data"]] == [*ids, fee]
    assert first["pagination"] == {"limit": 2, "offset": 0, "total": 4, "hasMore": True}
    filtered = client.get("/v0/prices", params={"billableMetricId": cat.metric}).json()
    assert [p["id"] for p in filtered["data"]] == ids
    assert client.get("/v0/prices", params={"billableMetricId": "bm_none"}).json()["data"] == []
    assert client.get("/v0/prices", params={"merchantId": merchant.merchant_id}).status_code == 200
    assert_error(
        client.get("/v0/prices", params={"merchantId": other_merchant.merchant_id}), 403, "forbidden"
    )


def test_sdk_surfaces_errors_as_typed_errors(sdk: Paygentic, cat: Catalog) -> None:
    with pytest.raises(errors.Error) as missing:
        sdk.prices.get(id="price_doesnotexist")
    assert missing.value.status_code == 404
    with pytest.raises(errors.BadRequest) as bad:
        sdk.prices.create(
            invoice_display_name="x",
            payment_term="in_advance",
            properties=models.PriceProperties1(unit_price="1"),
            billable_metric_id=cat.metric,
            model="standard",
        )
    assert bad.value.status_code == 400 and "in_advance is for fee prices" in bad.value.message


def test_sdk_0_6_3_parses_every_price_shape(api_url: str, cat: Catalog, merchant: NewMerchant) -> None:
    volume = {
        "default": "0.05",
        "parameters": {"function": "linear", "gradient": "-0.00001", "min": "0.01", "max": "0.05"},
    }
    prices = [
        cat.price(feature={"featureId": cat.feature, "entitlementTemplate": {"limit": 1}}),
        cat.price(model="dynamic", properties={"minPrice": "0.01", "maxPrice": "0.10"}),
        cat.price(model="volume", properties=volume),
        cat.price(
            billableMetricId=cat.usd_metric,
            model="percentage",
            properties={"percentage": "0.05", "minCharge": "0", "maxCharge": "2000"},
        ),
        cat.fee_price(billingCadence="P0D"),
    ]
    parsed = sdk063_get(api_url, merchant, "prices", [p["id"] for p in prices])
    for price in prices:
        got = parsed[price["id"]]
        assert isinstance(got, dict), got
        assert (got["merchantId"], got["quantity"], got["tax"]["supplyScope"]) == (
            merchant.merchant_id,
            1,
            "IN_SCOPE",
        )
        assert got["paymentTerm"] == price["paymentTerm"]
    assert parsed[prices[0]["id"]]["features"][0]["entitlementTemplate"] == {"limit": 1}
    assert parsed[prices[3]["id"]]["properties"]["percentage"] == "0.05"


# ---- the extension models: volume bands, graduated, package (docs/api-extensions.md) ------------------

BANDS = [{"upTo": "100", "unitPrice": "5"}, {"upTo": None, "unitPrice": "3"}]


@pytest.mark.parametrize(
    ("model", "properties", "shown"),
    [
        ("volume", {"tiers": BANDS}, {"tiers": BANDS, "unitPrice": "5"}),
        (
            "graduated",
            {
                "tiers": [
                    {"upTo": "10", "unitPrice": "0.5", "flatPrice": "20"},
                    {"upTo": None, "unitPrice": "0.1"},
                ]
            },
            {
                "tiers": [
                    {"upTo": "10", "unitPrice": "0.5", "flatPrice": "20"},
                    {"upTo": None, "unitPrice": "0.1"},
                ],
                "unitPrice": "0.5",
            },
        ),
        (
            "package",
            {"packageSize": "1000", "packagePrice": "5"},
            {"packageSize": "1000", "packagePrice": "5", "rounding": "up", "unitPrice": "0.005"},
        ),
        (
            "package",
            {"packageSize": "3", "packagePrice": "10", "rounding": "down"},
            {"packageSize": "3", "packagePrice": "10", "rounding": "down", "unitPrice": "3.333333333"},
        ),
    ],
)
def test_extension_models_are_stored_and_shown(
    cat: Catalog, client: httpx.Client, model: str, properties: dict[str, Any], shown: dict[str, Any]
) -> None:
    # The compatibility unitPrice is read-only: sent back, it is dropped with the other unknown keys.
    price = cat.price(model=model, properties=properties | {"unknown": "x", "unitPrice": "99"})
    assert price["model"] == model and price["properties"] == shown
    assert client.get(f"/v0/prices/{price['id']}").json()["properties"] == shown
    patched = client.patch(f"/v0/prices/{price['id']}", json={"properties": shown})
    assert patched.status_code == 200, patched.text
    assert patched.json()["properties"] == shown


def test_a_price_changes_between_volume_forms(cat: Catalog, client: httpx.Client) -> None:
    linear = {
        "default": "1",
        "parameters": {"function": "linear", "gradient": "-0.001", "min": "0.1", "max": "1"},
    }
    price = cat.price(model="volume", properties=linear)
    # SDK 0.6.3 reads a linear price with `tiers: []` and may send it back so: still linear.
    again = client.patch(f"/v0/prices/{price['id']}", json={"properties": price["properties"]})
    assert again.json()["properties"] == linear | {"tiers": []}
    bands = client.patch(f"/v0/prices/{price['id']}", json={"properties": {"tiers": BANDS}})
    assert bands.json()["properties"] == {"tiers": BANDS, "unitPrice": "5"}
    graduated = client.patch(f"/v0/prices/{price['id']}", json={"model": "graduated"})
    assert (graduated.json()["model"], graduated.json()["properties"]["tiers"]) == ("graduated", BANDS)


def ladder(*bands: tuple[Any, Any]) -> dict[str, Any]:
    return {"tiers": [{"upTo": up_to, "unitPrice": price} for up_to, price in bands]}


@pytest.mark.parametrize(
    ("model", "properties", "field", "message"),
    [
        (
            "volume",
            {},
            "properties.tiers",
            'is required for the volume model: a list of bands [{"upTo", "unitPrice"}], ascending by upTo, '
            "the last with upTo null",
        ),
        (
            "volume",
            {"tiers": []},
            "properties.tiers",
            'must be a list of bands [{"upTo", "unitPrice"}], ascending by upTo, the last with upTo null',
        ),
        (
            "volume",
            {"tiers": BANDS, "default": "1"},
            "properties.tiers",
            "give either tiers (bands) or default and parameters (a linear function), not both",
        ),
        (
            "volume",
            {
                "tiers": [
                    {"upTo": "100", "unitPrice": "5", "flatPrice": "1"},
                    {"upTo": None, "unitPrice": "3"},
                ]
            },
            "properties.tiers[0].flatPrice",
            "is not part of the volume model; graduated bands have it",
        ),
        (
            "graduated",
            {},
            "properties.tiers",
            'is required for the graduated model: a list of bands [{"upTo", "unitPrice", "flatPrice"?}], '
            "ascending by upTo, the last with upTo null",
        ),
        (
            "graduated",
            {"tiers": ["100@5"]},
            "properties.tiers[0]",
            'must be an object {"upTo", "unitPrice"}, not a JSON string',
        ),
        (
            "graduated",
            ladder(("100", "5"), ("100", "4"), (None, "3")),
            "properties.tiers[1].upTo",
            "must be greater than the previous band's upTo (100)",
        ),
        (
            "graduated",
            ladder((None, "5"), (None, "3")),
            "properties.tiers[0].upTo",
            "may be null only on the last band; give this band's upper bound",
        ),
        (
            "graduated",
            ladder(("100", "5"), ("1000", "3")),
            "properties.tiers[1].upTo",
            "must be null on the last band, so that every quantity has a band",
        ),
        (
            "volume",
            {"tiers": [{"unitPrice": "5"}, {"upTo": None, "unitPrice": "3"}]},
            "properties.tiers[0].upTo",
            "is required: a decimal string, or null on the last band",
        ),
        ("volume", ladder(("0", "5"), (None, "3")), "properties.tiers[0].upTo", "must be greater than 0"),
        (
            "volume",
            ladder((100, "5"), (None, "3")),
            "properties.tiers[0].upTo",
            'must be a decimal written as a string, such as "0.05", not a JSON number',
        ),
        (
            "volume",
            ladder(("100", "-5"), (None, "3")),
            "properties.tiers[0].unitPrice",
            "must not be negative",
        ),
        (
            "graduated",
            {"tiers": [{"upTo": None}]},
            "properties.tiers[0].unitPrice",
            "is required for the graduated model",
        ),
        ("package", {"packagePrice": "5"}, "properties.packageSize", "is required for the package model"),
        ("package", {"packageSize": "10"}, "properties.packagePrice", "is required for the package model"),
        (
            "package",
            {"packageSize": "0", "packagePrice": "5"},
            "properties.packageSize",
            "must be greater than 0: the number of units in one package",
        ),
        (
            "package",
            {"packageSize": "10", "packagePrice": "5", "rounding": "nearest"},
            "properties.rounding",
            'must be "up" (a started package is billed whole; the default) or "down" '
            "(only complete packages are billed)",
        ),
    ],
)
def test_extension_model_properties_must_match(
    cat: Catalog, client: httpx.Client, model: str, properties: dict[str, Any], field: str, message: str
) -> None:
    errs = field_errors(
        client.post("/v0/prices", json=metric_price(cat.metric, model=model, properties=properties))
    )
    assert errs.get(field) == message, errs
    assert total(client) == 0


@pytest.mark.parametrize("model", ["volume", "graduated", "package"])
def test_fee_prices_stay_standard(cat: Catalog, client: httpx.Client, model: str) -> None:
    errs = field_errors(client.post("/v0/prices", json=fee_price(cat.fee, model=model)))
    assert errs["model"] == f"fee prices only support the standard model, not {model!r}"
