"""The sandbox provider (D14): Accrue's own hosted test checkout. No money moves and nothing is called.

`create_payment` hands back Accrue's hosted page (`/checkout/<our id>`, api/routers/payments.py): its
"Pay (test)" / "Decline (test)" buttons (and `POST /v0/paymentSessions/{id}/complete|decline`) send the
outcome to the owning workflow themselves, so the provider holds no state and `retrieve` has nothing newer
than the owner's own row to report (REQUIRES_PAYMENT). Off-session charges of a stored method succeed at
once, as the sandbox always did for `autoCharge`, except for a method whose id starts with
`pm_sandbox_decline` (test hook for dunning), which is declined with `card_declined`;
`pm_sandbox_decline_first_<n>` declines attempts 1…n of each charge and succeeds from attempt n + 1 (dunning
tests: "fails twice, then the retry succeeds"), decided from the method and the attempt alone.
"""

from __future__ import annotations

import re

from integrations.payments.base import (
    CreatedPayment,
    OffSessionCharge,
    PaymentDeclinedError,
    PaymentRequest,
    PaymentState,
    PaymentStatus,
    ProviderName,
    ProviderRejected,
)

DECLINING_METHOD_PREFIX = "pm_sandbox_decline"
_DECLINES_FIRST = re.compile(r"pm_sandbox_decline_first_(\d+)")


def declines(payment_method: str, attempt: int) -> bool:
    """Whether the sandbox declines this off-session charge attempt of the method."""
    first = _DECLINES_FIRST.fullmatch(payment_method)
    if first is not None:
        return attempt <= int(first[1])
    return payment_method.startswith(DECLINING_METHOD_PREFIX)


class SandboxProvider:
    name: ProviderName = "sandbox"

    async def create_payment(self, request: PaymentRequest) -> CreatedPayment:
        return CreatedPayment(provider="sandbox", reference=request.our_id, payment_url=request.page_url)

    async def retrieve(self, reference: str) -> PaymentState:
        return PaymentState(reference=reference, status=PaymentStatus.REQUIRES_PAYMENT, our_id=reference)

    async def confirm_with_card_token(self, reference: str, token: str, attempt: str) -> PaymentState:
        raise ProviderRejected("the sandbox provider takes no cards: use the checkout page's test buttons")

    async def charge_off_session(self, request: OffSessionCharge) -> PaymentState:
        reference = f"{request.our_id}:charge:{request.attempt}"
        if declines(request.payment_method, request.attempt):
            state = PaymentState(
                reference=reference,
                status=PaymentStatus.FAILED,
                amount=request.amount,
                currency=request.currency,
                owner=request.owner,
                our_id=request.our_id,
                invoice_id=request.invoice_id,
                failure_code="card_declined",
                failure_message="Your card was declined. (sandbox)",
            )
            raise PaymentDeclinedError("Your card was declined. (sandbox)", state, "card_declined")
        return PaymentState(
            reference=reference,
            status=PaymentStatus.SUCCEEDED,
            amount=request.amount,
            currency=request.currency,
            owner=request.owner,
            our_id=request.our_id,
            invoice_id=request.invoice_id,
            payment_method=request.payment_method,
            provider_customer=request.provider_customer,
        )
