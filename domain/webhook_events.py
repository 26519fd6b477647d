"""The webhook event catalog (behavior §10.2, D18): every event type Accrue sends or will send.

Each entry names the resource its `data` represents (the resource's API representation at the time of the
event) and carries one realistic example of that `data`. The resource also orders delivery: messages about
one resource (`<resource>:<data.id>`) reach an endpoint in the order they happened.

Types that a later issue starts emitting are listed already, so an endpoint can subscribe to them (and the
API's `filterTypes` accepts them) before the first one is sent:
- `source.*` and `source_event.*`: the revenue-share issue's installations and source events;
- `customer.creation_failed.v0`: the revenue-share issue's signup (authorization) links, the only flow that
  can fail to create a customer. No customer exists then, so its `data` is the failed signup, without an
  `id`; such messages are ordered by nothing but their own id;
- `payment.*`: the payments issue's one-off payments; `invoice.payment_failed.v0`: its auto-charge.
`payment.cancelled.v0` (behavior §10.2 guesses at it) is not listed: no issue cancels a payment by event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EventType:
    name: str  # <resource>.<past_tense_action>.v0
    resource: str  # the `data`'s resource, also the ordering key's prefix
    description: str
    example: dict[str, Any]  # one realistic `data`


# ---- examples: one merchant's customer subscribing, paying Invoice 0 and being billed a period -------------

_MERCHANT = "org_4XxRmW2bQ0tYkLs9aE3nVd7C"
_CUSTOMER = "cus_7Hc2LqZ9vN4pT1wXs8KdF3bM"
_SUBSCRIPTION = "sub_9PqR2sT4uV6wX8yZ1aB3cD5e"
_INVOICE = "inv_2Fg4Hj6Kl8Mn0Pq2Rs4Tu6Vw"
_SESSION = "ps_5Yz7Ab9Cd1Ef3Gh5Ij7Kl9Mn"
_CONSUMER = "org_1Lm3No5Pq7Rs9Tu1Vw3Xy5Za"
_SOURCE = "src_3Bc5De7Fg9Hi1Jk3Lm5No7Pq"
_INSTALLATION = "sin_6Qr8St0Uv2Wx4Yz6Ab8Cd0Ef"

CUSTOMER: dict[str, Any] = {
    "id": _CUSTOMER,
    "object": "customer",
    "consumerId": _CONSUMER,
    "merchantId": _MERCHANT,
    "organization": {
        "id": _CONSUMER,
        "name": "Acme Robotics",
        "address": {
            "line1": "500 Congress Ave",
            "line2": None,
            "city": "Austin",
            "state": "TX",
            "country": "US",
            "zipCode": "78701",
        },
        "billingEmails": ["billing@acme.example"],
        "phone": None,
    },
    "taxId": None,
    "externalId": "acme-42",
    "taxRates": {},
    "validTaxAddress": {"valid": True, "message": None},
    "notificationSettings": {"invoiceIssued": True, "invoicePaid": True, "renewalReminder": True},
    "createdAt": "2026-03-01T09:00:00.000Z",
    "updatedAt": "2026-03-01T09:00:00.000Z",
    "wallets": [],
}


def _subscription(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": _SUBSCRIPTION,
        "object": "subscription",
        "merchantId": _MERCHANT,
        "customerId": _CUSTOMER,
        "planId": "plan_8Rs0Tu2Vw4Xy6Za8Bc0De2Fg",
        "name": "Acme - Pro",
        "status": "pending_payment",
        "startedAt": "2026-03-01T09:00:05.000Z",
        "endingAt": None,
        "createdAt": "2026-03-01T09:00:05.000Z",
        "updatedAt": "2026-03-01T09:00:05.000Z",
        "autoCharge": False,
        "taxExempt": False,
        "estimatedTaxRate": 0.0825,
        "minimumAccountBalance": None,
        "prefundAmount": None,
        "terminatedAt": None,
        "terminatedBy": None,
        "terminationReason": None,
        "testClockId": None,
        "walletId": None,
        "walletBalance": "0.00",
        "reservedBalance": "0.00",
        "renewalReminderEnabled": None,
        "renewalReminderDays": None,
        "payment": {
            "status": "pending",
            "invoiceId": _INVOICE,
            "amount": "53.04",
            "breakdown": {"upfrontCharges": "53.04", "walletCharge": "0.00"},
            "checkoutUrl": f"https://billing.example.com/checkout/{_SESSION}",
            "paymentSessionId": _SESSION,
        },
        "customer": None,
        "versionPolicy": "floating",
        "elapsedPeriodBilling": "none",
        "billingStartsAt": "2026-03-01T09:00:05.000Z",
        "billingAnchor": "2026-03-01T09:00:05.000Z",
        "billingCadence": "P1M",
        "paymentTermDays": 0,
    }
    return base | changes


_PAID = {"status": "paid", "invoiceId": _INVOICE, "amount": "53.04",
         "breakdown": {"upfrontCharges": "53.04", "walletCharge": "0.00"}, "checkoutUrl": None,
         "paymentSessionId": _SESSION}  # fmt: skip
SUBSCRIPTION_CREATED = _subscription()
SUBSCRIPTION_ACTIVE = _subscription(status="active", updatedAt="2026-03-01T09:03:12.000Z", payment=_PAID)
SUBSCRIPTION_CANCELLED = _subscription(
    status="terminated",
    updatedAt="2026-06-15T14:20:00.000Z",
    terminatedAt="2026-06-15T14:20:00.000Z",
    terminatedBy="merchant",
    terminationReason="Customer moved to the annual plan",
    payment=_PAID,
)


def _invoice(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": _INVOICE,
        "object": "invoice",
        "merchantId": _MERCHANT,
        "subscriptionId": _SUBSCRIPTION,
        "customerId": _CUSTOMER,
        "currency": "USD",
        "billingAnchor": "2026-03-01T09:00:05.000Z",
        "billingCadence": "P1M",
        "sequenceNumber": 0,
        "periodStart": "2026-03-01T09:00:05.000Z",
        "periodEnd": "2026-04-01T09:00:05.000Z",
        "gracePeriodEnd": "2026-03-01T09:00:05.000Z",
        "status": "ISSUED",
        "autoApprove": True,
        "itemCount": 1,
        "subtotal": "49.00",
        "totalTax": "4.04",
        "grandTotal": "53.04",
        "paidAmount": "0.00",
        "unpaidAmount": "53.04",
        "invoiceNumber": "INV-000001",
        "issuedAt": "2026-03-01T09:00:05.000Z",
        "paidAt": None,
        "paymentUrl": f"https://billing.example.com/checkout/{_SESSION}",
        "metadata": {},
        "createdAt": "2026-03-01T09:00:05.000Z",
        "updatedAt": "2026-03-01T09:00:05.000Z",
    }
    return {k: v for k, v in (base | changes).items() if v is not _ABSENT}


_ABSENT = object()  # a key the representation leaves out (paymentUrl once nothing is owed)
INVOICE_ISSUED = _invoice()
INVOICE_PAID = _invoice(
    status="PAID",
    paidAmount="53.04",
    unpaidAmount="0.00",
    paidAt="2026-03-01T09:03:12.000Z",
    paymentUrl=_ABSENT,
    updatedAt="2026-03-01T09:03:12.000Z",
)
INVOICE_PAYMENT_FAILED = _invoice(
    status="PAYMENT_FAILED",
    sequenceNumber=3,
    periodStart="2026-06-01T09:00:05.000Z",
    periodEnd="2026-07-01T09:00:05.000Z",
    gracePeriodEnd="2026-07-02T09:00:05.000Z",
    invoiceNumber="INV-000004",
    issuedAt="2026-07-01T09:00:05.000Z",
    paymentUrl=_ABSENT,
    createdAt="2026-07-01T09:00:05.000Z",
    updatedAt="2026-07-01T09:00:09.000Z",
)
INVOICE_CANCELLED = _invoice(
    status="CANCELLED", unpaidAmount="0.00", paymentUrl=_ABSENT, updatedAt="2026-03-01T13:00:05.000Z"
)


def _installation(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "object": "sourceInstallation",
        "id": _INSTALLATION,
        "sourceId": _SOURCE,
        "subscriptionId": _SUBSCRIPTION,
        "customerId": _CUSTOMER,
        "providerType": "api_key",
        "status": "active",
        "errorMessage": None,
        "lastSyncAt": None,
        "connectedAt": "2026-03-02T10:15:00.000Z",
        "disconnectedAt": None,
        "keyLast4": "9xQe",
        "keyMode": "live",
    }
    return base | changes


def _source_event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "sev_4Hi6Jk8Lm0No2Pq4Rs6Tu8Vw",
        "sourceId": _SOURCE,
        "externalEventId": "in_1QkX2aB3cD4eF5gH",
        "rawData": {
            "id": "in_1QkX2aB3cD4eF5gH",
            "object": "invoice",
            "amount_paid": 125000,
            "currency": "usd",
            "status_transitions": {"paid_at": 1772793000},
        },
        "status": "pending",
        "customerId": _CUSTOMER,
        "subscriptionId": _SUBSCRIPTION,
        "errorMessage": None,
        "processedAt": None,
        "processedBy": None,
        "usageEventIds": [],
        "createdAt": "2026-03-06T10:35:00.000Z",
        "updatedAt": "2026-03-06T10:35:00.000Z",
    }
    return base | changes


def _payment(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "pay_0Xy2Za4Bc6De8Fg0Hi2Jk4Lm",
        "object": "payment",
        "amount": "250.00",
        "currency": "USD",
        "status": "completed",
        "paymentUrl": "https://billing.example.com/pay/pay_0Xy2Za4Bc6De8Fg0Hi2Jk4Lm",
        "customerId": _CUSTOMER,
        "idempotencyKey": "order-1042",
        "reference": "Order #1042",
        "metadata": {"orderId": "1042"},
        "lineItems": [{"description": "Onboarding workshop", "amount": "250.00", "quantity": 1}],
        "expiresAt": "2026-03-31T09:00:00.000Z",
        "createdAt": "2026-03-01T09:00:00.000Z",
    }
    return base | changes


_CREATION_FAILED: dict[str, Any] = {
    "object": "customerCreationFailure",
    "merchantId": _MERCHANT,
    "planId": "plan_8Rs0Tu2Vw4Xy6Za8Bc0De2Fg",
    "consumer": {"name": "Acme Robotics", "email": "billing@acme.example"},
    "errorMessage": "billing@acme.example already has a subscription to this plan",
    "createdAt": "2026-03-01T09:00:00.000Z",
}


def _catalog(*types: EventType) -> dict[str, EventType]:
    return {t.name: t for t in types}


EVENT_TYPES: dict[str, EventType] = _catalog(
    EventType(
        "customer.created.v0", "customer", "A customer was created (POST /v0/customers).", example=CUSTOMER
    ),
    EventType(
        "customer.creation_failed.v0",
        "customer",
        "A customer's signup through an authorization link failed; data describes the attempt.",
        example=_CREATION_FAILED,
    ),
    EventType(
        "subscription.created.v0",
        "subscription",
        "A subscription was created, with its Invoice 0 (status pending_payment, or active when nothing "
        "is due up front).",
        example=SUBSCRIPTION_CREATED,
    ),
    EventType(
        "subscription.activated.v0",
        "subscription",
        "A subscription became active: its Invoice 0 was paid, or it had nothing to pay up front.",
        example=SUBSCRIPTION_ACTIVE,
    ),
    EventType(
        "subscription.updated.v0",
        "subscription",
        "A subscription changed (status or settings).",
        example=SUBSCRIPTION_ACTIVE,
    ),
    EventType(
        "subscription.cancelled.v0",
        "subscription",
        "A subscription was terminated (by the merchant, at its end date, or because Invoice 0 expired).",
        example=SUBSCRIPTION_CANCELLED,
    ),
    EventType(
        "invoice.issued.v0",
        "invoice",
        "An invoice was finalized and issued to the customer.",
        example=INVOICE_ISSUED,
    ),
    EventType("invoice.paid.v0", "invoice", "An invoice was paid in full.", example=INVOICE_PAID),
    EventType(
        "invoice.payment_failed.v0",
        "invoice",
        "Charging an invoice failed (status PAYMENT_FAILED); it is retried on the dunning schedule.",
        example=INVOICE_PAYMENT_FAILED,
    ),
    EventType(
        "invoice.cancelled.v0",
        "invoice",
        "An invoice was cancelled (an unpaid Invoice 0 when its subscription ended first).",
        example=INVOICE_CANCELLED,
    ),
    EventType(
        "source.activated.v0",
        "sourceInstallation",
        "A customer connected their external account (a source installation became active).",
        example=_installation(),
    ),
    EventType(
        "source.activation_failed.v0",
        "sourceInstallation",
        "Connecting a customer's external account failed (for example an invalid API key).",
        example=_installation(
            status="error",
            connectedAt=None,
            keyMode="test",
            errorMessage="Stripe refused the API key (401 Unauthorized): check that it is a secret key "
            "(sk_live_ or sk_test_) that has not been rolled",
        ),
    ),
    EventType(
        "source.disconnected.v0",
        "sourceInstallation",
        "A source installation was disconnected, by the customer or because its key was revoked.",
        example=_installation(
            status="disconnected",
            lastSyncAt="2026-05-20T08:05:00.000Z",
            disconnectedAt="2026-05-20T08:07:41.000Z",
        ),
    ),
    EventType(
        "source_event.pending.v0",
        "sourceEvent",
        "A new source event awaits review (manual processing mode, no matching rule).",
        example=_source_event(),
    ),
    EventType(
        "source_event.processed.v0",
        "sourceEvent",
        "A source event was approved and its revenue recorded for billing.",
        example=_source_event(
            status="processed",
            processedAt="2026-03-06T11:02:00.000Z",
            processedBy="usr_2Ab4Cd6Ef8Gh0Ij2Kl4Mn6Op",
            usageEventIds=["evt_5Qr7St9Uv1Wx3Yz5Ab7Cd9Ef"],
            updatedAt="2026-03-06T11:02:00.000Z",
        ),
    ),
    EventType(
        "source_event.failed.v0",
        "sourceEvent",
        "Processing an approved source event failed.",
        example=_source_event(
            status="failed",
            errorMessage="The invoice is in EUR but the plan bills in USD; record it by hand or reject it",
            processedAt="2026-03-06T11:02:00.000Z",
            processedBy="usr_2Ab4Cd6Ef8Gh0Ij2Kl4Mn6Op",
            updatedAt="2026-03-06T11:02:00.000Z",
        ),
    ),
    EventType(
        "source_event.rejected.v0",
        "sourceEvent",
        "A source event was rejected.",
        example=_source_event(
            status="rejected",
            processedAt="2026-03-06T11:02:00.000Z",
            processedBy="usr_2Ab4Cd6Ef8Gh0Ij2Kl4Mn6Op",
            updatedAt="2026-03-06T11:02:00.000Z",
        ),
    ),
    EventType("payment.completed.v0", "payment", "A one-off payment was completed.", example=_payment()),
    EventType(
        "payment.expired.v0",
        "payment",
        "A one-off payment expired unpaid.",
        example=_payment(status="expired"),
    ),
)


def resource_of(event_type: str) -> str:
    """The resource an event type's `data` represents; KeyError for a type outside the catalog."""
    return EVENT_TYPES[event_type].resource
