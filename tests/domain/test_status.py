"""The status machines: every allowed transition, a sample of forbidden ones, and the named status sets the
activities and the API ask, checked against the tables."""

from __future__ import annotations

import pytest

from domain import status
from domain.status import INVOICE, PAYMENT_SESSION, SUBSCRIPTION, IllegalTransition, Machine

ALLOWED = [
    (INVOICE, "ACTIVE", "CLOSING"),  # periodEnd
    (INVOICE, "CLOSING", "CLOSED"),  # gracePeriodEnd
    (INVOICE, "CLOSED", "CALCULATING"),
    (INVOICE, "CALCULATING", "DRAFT"),
    (INVOICE, "CALCULATING", "PAID"),  # zero-total Invoice 0
    (INVOICE, "CALCULATING", "FAILED"),  # a calculation no retry fixes
    (INVOICE, "DRAFT", "ISSUED"),
    (INVOICE, "ISSUED", "PAID"),
    (INVOICE, "ISSUED", "PAYMENT_FAILED"),
    (INVOICE, "ISSUED", "CANCELLED"),  # Invoice 0 of a subscription terminated unpaid
    (INVOICE, "PAYMENT_FAILED", "PAID"),
    (INVOICE, "FAILED", "CALCULATING"),  # an operator recalculates
    (SUBSCRIPTION, "pending_payment", "active"),
    (SUBSCRIPTION, "pending_payment", "terminated"),
    (SUBSCRIPTION, "active", "terminated"),
    (PAYMENT_SESSION, "open", "completed"),
    (PAYMENT_SESSION, "declined", "declined"),  # another failed attempt on a payable checkout
    (PAYMENT_SESSION, "declined", "completed"),
]

FORBIDDEN = [
    (INVOICE, "ACTIVE", "ISSUED"),  # skips the close and the calculation
    (INVOICE, "CLOSING", "ACTIVE"),  # no reopening
    (INVOICE, "PAID", "CANCELLED"),  # final
    (INVOICE, "PAID", "PAID"),
    (INVOICE, "CANCELLED", "PAID"),
    (INVOICE, "ISSUED", "DRAFT"),
    (INVOICE, "DRAFT", "PAID"),  # not before it is issued
    (SUBSCRIPTION, "terminated", "active"),
    (SUBSCRIPTION, "active", "pending_payment"),
    (SUBSCRIPTION, "terminated", "terminated"),
    (PAYMENT_SESSION, "completed", "declined"),
    (PAYMENT_SESSION, "expired", "completed"),
]


@pytest.mark.parametrize("machine,current,wanted", ALLOWED, ids=lambda v: getattr(v, "resource", v))
def test_allowed_transitions(machine: Machine, current: str, wanted: str) -> None:
    assert machine.may(current, wanted)
    machine.check(current, wanted)


@pytest.mark.parametrize("machine,current,wanted", FORBIDDEN, ids=lambda v: getattr(v, "resource", v))
def test_forbidden_transitions_raise(machine: Machine, current: str, wanted: str) -> None:
    assert not machine.may(current, wanted)
    with pytest.raises(IllegalTransition) as raised:
        machine.check(current, wanted)
    assert f"cannot go from {current} to {wanted}" in str(raised.value)
    assert (raised.value.current, raised.value.wanted) == (current, wanted)


def test_the_tables_cover_every_status_and_nothing_else() -> None:
    assert set(INVOICE.transitions) == set(status.INVOICE_STATUSES)
    assert set(SUBSCRIPTION.transitions) == set(status.SUBSCRIPTION_STATUSES)
    for machine in (INVOICE, SUBSCRIPTION, PAYMENT_SESSION):
        assert set().union(*machine.transitions.values()) <= set(machine.transitions), machine.resource


def test_a_final_status_says_so() -> None:
    with pytest.raises(IllegalTransition, match=r"allowed from PAID: none \(it is final\)"):
        INVOICE.check("PAID", "ISSUED")


def test_the_named_sets_agree_with_the_table() -> None:
    # Payable: the payer can still settle it (and not only at calculation time).
    assert {s for s in status.INVOICE_STATUSES if INVOICE.may(s, "PAID")} - {"CALCULATING"} == set(
        status.INVOICE_PAYABLE
    )
    # Awaiting finalize: the period is over, the calculation still ahead (FAILED waits for an operator).
    ahead = {"CLOSING", "CLOSED", "CALCULATING"}
    assert set(status.INVOICE_AWAITING_FINALIZE) == ahead
    assert status.INVOICE_FINALIZED == frozenset(status.INVOICE_STATUSES) - ahead - {"ACTIVE"}
    assert "FAILED" in status.INVOICE_FINALIZED  # a repeated finalize leaves a FAILED invoice alone
    # Lines attach while usage does; live totals until the calculation freezes them.
    assert status.INVOICE_OPEN_FOR_LINES < status.INVOICE_LIVE
    assert "CALCULATING" not in status.INVOICE_LIVE
    assert {s for s in PAYMENT_SESSION.transitions if PAYMENT_SESSION.may(s, "completed")} == set(
        status.PAYMENT_SESSION_PAYABLE
    )
