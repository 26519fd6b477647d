"""paygentic-sdk 0.1.34 — the compatibility target — drives every issue-2 operation against the running API,
and every response parses and says back what was sent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from paygentic_sdk import Paygentic, models

from db.merchants import NewMerchant


def test_catalog_operations(sdk: Paygentic, merchant: NewMerchant) -> None:
    m = merchant.merchant_id
    product = sdk.products.create(description="Agents", merchant_id=m, name="ProspectAI")
    assert (product.name, product.description, product.merchant_id) == ("ProspectAI", "Agents", m)
    assert sdk.products.get(id=product.id).id == product.id
    assert sdk.products.update(id=product.id, description="AI agents").description == "AI agents"
    listed_products = sdk.products.list(request={"merchant_id": m})
    assert listed_products.data is not None and [p.id for p in listed_products.data] == [product.id]

    event_from = datetime(2026, 1, 1, tzinfo=UTC)
    metric = sdk.billable_metrics.create(
        aggregation="SUM",
        description="Revenue in USD",
        merchant_id=m,
        name="revenue_usd",
        product_id=product.id,
        unit="USD",
        event_type="stripe.revenue",
        value_property="$.amount",
        group_by={"region": "$.region"},
        event_from=event_from,
    )
    assert (metric.aggregation, metric.unit, metric.event_type, metric.value_property) == (
        "SUM",
        "USD",
        "stripe.revenue",
        "$.amount",
    )
    assert metric.group_by == {"region": "$.region"} and metric.event_from == event_from
    assert sdk.billable_metrics.get(id=metric.id).product_id == product.id
    updated_metric = sdk.billable_metrics.update(id=metric.id, description="Revenue", group_by=None)
    assert updated_metric.description == "Revenue" and updated_metric.group_by is None
    metrics = sdk.billable_metrics.list(merchant_id=m, product_id=product.id)
    assert [x.id for x in metrics.data] == [metric.id] and metrics.pagination.total == 1
    count_metric = sdk.billable_metrics.create(
        aggregation="COUNT",
        description="calls",
        merchant_id=m,
        name="calls",
        product_id=product.id,
        unit="calls",
    )

    fee = sdk.fees.create(name="Setup", description="One-time setup", merchant_id=m, product_id=product.id)
    assert (fee.name, fee.description, fee.product_id) == ("Setup", "One-time setup", product.id)
    assert sdk.fees.get(id=fee.id).id == fee.id
    assert sdk.fees.update(id=fee.id, name="Setup fee").name == "Setup fee"
    assert [f.id for f in sdk.fees.list(merchant_id=m).data] == [fee.id]

    feature = sdk.features.create(key="api-access", name="API access", merchant_id=m, product_id=product.id)
    assert (feature.key, feature.type, feature.metadata) == ("api-access", "boolean", {})
    assert sdk.features.get(id=feature.id).key == "api-access"
    assert sdk.features.update(id=feature.id, type_="static", metadata={"tier": "pro"}).metadata == {
        "tier": "pro"
    }
    assert [f.id for f in sdk.features.list(product_id=product.id, key="api-access").data] == [feature.id]

    percentage = sdk.prices.create(
        invoice_display_name="Revenue share",
        payment_term="in_arrears",
        properties=models.PriceProperties4(percentage="0.05", min_charge="0.00", max_charge="2000.00"),
        billable_metric_id=metric.id,
        model="percentage",
    )
    assert percentage.model == "percentage" and percentage.properties.percentage == "0.05"  # type: ignore[union-attr]
    dynamic = sdk.prices.create(
        invoice_display_name="Calls",
        payment_term="in_arrears",
        properties=models.PriceProperties2(min_price="0.01", max_price="0.10"),
        billable_metric_id=count_metric.id,
        model="dynamic",
        feature=models.PriceFeatureInput(feature_id=feature.id, entitlement_template={"enabled": True}),
    )
    assert dynamic.features is not None and [f.feature_id for f in dynamic.features] == [feature.id]
    setup_price = sdk.prices.create(
        invoice_display_name="Setup",
        payment_term="in_advance",
        properties=models.PriceProperties1(unit_price="99.00"),
        fee_id=fee.id,
        billing_cadence="P0D",
    )
    assert (setup_price.fee_id, setup_price.model, setup_price.billing_cadence) == (fee.id, "standard", "P0D")
    assert sdk.prices.get(id=setup_price.id).properties.unit_price == "99.00"  # type: ignore[union-attr]
    volume = sdk.prices.update(
        id=dynamic.id,
        model="volume",
        properties=models.PriceProperties3(
            default="0.05",
            parameters=models.Parameters(function="linear", gradient="-0.00001", max="0.05", min="0.01"),
        ),
        feature=None,
    )
    assert volume.model == "volume" and volume.features == []
    priced = sdk.prices.list(request={"billable_metric_id": count_metric.id})
    assert priced.data is not None and [p.id for p in priced.data] == [dynamic.id]

    plan = sdk.plans.create(
        currency="USD",
        merchant_id=m,
        name="Revenue share",
        billing_interval="monthly",
        product_id=product.id,
        prices=[percentage.id, setup_price.id],
        billing_version=1,
        default_tax_rate=8.5,
    )
    assert (plan.billing_cadence, plan.billing_interval, plan.billing_version) == ("P1M", "monthly", 1)
    assert plan.prices is not None and [p.id for p in plan.prices] == [percentage.id, setup_price.id]
    assert Decimal(str(plan.default_tax_rate)) == Decimal("8.5") and plan.tax_behavior == "exclusive"
    assert sdk.plans.get(id=plan.id).id == plan.id
    yearly = sdk.plans.update(id=plan.id, billing_cadence="P1Y", prices=[percentage.id, volume.id])
    assert yearly.billing_interval == "yearly" and [p.id for p in yearly.prices or []] == [
        percentage.id,
        volume.id,
    ]
    listed_plans = sdk.plans.list(request={"merchant_id": m, "product_id": product.id})
    assert listed_plans.data is not None and [p.id for p in listed_plans.data] == [plan.id]

    assert (
        sdk.features.delete(
            id=sdk.features.create(key="x", name="x", merchant_id=m, product_id=product.id).id
        )
        is None
    )
    spare_fee = sdk.fees.create(name="Spare", description="d", merchant_id=m, product_id=product.id)
    assert sdk.fees.delete(id=spare_fee.id) is None
    assert sdk.prices.delete(id=setup_price.id) is None


def test_customer_and_user_operations(sdk: Paygentic, merchant: NewMerchant) -> None:
    m = merchant.merchant_id
    email = f"billing+{uuid.uuid4().hex[:8]}@acme.example"
    consumer = models.CreateCustomerConsumer(
        name="Acme Corp",
        email=email,
        address=models.Address(line1="1 Main St", city="Austin", state="TX", country="US", zip_code="78701"),
        phone="+1-555-123-4567",
    )
    created = sdk.customers.create(
        merchant_id=m, consumer=consumer, external_id="acme", tax_rates={"default": 13}
    )
    assert created.customer_id.startswith("cus_") and created.valid_tax_address.valid is True
    again = sdk.customers.create(merchant_id=m, consumer=consumer)
    assert again.customer_id == created.customer_id

    customer = sdk.customers.get(id=created.customer_id)
    assert (customer.merchant_id, customer.external_id, customer.tax_rates) == (m, "acme", {"default": 13})
    assert customer.organization is not None and customer.organization.name == "Acme Corp"
    updated = sdk.customers.update(
        id=customer.id, tax_id="US123", notification_settings={"invoice_paid": False}
    )
    assert updated.tax_id == "US123" and updated.notification_settings is not None
    assert (
        updated.notification_settings.invoice_paid is False and updated.notification_settings.invoice_issued
    )
    listed = sdk.customers.list(organization_id=m, email="acme.example")
    assert listed.data is not None and [c.id for c in listed.data] == [customer.id]
    assert sdk.customers.delete(id=customer.id) is None

    user = sdk.users.get(id=merchant.user_id)
    assert user.id == merchant.user_id and user.organizations[0].id == m
    changed = sdk.users.update(id=user.id, first_name="Ada", last_name="Lovelace", type_="INDIVIDUAL")
    assert (changed.first_name, changed.last_name, changed.type) == ("Ada", "Lovelace", "INDIVIDUAL")
