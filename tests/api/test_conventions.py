"""Conventions every endpoint shares: auth, the error envelope, body limits, docs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from db.merchants import NewMerchant
from tests.helpers import assert_error, field_errors


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer nope", "Bearer sk_test_unknown", "Bearer sk_live_unknown"],
)
def test_requests_without_a_valid_key_are_401(api_url: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{api_url}/v0/products", headers=headers)
    assert_error(response, 401, "unauthorized")


def test_unknown_route_and_wrong_method_use_the_envelope(client: httpx.Client) -> None:
    assert "/v0/nothing" in assert_error(client.get("/v0/nothing"), 404, "not_found")["message"]
    assert_error(client.delete("/v0/products"), 405, "method_not_allowed")


def test_malformed_json_is_a_validation_error(client: httpx.Client) -> None:
    response = client.post(
        "/v0/products", content=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    assert "body" in field_errors(response)


def test_missing_body_is_a_validation_error(client: httpx.Client) -> None:
    assert "body" in field_errors(client.post("/v0/products"))


def test_oversized_body_is_413(client: httpx.Client, merchant: NewMerchant) -> None:
    body = {"merchantId": merchant.merchant_id, "name": "big", "description": "x" * 100_000}
    assert_error(client.post("/v0/products", json=body), 413, "payload_too_large")
    assert client.get("/v0/products").json()["pagination"]["total"] == 0


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "ten"}])
def test_bad_paging_is_a_validation_error(client: httpx.Client, params: dict[str, Any]) -> None:
    assert set(field_errors(client.get("/v0/products", params=params))) <= {"limit", "offset"}


def test_sandbox_key_does_not_see_live_data(
    api_url: str, client: httpx.Client, merchant: NewMerchant
) -> None:
    client.post(
        "/v0/products", json={"merchantId": merchant.merchant_id, "name": "sandbox", "description": "d"}
    )
    assert client.get("/v0/products").json()["pagination"]["total"] == 1


def test_docs_and_openapi_are_served(api_url: str) -> None:
    assert httpx.get(f"{api_url}/docs").status_code == 200
    spec = httpx.get(f"{api_url}/openapi.json").json()
    assert "/v0/products" in spec["paths"]


def test_every_operation_declares_its_error_responses_with_the_envelope(api_url: str) -> None:
    spec = httpx.get(f"{api_url}/openapi.json").json()
    envelope = {"$ref": "#/components/schemas/ErrorBody"}
    missing = [
        f"{method.upper()} {path} {status}"
        for path, operations in spec["paths"].items()
        if path != "/healthz"
        for method, operation in operations.items()
        for status in ("400", "401", "404", "409", "422")
        if operation["responses"].get(status, {}).get("content", {}).get("application/json", {}).get("schema")
        != envelope
    ]
    assert missing == []
    assert {"error", "message"} <= set(spec["components"]["schemas"]["ErrorBody"]["required"])
