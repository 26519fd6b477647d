"""Runs under paygentic-sdk 0.6.3 (its own virtualenv): every issue-2 operation that 0.6.3 still has.

Usage: python sdk063_driver.py <server_url> <api_key> <merchant_id> <user_id>
Prints one JSON object: {"<resource>.<op>": "ok" | "<error>"}; exits 0 either way.
"""

import json
import sys
import uuid

from paygentic_sdk import Paygentic, models

url, key, merchant_id, user_id = sys.argv[1:5]
results: dict = {}


def step(name, call, check=lambda r: True):
    try:
        response = call()
        results[name] = "ok" if check(response) else f"unexpected response: {response!r}"[:500]
        return response
    except Exception as exc:  # report, keep going: the test asserts on the whole map
        results[name] = f"{type(exc).__name__}: {exc}"[:500]
        return None


with Paygentic(server_url=url, bearer_auth=key) as p:
    product = step(
        "products.create",
        lambda: p.products.create(description="d", merchant_id=merchant_id, name="SDK 0.6.3 product"),
    )
    pid = product.id
    step("products.get", lambda: p.products.get(id=pid), lambda r: r.id == pid)
    step("products.update", lambda: p.products.update(id=pid, name="renamed"), lambda r: r.name == "renamed")
    step(
        "products.list",
        lambda: p.products.list(request={"merchant_id": merchant_id}),
        lambda r: r.pagination.total >= 1 and any(x.id == pid for x in r.data),
    )

    metric = step(
        "billable_metrics.create",
        lambda: p.billable_metrics.create(
            aggregation="SUM",
            description="d",
            merchant_id=merchant_id,
            name="tokens",
            unit="tokens",
            event_type="llm.tokens",
            product_id=pid,
            value_property="$.tokens",
        ),
        lambda r: r.event_type == "llm.tokens" and r.item_id is None,
    )
    mid = metric.id
    step("billable_metrics.get", lambda: p.billable_metrics.get(id=mid), lambda r: r.id == mid)
    step(
        "billable_metrics.update",
        lambda: p.billable_metrics.update(id=mid, name="input tokens"),
        lambda r: r.name == "input tokens",
    )
    step(
        "billable_metrics.list",
        lambda: p.billable_metrics.list(merchant_id=merchant_id),
        lambda r: r.pagination.total == 1,
    )

    fee = step(
        "fees.create",
        lambda: p.fees.create(
            name="Platform", description="monthly", merchant_id=merchant_id, product_id=pid
        ),
    )
    fid = fee.id
    step("fees.get", lambda: p.fees.get(id=fid), lambda r: r.id == fid)
    step(
        "fees.update", lambda: p.fees.update(id=fid, name="Platform fee"), lambda r: r.name == "Platform fee"
    )
    step("fees.list", lambda: p.fees.list(merchant_id=merchant_id), lambda r: r.pagination.total == 1)

    feature = step(
        "features.create",
        lambda: p.features.create(key="api-access", name="API", merchant_id=merchant_id, product_id=pid),
    )
    feat_id = feature.id
    step("features.get", lambda: p.features.get(id=feat_id), lambda r: r.key == "api-access")
    step(
        "features.update",
        lambda: p.features.update(id=feat_id, name="API access"),
        lambda r: r.name == "API access",
    )
    step("features.list", lambda: p.features.list(product_id=pid), lambda r: r.pagination.total == 1)

    price = step(
        "prices.create",
        lambda: p.prices.create(
            invoice_display_name="Tokens",
            payment_term="in_arrears",
            properties={"unit_price": "0.000012"},
            billable_metric_id=mid,
            model="standard",
        ),
        lambda r: r.properties.unit_price == "0.000012" and r.merchant_id == merchant_id,
    )
    price_id = price.id
    fee_price = step(
        "prices.create(fee)",
        lambda: p.prices.create(
            invoice_display_name="Platform",
            payment_term="in_advance",
            properties={"unit_price": "49.00"},
            fee_id=fid,
            billing_cadence="P1M",
        ),
    )
    step("prices.get", lambda: p.prices.get(id=price_id), lambda r: r.id == price_id and r.quantity == 1)
    step(
        "prices.update",
        lambda: p.prices.update(id=price_id, invoice_display_name="Input tokens"),
        lambda r: r.invoice_display_name == "Input tokens",
    )
    step("prices.list", lambda: p.prices.list(request={}), lambda r: r.pagination.total >= 2)

    plan = step(
        "plans.create",
        lambda: p.plans.create(
            currency="USD",
            merchant_id=merchant_id,
            name="Pro",
            product_id=pid,
            billing_cadence="P1M",
            prices=[price_id, fee_price.id],
        ),
        lambda r: r.billing_version == 1 and len(r.prices) == 2 and r.version_transition.proration == "none",
    )
    plan_id = plan.id
    step("plans.get", lambda: p.plans.get(id=plan_id), lambda r: r.id == plan_id)
    step("plans.update", lambda: p.plans.update(id=plan_id, name="Pro 2"), lambda r: r.name == "Pro 2")
    step(
        "plans.list",
        lambda: p.plans.list(request={"merchant_id": merchant_id}),
        lambda r: r.pagination.total == 1,
    )

    spare = step(
        "prices.create(spare)",
        lambda: p.prices.create(
            invoice_display_name="Spare",
            payment_term="in_arrears",
            properties={"unit_price": "1"},
            billable_metric_id=mid,
            model="standard",
        ),
    )
    step("prices.delete", lambda: p.prices.delete(id=spare.id), lambda r: r is None)
    spare_fee = step(
        "fees.create(spare)",
        lambda: p.fees.create(name="Spare", description="d", merchant_id=merchant_id, product_id=pid),
    )
    step("fees.delete", lambda: p.fees.delete(id=spare_fee.id), lambda r: r is None)
    spare_feature = step(
        "features.create(spare)",
        lambda: p.features.create(key="spare", name="Spare", merchant_id=merchant_id, product_id=pid),
    )
    step("features.delete", lambda: p.features.delete(id=spare_feature.id), lambda r: r is None)

    email = f"ada+{uuid.uuid4().hex[:8]}@example.com"
    consumer = models.CreateCustomerConsumer(
        name="Ada", email=email, address={"country": "GB", "zip_code": "N1 9GU", "line1": "1 Main St"}
    )
    created = step(
        "customers.create",
        lambda: p.customers.create(merchant_id=merchant_id, consumer=consumer, external_id="ada-1"),
        lambda r: r.valid_tax_address.valid is True,
    )
    cid = created.customer_id
    step("customers.get", lambda: p.customers.get(id=cid), lambda r: r.external_id == "ada-1")
    step(
        "customers.update",
        lambda: p.customers.update(id=cid, tax_id="GB123456789"),
        lambda r: r.tax_id == "GB123456789",
    )
    step(
        "customers.list",
        lambda: p.customers.list(organization_id=merchant_id, external_id="ada-1"),
        lambda r: [c.id for c in r.data] == [cid] and r.pagination.total == 1,
    )
    step("customers.delete", lambda: p.customers.delete(id=cid), lambda r: r is None)

    step("users.get", lambda: p.users.get(id=user_id), lambda r: r.id == user_id)
    step(
        "users.update",
        lambda: p.users.update(id=user_id, first_name="Grace"),
        lambda r: r.first_name == "Grace",
    )

print(json.dumps(results))
