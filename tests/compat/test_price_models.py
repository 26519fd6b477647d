"""Every price model, including the extensions (volume bands, graduated, package), parses under both SDKs:
prices.list, prices.get and plans.get on a plan that mixes them all (docs/api-extensions.md)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
from paygentic_sdk import Paygentic, models

from db.merchants import NewMerchant
from tests.helpers import sdk063_python

LADDER = [{"upTo": "100", "unitPrice": "5"}, {"upTo": None, "unitPrice": "3"}]
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (model, properties sent)
    "standard": ("standard", {"unitPrice": "0.000012"}),
    "dynamic": ("dynamic", {"minPrice": "0.01", "maxPrice": "0.10"}),
    "linear": (
        "volume",
        {
            "default": "0.05",
            "parameters": {"function": "linear", "gradient": "-0.00001", "min": "0.01", "max": "0.05"},
        },
    ),
    "bands": ("volume", {"tiers": LADDER}),
    "percentage": ("percentage", {"percentage": "0.029", "minCharge": "0.30", "maxCharge": "100"}),
    "graduated": (
        "graduated",
        {"tiers": [{"upTo": "10", "unitPrice": "0", "flatPrice": "20"}, {"upTo": None, "unitPrice": "0.5"}]},
    ),
    "package": ("package", {"packageSize": "1000", "packagePrice": "5", "rounding": "down"}),
}


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def metric(client: httpx.Client, merchant: NewMerchant, product: str, name: str, unit: str = "calls") -> str:
    body = {
        "merchantId": merchant.merchant_id,
        "productId": product,
        "name": name,
        "description": "d",
        "unit": unit,
        "aggregation": "SUM",
        "valueProperty": "$.value",
    }
    return str(created(client.post("/v0/billableMetrics", json=body))["id"])


def mixed_plan(client: httpx.Client, merchant: NewMerchant) -> tuple[str, dict[str, dict[str, Any]]]:
    """A plan with one price of every model (each on its own metric: a plan prices a metric once)."""
    m = merchant.merchant_id
    product = created(client.post("/v0/products", json={"merchantId": m, "name": "All", "description": "d"}))
    prices = {}
    for name, (model, properties) in MODELS.items():
        body = {
            "billableMetricId": metric(
                client, merchant, product["id"], name, "USD" if model == "percentage" else "calls"
            ),
            "model": model,
            "paymentTerm": "in_arrears",
            "invoiceDisplayName": name,
            "properties": properties,
        }
        prices[name] = created(client.post("/v0/prices", json=body))
    plan = created(
        client.post(
            "/v0/plans",
            json={
                "merchantId": m,
                "productId": product["id"],
                "name": "Mixed",
                "currency": "USD",
                "prices": [p["id"] for p in prices.values()],
            },
        )
    )
    return str(plan["id"]), prices


def test_extension_models_show_their_properties_and_a_compatibility_unit_price(
    client: httpx.Client, merchant: NewMerchant
) -> None:
    _, prices = mixed_plan(client, merchant)
    assert prices["bands"]["properties"] == {"tiers": LADDER, "unitPrice": "5"}
    assert prices["graduated"]["properties"] == MODELS["graduated"][1] | {"unitPrice": "0"}
    assert prices["package"]["properties"] == MODELS["package"][1] | {"unitPrice": "0.005"}
    assert prices["linear"]["properties"] == MODELS["linear"][1] | {"tiers": []}


def test_sdk_0_1_34_parses_every_model(sdk: Paygentic, client: httpx.Client, merchant: NewMerchant) -> None:
    plan_id, prices = mixed_plan(client, merchant)
    listed = sdk.prices.list(request={})
    assert listed.data is not None and {p.id for p in listed.data} == {p["id"] for p in prices.values()}
    for name, price in prices.items():
        got = sdk.prices.get(id=price["id"])
        assert (got.id, got.model) == (price["id"], MODELS[name][0])
    # 0.1.34 sees the extension models through their compatibility unitPrice.
    assert sdk.prices.get(id=prices["bands"]["id"]).properties == models.PriceProperties1(unit_price="5")
    assert sdk.prices.get(id=prices["package"]["id"]).properties == models.PriceProperties1(
        unit_price="0.005"
    )
    assert isinstance(sdk.prices.get(id=prices["linear"]["id"]).properties, models.PriceProperties3)
    plan = sdk.plans.get(id=plan_id)
    by_id = {p.id: p for p in plan.prices or []}
    assert set(by_id) == {p["id"] for p in prices.values()}
    # plans.get carries properties as a plain object: the real ladder is there.
    assert by_id[prices["graduated"]["id"]].properties["tiers"] == MODELS["graduated"][1]["tiers"]


SDK063 = """
import json, sys
from paygentic_sdk import Paygentic
url, key, plan_id, metric_id = sys.argv[1:5]
out = {}
def dump(obj):
    return obj.model_dump(mode="json", by_alias=True)
def step(name, call):
    try:
        out[name] = call()
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"
with Paygentic(server_url=url, bearer_auth=key) as p:
    step("create", lambda: dump(p.prices.create(
        invoice_display_name="Bands", payment_term="in_arrears", billable_metric_id=metric_id, model="volume",
        properties={"tiers": [{"up_to": "100", "unit_price": "5"}, {"up_to": None, "unit_price": "3"}]},
    )))
    step("list", lambda: [dump(x) for x in p.prices.list(request={}).data])
    step("get", lambda: [dump(p.prices.get(id=x["id"])) for x in out["list"]])
    step("plan", lambda: dump(p.plans.get(id=plan_id)))
print(json.dumps(out))
"""


def test_sdk_0_6_3_creates_volume_bands_and_parses_every_model(
    api_url: str, client: httpx.Client, merchant: NewMerchant
) -> None:
    plan_id, prices = mixed_plan(client, merchant)
    spare = metric(client, merchant, client.get(f"/v0/plans/{plan_id}").json()["productId"], "spare")
    run = subprocess.run(
        [sdk063_python(), "-c", SDK063, api_url, merchant.api_key, plan_id, spare],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for step in ("create", "list", "get", "plan"):
        assert not isinstance(out[step], str), out[step]
    # The band form SDK 0.6.3 sends is stored and read back as bands, by the SDK and by the API.
    assert out["create"]["properties"] == {"tiers": LADDER}
    stored = client.get(f"/v0/prices/{out['create']['id']}").json()
    assert (stored["model"], stored["properties"]) == ("volume", {"tiers": LADDER, "unitPrice": "5"})
    got = {p["id"]: p for p in out["get"]}
    assert set(got) == {p["id"] for p in prices.values()} | {out["create"]["id"]}
    assert got[prices["bands"]["id"]]["properties"] == {"tiers": LADDER}
    assert got[prices["graduated"]["id"]]["model"] == "graduated"
    assert got[prices["package"]["id"]]["model"] == "package"
    assert {p["id"] for p in out["plan"]["prices"]} == {p["id"] for p in prices.values()}
