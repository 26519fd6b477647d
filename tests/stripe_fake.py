"""A stateful Stripe fake for tests and benchmarks: localstripe's aiohttp app with what it lacks.

- **Accounts separated by API key.** localstripe keeps one module-global store; here that store is
  replaced by `KeyedStore`, which delegates every dict operation to a per-key dict chosen by a context
  variable that the first middleware sets from the request's key. So each customer's `sk_test_…` key is its
  own Stripe account (the same key twice is the same account).
- **Control endpoints** (under `/_config/`, which need no key): revoke a key (every request with it then gets
  Stripe's 401 JSON error), inject failures (the next N requests of a key get a 429 or 500 with Stripe's
  error JSON), backdate invoices (Stripe test data is created "now"; backfill and lookback tests need older
  ones), count a key's requests.
- **`customer_name` on invoices**, as Stripe has it (localstripe's lack it).
- **`pay_invoices`**: makes paid invoices in an account through the real `stripe` library (a subscription
  per invoice on a plan of 1 cent × quantity, since localstripe only pays invoices of subscriptions).

Run it: `python -m tests.stripe_fake --port 8420`. In pytest: the session fixture `stripe_fake` (imported
by tests/conftest.py) starts it as a subprocess on a free port and yields its base URL.
Restricted keys (`rk_…`) are accepted as well as secret keys (localstripe alone refuses them).
Payments (issue 11): a publishable key `pk_<mode>_<rest>` (what Stripe.js posts as `key`) is the account
of `sk_<mode>_<rest>`; POSTs honour `Idempotency-Key` as Stripe does (the same key in one account answers
the first response again); PaymentIntents take `description`, `setup_future_usage`, `receipt_email` and
`statement_descriptor` (localstripe refuses them), which the fake keeps but does not act on.
"""

from __future__ import annotations

import argparse
import base64
import contextvars
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from tests.ports import free_port as _free_port

_ACCOUNT: contextvars.ContextVar[str] = contextvars.ContextVar("stripe_fake_account", default="")


class KeyedStore(dict):  # type: ignore[type-arg]
    """localstripe's store, one dict per API key. Inherits dict only so isinstance checks hold; the
    inherited storage stays empty. No pickling to disk (localstripe dumps the whole store on every write)."""

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, dict[str, Any]] = {}

    def _d(self) -> dict[str, Any]:
        return self.accounts.setdefault(_ACCOUNT.get(), {})

    def __getitem__(self, k: str) -> Any:
        return self._d()[k]

    def __setitem__(self, k: str, v: Any) -> None:
        self._d()[k] = v

    def __delitem__(self, k: str) -> None:
        del self._d()[k]

    def __contains__(self, k: object) -> bool:
        return k in self._d()

    def __iter__(self) -> Iterator[str]:
        return iter(self._d())

    def __len__(self) -> int:
        return len(self._d())

    def get(self, k: str, default: Any = None) -> Any:
        return self._d().get(k, default)

    def keys(self) -> Any:
        return self._d().keys()

    def values(self) -> Any:
        return self._d().values()

    def items(self) -> Any:
        return self._d().items()

    def pop(self, k: str, *default: Any) -> Any:
        return self._d().pop(k, *default)

    def setdefault(self, k: str, default: Any = None) -> Any:
        return self._d().setdefault(k, default)

    def clear(self) -> None:
        self._d().clear()

    def dump_to_disk(self) -> None:
        pass

    def try_load_from_disk(self) -> None:
        pass


def _request_key(headers: Any) -> str | None:
    parts = headers.get("Authorization", "").split(" ")
    if len(parts) != 2:
        return None
    if parts[0] == "Basic":
        return base64.b64decode(parts[1].encode()).decode().split(":")[0]
    return parts[1] if parts[0] == "Bearer" else None


def _accepted_key(request: Any) -> str | None:
    key = _request_key(request.headers)
    if key and (key.startswith("sk_") or key.startswith("rk_")) and len(key) > 5:
        return key
    return None


def _masked(key: str) -> str:
    return key[:8] + "*" * max(len(key) - 12, 4) + key[-4:]


def build_app() -> Any:
    """localstripe's app with the keyed store, the account middleware and the control routes. Call once
    per process (it patches localstripe's modules)."""
    from aiohttp import web
    from localstripe import resources, server

    keyed = KeyedStore()
    # Every module that bound localstripe's store by name: resources (its own global) and server (imported).
    resources.store = keyed
    server.store = keyed
    server.get_api_key = _accepted_key  # auth_middleware looks it up at call time

    revoked: set[str] = set()
    idempotent: dict[tuple[str, str], tuple[int, bytes, str]] = {}  # (account, Idempotency-Key) → response
    failures: dict[str, list[int]] = {}  # key → statuses of the next requests
    requests: dict[str, int] = {}

    def stripe_error(status: int, type_: str, message: str, code: str | None = None) -> Any:
        error: dict[str, Any] = {"type": type_, "message": message}
        if code:
            error["code"] = code
        return web.json_response({"error": error}, status=status)

    @web.middleware
    async def account_middleware(request: Any, handler: Any) -> Any:
        if request.path.startswith("/_config/"):
            return await handler(request)
        key = _request_key(request.headers) or await _publishable_account(request)
        requests[key] = requests.get(key, 0) + 1
        if key in revoked:
            return stripe_error(401, "invalid_request_error", f"Invalid API Key provided: {_masked(key)}")
        pending = failures.get(key)
        if pending:
            status = pending.pop(0)
            if status == 429:
                return stripe_error(
                    429, "invalid_request_error", "Request rate limit exceeded (injected).", "rate_limit"
                )
            return stripe_error(status, "api_error", f"Injected server error {status}.")
        _ACCOUNT.set(key)
        idempotency_key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        if not idempotency_key:
            return await handler(request)
        remembered = idempotent.get((key, idempotency_key))
        if remembered is not None:
            status, body, content_type = remembered
            return web.Response(status=status, body=body, content_type=content_type)
        response = await handler(request)
        if response.status < 500 and isinstance(response.body, bytes):
            idempotent[(key, idempotency_key)] = (response.status, response.body, response.content_type)
        return response

    async def _publishable_account(request: Any) -> str:
        """Stripe.js authenticates with the publishable key in the body: pk_x_y is the account of sk_x_y."""
        if request.method != "POST":
            return ""
        data = await server.get_post_data(request, remove_auth=False)
        publishable = data.get("key") if isinstance(data, dict) else None
        if isinstance(publishable, str) and publishable.startswith("pk_"):
            return "sk_" + publishable[3:]
        return ""

    async def revoke(request: Any) -> Any:
        revoked.add(request.match_info["key"])
        return web.json_response({"revoked": True})

    async def restore(request: Any) -> Any:
        revoked.discard(request.match_info["key"])
        return web.json_response({"revoked": False})

    async def inject(request: Any) -> Any:
        body = await request.json()
        statuses = [int(body.get("status", 500))] * int(body.get("count", 1))
        failures.setdefault(request.match_info["key"], []).extend(statuses)
        return web.json_response({"pending_failures": len(failures[request.match_info["key"]])})

    async def backdate(request: Any) -> Any:
        """Set created/date/finalized_at/paid_at of the key's invoices `ids` to `at` (unix seconds)."""
        body = await request.json()
        token = _ACCOUNT.set(request.match_info["key"])
        try:
            at = int(body["at"])
            for invoice_id in body["ids"]:
                invoice = keyed.get("invoice:" + invoice_id)
                if invoice is None:
                    return stripe_error(404, "invalid_request_error", f"No such invoice: {invoice_id}")
                invoice.created = invoice.date = at
                transitions = invoice.status_transitions
                for field in ("finalized_at", "paid_at"):
                    if transitions.get(field) is not None:
                        transitions[field] = at
        finally:
            _ACCOUNT.reset(token)
        return web.json_response({"backdated": len(body["ids"])})

    async def count(request: Any) -> Any:
        return web.json_response({"requests": requests.get(request.match_info["key"], 0)})

    async def health(request: Any) -> Any:
        return web.json_response({"ok": True})

    def customer_name(invoice: Any) -> str | None:
        try:
            return getattr(resources.Customer._api_retrieve(invoice.customer), "name", None)
        except Exception:  # a deleted customer: Stripe keeps the name it had, we have none
            return None

    # Stripe's invoices carry `customer_name` (the customer's name when the invoice was finalized);
    # localstripe's do not. Its _export lists properties, so one is enough.
    resources.Invoice.customer_name = property(customer_name)

    _accept_payment_intent_params(resources)

    app = server.app
    app.middlewares.insert(0, account_middleware)
    app.router.add_post("/_config/accounts/{key}/revoke", revoke)
    app.router.add_post("/_config/accounts/{key}/restore", restore)
    app.router.add_post("/_config/accounts/{key}/failures", inject)
    app.router.add_post("/_config/accounts/{key}/backdate", backdate)
    app.router.add_get("/_config/accounts/{key}/requests", count)
    app.router.add_get("/_config/health", health)
    return app


def _accept_payment_intent_params(resources: Any) -> None:
    """PaymentIntents take the parameters Accrue's Stripe provider sends that localstripe lacks."""
    extra = ("description", "setup_future_usage", "receipt_email", "statement_descriptor")
    original = resources.PaymentIntent.__init__

    def __init__(self: Any, **kwargs: Any) -> None:
        kept = {name: kwargs.pop(name, None) for name in extra}
        original(self, **kwargs)
        for name, value in kept.items():
            setattr(self, name, value)

    resources.PaymentIntent.__init__ = __init__


# ---- test helpers (run in the test process, talk to the fake over HTTP) ---------------------------------


def stripe_client(base: str, key: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": base}, max_network_retries=0)


def pay_invoices(
    base: str,
    key: str,
    amounts_cents: list[int],
    currency: str = "usd",
    email: str = "buyer@example.com",
    name: str = "Buyer",
    paid_at: int | None = None,
) -> list[str]:
    """Pay one invoice per amount in the account of `key`; returns their ids (in payment order).
    `paid_at` (unix seconds) backdates them, e.g. for backfill tests."""
    c = stripe_client(base, key)
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    token = c.v1.tokens.create(params={"card": card})  # type: ignore[typeddict-item]
    customer = c.v1.customers.create(params={"source": token.id, "email": email, "name": name})
    plan = c.v1.plans.create(
        params={"amount": 1, "currency": currency, "interval": "month", "product": {"name": "rev"}}
    )
    ids = []
    for cents in amounts_cents:
        sub = c.v1.subscriptions.create(
            params={"customer": customer.id, "items": [{"plan": plan.id, "quantity": cents}]}
        )
        ids.append(str(sub.latest_invoice))
    if paid_at is not None:
        backdate(base, key, ids, paid_at)
    return ids


def _control(base: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(f"{base}/_config/{path}", json=body or {}, timeout=30)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def revoke_key(base: str, key: str) -> None:
    _control(base, f"accounts/{key}/revoke")


def restore_key(base: str, key: str) -> None:
    _control(base, f"accounts/{key}/restore")


def inject_failures(base: str, key: str, status: int, count: int = 1) -> None:
    """The next `count` requests with `key` answer `status` (429 or 5xx) with Stripe's error JSON."""
    _control(base, f"accounts/{key}/failures", {"status": status, "count": count})


def backdate(base: str, key: str, invoice_ids: list[str], at: int) -> None:
    _control(base, f"accounts/{key}/backdate", {"ids": invoice_ids, "at": at})


def request_count(base: str, key: str) -> int:
    response = httpx.get(f"{base}/_config/accounts/{key}/requests", timeout=30)
    response.raise_for_status()
    return int(response.json()["requests"])


_key_serial = 0


def new_key(prefix: str = "sk_test_") -> str:
    """A fresh account: a key no other test uses (pid + time + a serial)."""
    global _key_serial
    _key_serial += 1
    return f"{prefix}{os.getpid()}x{time.time_ns()}x{_key_serial}"


# ---- process ---------------------------------------------------------------------------------------------


def start_fake(port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start the fake as a subprocess; returns it and its base URL once it answers."""
    port = port or _free_port()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.stripe_fake", "--port", str(port)],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/_config/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the Stripe fake did not start")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def stripe_fake() -> Iterator[str]:
    """Base URL of a Stripe fake shared by the session (accounts are separated by key: use `new_key()`)."""
    process, base = start_fake()
    yield base
    process.terminate()
    process.wait(10)


def main() -> None:
    from aiohttp import web

    parser = argparse.ArgumentParser(description="Stripe fake: localstripe with accounts per API key")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    web.run_app(build_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
