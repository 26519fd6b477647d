"""The customers' Stripe accounts, read for revenue share: the only module that calls `stripe` for it.

Thin and typed: a key is validated with the one call the import needs (list invoices, limit 1, so a
restricted key with invoice read permission passes and one without fails the same way it would later), and
paid invoices are read page by page, newest first. The library's async methods run on the worker's event
loop (httpx), so a slow Stripe never blocks it. One client serves every key (the key travels per request).

Errors are classified for the activities: `KeyRefused` (401/403: the key is wrong, rolled or lacks the
permission; no retry can fix it, the installation goes to `error`), `StripeUnavailable` (429, 5xx, network:
retried with backoff, never an error status), `StripeRejected` (any other 4xx: a visible failure).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stripe

from domain.money import from_minor_units

PAGE_SIZE = 100  # Stripe's maximum for list calls


class KeyRefused(Exception):
    """Stripe refused the key (401/403). `message` is what the merchant and customer read (errorMessage)."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


class StripeUnavailable(Exception):
    """Rate limited, a Stripe server error or no connection: try again later."""


class StripeRejected(Exception):
    """Stripe answered 4xx (other than 401/403/429) to a request Accrue made: a bug or a changed API."""


@dataclass(frozen=True)
class PaidInvoice:
    id: str
    amount: Decimal  # amount_paid in major units
    currency: str  # upper case
    paid_at: int  # unix seconds (Stripe's status_transitions.paid_at)
    created: int
    customer_name: str | None
    customer_email: str | None
    raw: dict[str, Any]  # what the source event keeps of the invoice


@dataclass(frozen=True)
class InvoicePage:
    paid: list[PaidInvoice]  # the page's paid invoices (any paid_at; the caller filters by its cursor)
    oldest_created: int | None  # the smallest `created` on the page (None: empty page)
    last_id: str | None  # starting_after for the next page
    has_more: bool


def refused_message(http_status: int) -> str:
    if http_status == 401:
        return (
            "Stripe refused the API key (401 Unauthorized): check that it is a secret key (sk_live_ or "
            "sk_test_) that has not been rolled"
        )
    return (
        f"Stripe refused the API key ({http_status} Forbidden): a restricted key (rk_) needs read access "
        "to Invoices; create one with that permission or use a secret key"
    )


class StripeRevenue:
    def __init__(self, api_base: str = "") -> None:
        """`api_base`: Settings.stripe_api_base (empty: Stripe's own)."""
        options: dict[str, Any] = {"max_network_retries": 0, "http_client": stripe.HTTPXClient()}
        if api_base:
            options["base_addresses"] = {"api": api_base}
        # The client's own key is never used: every call passes the customer's key in its options.
        self.client = stripe.StripeClient("sk_unused", **options)

    async def validate(self, key: str) -> None:
        """Raises KeyRefused, StripeUnavailable or StripeRejected; returns when the key can list invoices."""
        await self._list(key, {"limit": 1})

    async def paid_invoices_page(self, key: str, starting_after: str | None = None) -> InvoicePage:
        # No expand: invoices carry customer_email and customer_name themselves, and expanding the customer
        # costs Stripe (and the fake) several times the listing.
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        if starting_after:
            params["starting_after"] = starting_after
        page = await self._list(key, params)
        invoices: list[dict[str, Any]] = list(page.get("data") or [])
        return InvoicePage(
            paid=[_paid(i) for i in invoices if i.get("status") == "paid"],
            oldest_created=min((int(i["created"]) for i in invoices), default=None),
            last_id=str(invoices[-1]["id"]) if invoices else None,
            has_more=bool(page.get("has_more")) and bool(invoices),
        )

    async def _list(self, key: str, params: dict[str, Any]) -> dict[str, Any]:
        """GET /v1/invoices as plain JSON: the library authenticates, sends and raises its typed errors, but
        does not build its object tree of every invoice (about 2 ms of CPU each, which on a worker polling
        many accounts at once starved the event loop and its heartbeats: bench/README.md)."""
        try:
            response = await self.client.raw_request_async("get", "/v1/invoices", api_key=key, **params)
            data: dict[str, Any] = response.data
            return data
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            status = exc.http_status or (403 if isinstance(exc, stripe.PermissionError) else 401)
            raise KeyRefused(refused_message(status), status) from None
        except (stripe.RateLimitError, stripe.APIConnectionError) as exc:
            raise StripeUnavailable(f"Stripe unavailable: {type(exc).__name__} {exc.http_status}") from None
        except stripe.StripeError as exc:
            if exc.http_status == 429 or exc.http_status is None or exc.http_status >= 500:
                raise StripeUnavailable(
                    f"Stripe unavailable ({exc.http_status}): {exc.user_message}"
                ) from None
            raise StripeRejected(
                f"Stripe rejected the request ({exc.http_status}): {exc.user_message}"
            ) from None


def _paid(invoice: dict[str, Any]) -> PaidInvoice:
    customer = invoice.get("customer")
    expanded = customer if isinstance(customer, dict) else None
    customer_id = expanded.get("id") if expanded is not None else customer
    name = invoice.get("customer_name") or (expanded.get("name") if expanded is not None else None)
    email = invoice.get("customer_email") or (expanded.get("email") if expanded is not None else None)
    currency = str(invoice.get("currency") or "").upper()
    transitions = invoice.get("status_transitions") or {}
    paid_at = int(transitions.get("paid_at") or invoice["created"])
    raw = {
        "id": invoice["id"],
        "object": "invoice",
        "number": invoice.get("number"),
        "customer": customer_id,
        "customer_name": name,
        "customer_email": email,
        "subscription": invoice.get("subscription"),
        "amount_paid": int(invoice.get("amount_paid") or 0),
        "currency": invoice.get("currency"),
        "status": invoice.get("status"),
        "created": int(invoice["created"]),
        "paid_at": paid_at,
    }
    return PaidInvoice(
        id=str(invoice["id"]),
        amount=from_minor_units(int(invoice.get("amount_paid") or 0), currency),
        currency=currency,
        paid_at=paid_at,
        created=int(invoice["created"]),
        customer_name=name,
        customer_email=email,
        raw=raw,
    )


def unix(at: datetime) -> int:
    return int(at.timestamp())


def from_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
