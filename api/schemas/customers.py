from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Strict, StringConstraints

from api.schemas.invoices import exact
from api.wire import Id, Name, Timestamp, WireModel
from db.models import Customer, Organization
from db.subscriptions import Wallet
from domain.money import from_nanos

Short = Annotated[str, Strict(), StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Phone = Annotated[str, Strict(), StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
ExternalId = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=255)]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an email address like jane@example.com")
    return value


def _country(value: str) -> str:
    if not _COUNTRY.match(value):
        raise ValueError('must be a 2-letter uppercase ISO 3166 country code, like "US"')
    return value


Email = Annotated[
    str, Strict(), StringConstraints(strip_whitespace=True, max_length=254), AfterValidator(_email)
]
Country = Annotated[str, Strict(), AfterValidator(_country)]


def _percent(value: float) -> float:
    # Written so that NaN, which the JSON parser accepts, fails too.
    if not (0 <= value <= 100):
        raise ValueError("must be a tax rate percentage between 0 and 100 (13 means 13%)")
    return value


Percent = Annotated[float, Strict(), AfterValidator(_percent)]


class AddressIn(WireModel):
    line1: Short | None = None
    line2: Short | None = None
    city: Short | None = None
    state: Short | None = None
    country: Country | None = None
    zip_code: Short | None = None

    def stored(self) -> dict[str, str]:
        """The wire shape (camelCase), without absent fields: what the JSON column keeps."""
        return self.model_dump(by_alias=True, exclude_none=True)


class ConsumerIn(WireModel):
    name: Name
    email: Email
    address: AddressIn
    phone: Phone | None = None


class CustomerCreate(WireModel):
    merchant_id: Id
    consumer: ConsumerIn | None = None
    consumer_id: Id | None = None
    tax_id: Short | None = None
    external_id: ExternalId | None = None
    tax_rates: dict[str, Percent] | None = None


class NotificationSettingsPatch(WireModel):
    invoice_issued: Annotated[bool, Strict()] | None = None
    invoice_paid: Annotated[bool, Strict()] | None = None
    renewal_reminder: Annotated[bool, Strict()] | None = None


class CustomerUpdate(WireModel):
    tax_id: Short | None = None
    external_id: ExternalId | None = None
    # A single number is the "default" rate for everything; an object maps planId | metricId | "default".
    tax_rates: Percent | dict[str, Percent] | None = None
    notification_settings: NotificationSettingsPatch | None = None


DEFAULT_NOTIFICATIONS = {"invoiceIssued": True, "invoicePaid": True, "renewalReminder": True}


def store_rates(rates: dict[str, float]) -> dict[str, str]:
    """Percentages kept as exact decimal strings ("13", "7.25"), never as binary floats."""
    return {key: format(Decimal(str(value)).normalize(), "f") for key, value in rates.items()}


def emit_rates(stored: dict[str, Any] | None) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for key, value in (stored or {}).items():
        number = Decimal(str(value))
        out[key] = int(number) if number == number.to_integral_value() else float(number)
    return out


class ValidTaxAddress(WireModel):
    valid: bool
    message: str | None = None

    @classmethod
    def of(cls, address: dict[str, Any] | None) -> ValidTaxAddress:
        """Tax needs country and zipCode, plus state in the US and Canada; otherwise the plan rate applies."""
        address = address or {}
        country = address.get("country")
        if not country:
            return cls(valid=False, message="Country is required for tax calculation")
        if not address.get("zipCode"):
            return cls(valid=False, message="zipCode is required for tax calculation")
        if country in ("US", "CA") and not address.get("state"):
            return cls(valid=False, message=f"state is required for tax calculation in {country}")
        return cls(valid=True)


class CreateCustomerOut(WireModel):
    customer_id: str
    valid_tax_address: ValidTaxAddress


class AddressOut(WireModel):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None
    zip_code: str | None = None


class CustomerOrganizationOut(WireModel):
    id: str
    name: str
    address: AddressOut | None
    billing_emails: list[str]
    phone: str | None


class NotificationSettingsOut(WireModel):
    invoice_issued: bool
    invoice_paid: bool
    renewal_reminder: bool


class WalletOut(WireModel):
    """Extension (docs/api-extensions.md, "Wallets"): the customer's wallet in one currency."""

    wallet_id: str
    currency: str
    balance: str  # available to spend, decimal
    reserved_balance: str  # held for active entitlements, decimal


class CustomerOut(WireModel):
    id: str
    object: Literal["customer"] = "customer"
    consumer_id: str
    merchant_id: str
    organization: CustomerOrganizationOut
    tax_id: str | None
    external_id: str | None
    tax_rates: dict[str, int | float]
    valid_tax_address: ValidTaxAddress
    notification_settings: NotificationSettingsOut
    created_at: Timestamp
    updated_at: Timestamp
    wallets: list[WalletOut] = []

    @classmethod
    def of(cls, row: Customer, consumer: Organization, wallets: Sequence[Wallet] = ()) -> CustomerOut:
        address = AddressOut.model_validate(consumer.address) if consumer.address is not None else None
        return cls(
            id=row.id,
            consumer_id=row.consumer_id,
            merchant_id=row.merchant_id,
            organization=CustomerOrganizationOut(
                id=consumer.id,
                name=consumer.name,
                address=address,
                billing_emails=[consumer.email] if consumer.email else [],
                phone=consumer.phone,
            ),
            tax_id=row.tax_id,
            external_id=row.external_id,
            tax_rates=emit_rates(row.tax_rates),
            valid_tax_address=ValidTaxAddress.of(consumer.address),
            notification_settings=NotificationSettingsOut.model_validate(
                DEFAULT_NOTIFICATIONS | (row.notification_settings or {})
            ),
            created_at=row.created_at,
            updated_at=row.updated_at,
            wallets=[
                WalletOut(
                    wallet_id=w.id,
                    currency=w.currency,
                    balance=exact(from_nanos(w.balance), w.currency),
                    reserved_balance=exact(from_nanos(w.reserved), w.currency),
                )
                for w in wallets
            ],
        )
