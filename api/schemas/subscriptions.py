from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, Strict, StrictBool, StrictInt, StringConstraints

from api.schemas.customers import ConsumerIn, Percent
from api.schemas.invoices import exact
from api.wire import Id, MoneyStr, Name, Timestamp, UtcDatetime, WireModel
from db.models import Customer, Invoice, Organization, PaymentSession, Subscription
from db.subscriptions import Wallet
from domain.money import format_money, from_nanos, parse_decimal, to_nanos
from domain.status import INVOICE_PAYABLE

Url = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


def _not_negative(value: str) -> str:
    if parse_decimal(value) < 0:
        raise ValueError('must not be negative; "0" disables the minimum balance')
    return value


Balance = Annotated[MoneyStr, AfterValidator(_not_negative)]


class RedirectUrls(WireModel):
    on_success: Url | None = None
    on_failure: Url | None = None


class InlineCustomer(ConsumerIn):
    """A customer created with the subscription; the consumer is reused by email, as on /v0/customers."""

    tax_rates: dict[str, Percent] | None = None


class SubscriptionCreate(WireModel):
    name: Name
    plan_id: Id
    started_at: UtcDatetime
    customer_id: Id | None = None
    customer: InlineCustomer | None = None
    ending_at: UtcDatetime | None = None
    auto_charge: StrictBool = False
    tax_exempt: StrictBool = False
    minimum_account_balance: Balance | None = None
    prefund_amount: Balance | None = None
    redirect_urls: RedirectUrls | None = None
    test_clock_id: Id | None = None
    renewal_reminder_enabled: StrictBool | None = None
    renewal_reminder_days: Annotated[StrictInt, Field(ge=1, le=30)] | None = None
    # A JSON number (the SDK types it float); strict, so "60" and true are refused rather than coerced.
    session_expiry_minutes: Annotated[float, Strict(), Field(ge=1, le=10_080)] | None = None


class TerminateBody(WireModel):
    reason: Reason


class Breakdown(WireModel):
    upfront_charges: str
    wallet_charge: str


class Payment(WireModel):
    status: Literal["pending", "paid", "awaiting_approval"]
    invoice_id: str
    amount: str
    breakdown: Breakdown | None = None
    checkout_url: str | None = None
    payment_session_id: str | None = None


class Party(WireModel):
    id: str
    name: str
    email: str


class SubscriptionCustomer(WireModel):
    id: str
    merchant_id: str
    merchant: Party
    consumer: Party


class SubscriptionOut(WireModel):
    id: str
    object: Literal["subscription"] = "subscription"
    merchant_id: str
    customer_id: str
    plan_id: str
    name: str
    status: str
    started_at: Timestamp
    ending_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    auto_charge: bool
    tax_exempt: bool
    estimated_tax_rate: float
    minimum_account_balance: str | None
    prefund_amount: str | None
    terminated_at: Timestamp | None
    terminated_by: str | None
    termination_reason: str | None
    test_clock_id: str | None
    wallet_id: str | None = None
    # Extensions (docs/api-extensions.md, "Wallets"): the wallet's balances in the subscription's currency.
    wallet_balance: str | None = None
    reserved_balance: str | None = None
    renewal_reminder_enabled: bool | None
    renewal_reminder_days: int | None
    payment: Payment | None
    customer: SubscriptionCustomer | None = None
    # Required by paygentic-sdk 0.6.3.
    version_policy: Literal["floating"] = "floating"
    elapsed_period_billing: Literal["none"] = "none"
    billing_starts_at: Timestamp | None
    billing_anchor: Timestamp
    billing_cadence: str
    payment_term_days: int = 0

    @classmethod
    def of(
        cls,
        sub: Subscription,
        *,
        invoice0: Invoice | None,
        session: PaymentSession | None,
        base_url: str,
        tax_rate: Decimal,
        customer: SubscriptionCustomer | None = None,
        wallet: Wallet | None = None,
        wallet_charge: Decimal = Decimal(0),
    ) -> SubscriptionOut:
        balance = (
            str(to_nanos(sub.minimum_account_balance)) if sub.minimum_account_balance is not None else None
        )
        return cls(
            id=sub.id,
            merchant_id=sub.merchant_id,
            customer_id=sub.customer_id,
            plan_id=sub.plan_id,
            name=sub.name,
            status=sub.status,
            started_at=sub.started_at,
            ending_at=sub.ending_at,
            created_at=sub.created_at,
            updated_at=sub.updated_at,
            auto_charge=sub.auto_charge,
            tax_exempt=sub.tax_exempt,
            estimated_tax_rate=float(tax_rate),
            minimum_account_balance=balance,
            prefund_amount=balance,
            terminated_at=sub.terminated_at,
            terminated_by=sub.terminated_by,
            termination_reason=sub.termination_reason,
            test_clock_id=sub.test_clock_id,
            wallet_id=wallet.id if wallet else None,
            wallet_balance=wallet_amount(wallet.balance if wallet else 0, sub.currency),
            reserved_balance=wallet_amount(wallet.reserved if wallet else 0, sub.currency),
            renewal_reminder_enabled=sub.renewal_reminder_enabled,
            renewal_reminder_days=sub.renewal_reminder_days,
            payment=payment_of(invoice0, session, base_url, wallet_charge),
            customer=customer,
            billing_starts_at=sub.billing_anchor,
            billing_anchor=sub.billing_anchor,
            billing_cadence=sub.billing_cadence,
        )


def wallet_amount(nanos: int, currency: str) -> str:
    """A wallet balance as a decimal string: the currency's places at least, nanodollars at most."""
    return exact(from_nanos(nanos), currency)


def payment_of(
    invoice0: Invoice | None,
    session: PaymentSession | None,
    base_url: str,
    wallet_charge: Decimal = Decimal(0),
) -> Payment | None:
    """`payment` from Invoice 0: paid, or pending with its checkout; nothing once cancelled. The breakdown
    splits its total into the upfront charges and the wallet top-up (`walletCharge`, its top-up line)."""
    if invoice0 is None:
        return None
    currency = invoice0.currency
    amount = format_money(invoice0.grand_total, currency)
    if invoice0.status == "PAID":
        return Payment(status="paid", invoice_id=invoice0.id, amount=amount)
    if invoice0.status in INVOICE_PAYABLE and session is not None:
        return Payment(
            status="pending",
            invoice_id=invoice0.id,
            amount=amount,
            breakdown=Breakdown(
                upfront_charges=format_money(invoice0.grand_total - wallet_charge, currency),
                wallet_charge=format_money(wallet_charge, currency),
            ),
            checkout_url=f"{base_url}/checkout/{session.id}",
            payment_session_id=session.id,
        )
    return None


def customer_of(customer: Customer, consumer: Organization, merchant: Organization, owner_email: str) -> Any:
    return SubscriptionCustomer(
        id=customer.id,
        merchant_id=customer.merchant_id,
        merchant=Party(id=merchant.id, name=merchant.name, email=owner_email),
        consumer=Party(id=consumer.id, name=consumer.name, email=consumer.email or ""),
    )
