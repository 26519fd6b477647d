"""Workflow ids come from business ids, so a retried start finds the same workflow (design rule 1)."""

from __future__ import annotations


def subscription_workflow_id(subscription_id: str) -> str:
    return f"subscription-{subscription_id}"


def test_clock_workflow_id(test_clock_id: str) -> str:
    return f"test-clock-{test_clock_id}"


def webhook_endpoint_workflow_id(endpoint_id: str) -> str:
    return f"webhook-endpoint-{endpoint_id}"


WEBHOOK_RELAY_WORKFLOW_ID = "webhook-relay"


def source_installation_workflow_id(installation_id: str) -> str:
    return f"source-installation-{installation_id}"


def entitlement_workflow_id(entitlement_id: str) -> str:
    return f"entitlement-{entitlement_id}"


def payment_workflow_id(payment_id: str) -> str:
    return f"payment-{payment_id}"
