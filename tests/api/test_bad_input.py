"""Bad input is a 400 (or 408/413) in the error envelope, never a 500, and never costs the connection."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from db.merchants import NewMerchant
from settings import Settings
from tests.api.test_events import event, new_metric
from tests.conftest import free_port
from tests.factories import Factory
from tests.helpers import assert_error, field_errors

NUL = "a\u0000b"


def _body(merchant: NewMerchant, path: str) -> dict[str, Any]:
    m = merchant.merchant_id
    bodies: dict[str, dict[str, Any]] = {
        "/v0/products": {"merchantId": m, "name": NUL, "description": "d"},
        "/v0/customers": {
            "merchantId": m,
            "consumer": {"name": "Acme", "email": "a@acme.test", "address": {"line1": NUL}},
        },
        "/v0/testClocks": {"name": NUL, "currentTime": "2026-01-01T00:00:00Z"},
        "/v0/events": event(source=NUL),
        "/v0/plans": {"merchantId": m, "productId": "prod_x", "name": "P", "metadata": {"k": [NUL]}},
    }
    return bodies[path]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v0/products", "name"),
        ("/v0/customers", "consumer.address.line1"),
        ("/v0/testClocks", "name"),
        ("/v0/events", "source"),
        ("/v0/plans", "metadata.k[0]"),
    ],
)
def test_nul_in_a_body_string_is_400_naming_the_field(
    client: httpx.Client, merchant: NewMerchant, path: str, field: str
) -> None:
    errors = field_errors(client.post(path, json=_body(merchant, path)))
    assert errors == {field: "cannot contain the NUL character (\\u0000)"}


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v0/customers/cus_%00x", "path"),
        ("/v0/products?merchantId=m%00", "merchantId"),
        ("/v2/invoices?customerId=%00", "customerId"),
        ("/v0/subscriptions?status=active%00", "status"),
    ],
)
def test_nul_in_the_path_or_query_is_400(client: httpx.Client, url: str, field: str) -> None:
    assert field in field_errors(client.get(url))


@pytest.mark.parametrize(
    "path",
    [
        "/v0/products",
        "/v0/customers",
        "/v0/prices",
        "/v0/plans",
        "/v0/features",
        "/v0/billableMetrics",
        "/v0/subscriptions",
        "/v0/testClocks",
        "/v0/fees?merchantId={m}",
    ],
)
def test_an_offset_past_bigint_is_400(client: httpx.Client, merchant: NewMerchant, path: str) -> None:
    url = path.format(m=merchant.merchant_id)
    joiner = "&" if "?" in url else "?"
    assert "offset" in field_errors(client.get(f"{url}{joiner}offset={2**63}"))


def test_a_year_1_timestamp_is_400_at_ingestion_and_in_meter_queries(
    client: httpx.Client, merchant: NewMerchant
) -> None:
    metric = new_metric(client, merchant)
    errors = field_errors(client.post("/v0/events", json=event(timestamp="0001-01-01T00:00:00Z")))
    assert "between 1970-01-01 and 2200-01-01" in errors["timestamp"]
    query = {"from": "0001-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "windowSize": "MONTH"}
    assert "from" in field_errors(client.get(f"/v0/billableMetrics/{metric['id']}/meter", params=query))
    # An offset that carries the instant past year 9999 overflowed datetime (a 500).
    query["from"] = "9999-12-31T23:00:00-05:00"
    assert "from" in field_errors(client.get(f"/v0/billableMetrics/{metric['id']}/meter", params=query))


def test_a_long_filter_group_by_is_400(client: httpx.Client, merchant: NewMerchant) -> None:
    metric = new_metric(client, merchant, groupBy={"model": "$.model"})
    query = {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "filterGroupBy": "[" * 3000}
    response = client.get(f"/v0/billableMetrics/{metric['id']}/meter", params=query)
    assert "longer than 1024" in field_errors(response)["filterGroupBy"]


def test_a_chunked_body_over_the_limit_is_413(client: httpx.Client, settings: Settings) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(settings.max_request_bytes // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    response = client.post("/v0/products", content=chunks(), headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")


@pytest.fixture(scope="module")
def guarded_url(settings: Settings) -> Iterator[str]:
    """An API with a 1 s body timeout and a route that fails, served on its own port."""
    app = create_app(settings.model_copy(update={"request_body_timeout": 1.0}))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom, methods=["GET"])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), head


def test_a_500_keeps_the_keep_alive_connection(guarded_url: str) -> None:
    host, port = guarded_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        status, head = _response(sock)
        assert status == 500 and b"application/json" in head
        sock.sendall(b"GET /v0/products HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(sock)[0] == 401  # answered on the same connection


def test_a_slow_body_is_408_after_the_timeout(guarded_url: str) -> None:
    host, port = guarded_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v0/products HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        status, head = _response(sock)
        assert status == 408 and b"connection: close" in head.lower()
        assert time.monotonic() - started < 5


async def test_deleting_a_customer_with_a_subscription_is_409(
    api_url: str, merchant: NewMerchant, engine: AsyncEngine
) -> None:
    factory = Factory(engine, merchant)
    customer = await factory.customer()
    subscription = await factory.subscription(customer=customer, status="terminated")
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers) as client:
        response = await client.delete(f"/v0/customers/{customer.id}")
    body = assert_error(response, 409, "conflict")
    assert body["details"]["blockers"] == [
        {"type": "subscriptions", "count": 1, "items": [{"id": subscription.id, "status": "terminated"}]}
    ]
