"""The subscription workflow's side effects. Every activity is idempotent by business key (the subscription
and the invoice sequence number): a retry after its commit finds the transition done and returns the same
result, so a crash anywhere never doubles an invoice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.rendering import invoice_data, subscription_data
from db import funding, outbox
from db.base import Base
from db.billing import BillingContext, fee_charges, load_context, period_charges, write_invoice
from db.models import (
    Customer,
    Invoice,
    LineItem,
    PaymentSession,
    Plan,
    ProviderCustomer,
    Subscription,
    TestClock,
)
from db.session import session_factory
from db.subscriptions import invoice_number, open_checkout
from domain import status
from domain.durations import parse_duration
from domain.funding import minimum_balance_charge
from domain.ids import new_id
from domain.money import format_money, from_nanos
from domain.periods import period_bounds
from integrations.payments.base import (
    OffSessionCharge,
    PaymentDeclinedError,
    PaymentOwner,
    PaymentProvider,
    PaymentStatus,
    ProviderRejected,
)
from integrations.payments.sandbox import SandboxProvider
from integrations.payments.sessions import ProviderChoice, open_payment, reconcile_subscription
from workflows.subscription_activities import SubscriptionActivityDefs
from workflows.subscription_messages import (
    WORKFLOW_VERSION,
    ChargeInvoice,
    ChargeOutcome,
    ClosePeriod,
    CreateInvoice0,
    Dunning,
    ExpireActivation,
    FinalizeInvoice,
    Invoice0Created,
    InvoiceOutcome,
    LoadState,
    OpenPeriod,
    PaymentCompleted,
    PaymentDeclined,
    PaymentOutcome,
    PaymentsReconciled,
    PendingClose,
    PeriodClosed,
    PeriodInfo,
    ReconcilePayments,
    RecordPayment,
    SubscriptionState,
    Terminate,
    Terminated,
)

PERIOD_INVOICE_CHECKOUT = timedelta(days=30)  # how long a period invoice's checkout stays payable
DEFAULT_DUNNING = (timedelta(days=1), timedelta(days=3), timedelta(days=5), timedelta(days=7))
# The sandbox's saved "test method" for an autoCharge subscription whose Invoice 0 was paid on the test page
# without naming one: off-session charges with it succeed (integrations/payments/sandbox.py; methods starting
# with pm_sandbox_decline are declined).
SANDBOX_SAVED_METHOD = "pm_sandbox_visa"
# Invoice metadata key of the method saved when that invoice was paid (autoCharge): {provider, customer, id}.
SAVED_METHOD = "savedPaymentMethod"
# Invoice metadata key of the off-session charges made for it: [{attempt, at, outcome, reference, failure}].
CHARGES = "charges"


def _sandbox_only(name: str, environment: str) -> PaymentProvider:
    return SandboxProvider()


def _checked(machine: status.Machine, current: str, wanted: str) -> None:
    try:
        machine.check(current, wanted)
    except status.IllegalTransition as exc:
        raise ApplicationError(str(exc), type="IllegalTransition", non_retryable=True) from None


def _transition(invoice: Invoice, wanted: str, at: datetime) -> None:
    """Record each status change in the invoice's metadata: its history is part of the API object."""
    _checked(status.INVOICE, invoice.status, wanted)
    history = list((invoice.metadata_ or {}).get("transitions", []))
    history.append({"from": invoice.status, "to": wanted, "at": at.isoformat()})
    invoice.metadata_ = {**(invoice.metadata_ or {}), "transitions": history}
    invoice.status = wanted


def _no_retry_fixes(exc: Exception) -> bool:
    """Decimal arithmetic that cannot be exact, or a PostgreSQL data exception (SQLSTATE class 22, e.g.
    numeric field overflow): the same inputs fail the same way every time."""
    if isinstance(exc, ArithmeticError):
        return True
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


def _new_invoice(
    sub: Subscription, sequence_number: int, start: datetime, end: datetime, *, grace_period_end: datetime,
    status: str,
) -> Invoice:  # fmt: skip
    return Invoice(
        id=new_id("invoice"),
        merchant_id=sub.merchant_id,
        environment=sub.environment,
        subscription_id=sub.id,
        customer_id=sub.customer_id,
        sequence_number=sequence_number,
        currency=sub.currency,
        billing_anchor=sub.billing_anchor,
        billing_cadence=sub.billing_cadence,
        period_start=start,
        period_end=end,
        grace_period_end=grace_period_end,
        status=status,
        auto_approve=True,
        is_final=False,
        invoice_number=invoice_number(sub.id, sequence_number),
        metadata_={"transitions": []},
    )


def _set_status(sub: Subscription, wanted: str) -> None:
    _checked(status.SUBSCRIPTION, sub.status, wanted)
    sub.status = wanted


class SubscriptionActivities(SubscriptionActivityDefs):
    def __init__(
        self,
        engine: AsyncEngine,
        grace_period: timedelta,
        base_url: str,
        *,
        dunning_schedule: tuple[timedelta, ...] = DEFAULT_DUNNING,  # Settings.dunning_schedule
        dunning_policy: str = "keep",  # Settings.dunning_policy: keep | terminate
        # (provider name, environment) → the provider (integrations.payments.provider_named with settings)
        provider_named: Callable[[str, str], PaymentProvider] = _sandbox_only,
        # Issue 11: which provider opens a checkout's payment (None: the sandbox, nothing to open)
        payment_choice: ProviderChoice | None = None,
    ) -> None:
        self.sessions = session_factory(engine)
        self.grace = grace_period
        self.base_url = base_url  # the API's, for the links in rendered payloads
        self.dunning_schedule = dunning_schedule
        self.dunning_policy = dunning_policy
        self.provider_named = provider_named
        self.payment_choice = payment_choice or ProviderChoice()

    async def _record_subscription(self, session: AsyncSession, sub: Subscription, *event_types: str) -> None:
        """One rendering for every event the change makes (activation is both updated and activated)."""
        data = await subscription_data(session, sub, self.base_url)
        for event_type in event_types:
            outbox.record(session, sub.merchant_id, sub.environment, event_type, data)

    async def _record_invoice(
        self, session: AsyncSession, sub: Subscription, event_type: str, invoice: Invoice
    ) -> None:
        data = await invoice_data(session, invoice, self.base_url)
        outbox.record(session, sub.merchant_id, sub.environment, event_type, data)

    async def _subscription(self, session: AsyncSession, subscription_id: str) -> Subscription:
        sub = await session.get(Subscription, subscription_id, with_for_update=True)
        if sub is None:
            raise ApplicationError(
                f"subscription {subscription_id} not found", type="NotFound", non_retryable=True
            )
        return sub

    async def _period(
        self, session: AsyncSession, subscription_id: str, sequence_number: int, *, lock: type[Base]
    ) -> tuple[Subscription, Invoice, Plan, Customer]:
        """The subscription and its invoice for the period, with the plan and customer that price it, in one
        round trip; `lock` (Subscription or Invoice) names the one row locked FOR UPDATE. Locking both in one
        statement would take them in an order the query plan picks, and the API takes the subscription
        before the invoice: a deadlock waiting to happen."""
        row = (
            await session.execute(
                select(Subscription, Invoice, Plan, Customer)
                .join(Invoice, Invoice.subscription_id == Subscription.id)
                .join(Plan, Plan.id == Subscription.plan_id)
                .join(Customer, Customer.id == Subscription.customer_id)
                .where(Subscription.id == subscription_id, Invoice.sequence_number == sequence_number)
                .with_for_update(of=lock)
            )
        ).first()
        if row is None:
            await self._subscription(session, subscription_id)
            raise ApplicationError("no invoice for that period", type="NotFound", non_retryable=True)
        sub, invoice, plan, customer = row
        return sub, invoice, plan, customer

    async def _opening(
        self, session: AsyncSession, subscription_id: str, sequence_number: int
    ) -> tuple[Subscription, Invoice | None]:
        """The subscription, locked, and its invoice for the period if it was opened already. The lock on
        the subscription serializes every attempt to open a period, so the invoice needs none."""
        row = (
            await session.execute(
                select(Subscription, Invoice)
                .outerjoin(
                    Invoice,
                    (Invoice.subscription_id == Subscription.id)
                    & (Invoice.sequence_number == sequence_number),
                )
                .where(Subscription.id == subscription_id)
                .with_for_update(of=Subscription)
            )
        ).first()
        if row is None:
            raise ApplicationError(
                f"subscription {subscription_id} not found", type="NotFound", non_retryable=True
            )
        sub, invoice = row
        return sub, invoice

    async def _invoice(
        self, session: AsyncSession, subscription_id: str, sequence_number: int
    ) -> Invoice | None:
        return await session.scalar(
            select(Invoice)
            .where(Invoice.subscription_id == subscription_id, Invoice.sequence_number == sequence_number)
            .with_for_update()
        )

    @activity.defn
    async def load_subscription_state(self, request: LoadState) -> SubscriptionState:
        async with self.sessions() as session:
            sub = await self._subscription(session, request.subscription_id)
            invoices = list(
                await session.scalars(
                    select(Invoice).where(Invoice.subscription_id == sub.id).order_by(Invoice.sequence_number)
                )
            )
            # Top-up invoices (negative sequence numbers, db/funding.py) come first; Invoice 0 is number 0.
            invoice0 = next((i for i in invoices if i.sequence_number == 0), None)
            if invoice0 is None:
                # A new subscription (the API stored only its row): Invoice 0 here, under the row lock, spares
                # the create's update-with-start a second activity and workflow task, about a third of its
                # Temporal work (bench/subscription_create.py). create_invoice0 serves recorded runs.
                invoice0 = await self._write_invoice0(session, sub)
                invoices = [invoice0, *invoices]
                await session.commit()
            clock = await session.get(TestClock, sub.test_clock_id) if sub.test_clock_id else None
            deadline = None
            if sub.status == "pending_payment" and invoice0 and invoice0.payment_session_id:
                payment = await session.get(PaymentSession, invoice0.payment_session_id)
                deadline = payment.expires_at if payment else None
            active = next((i for i in invoices if i.status == "ACTIVE"), None)
            opening = invoice0.payment_session_id if invoice0 and sub.status == "pending_payment" else None
            state = SubscriptionState(
                subscription_id=sub.id,
                merchant_id=sub.merchant_id,
                environment=sub.environment,
                customer_id=sub.customer_id,
                plan_id=sub.plan_id,
                status=sub.status,
                test_clock_id=sub.test_clock_id,
                clock_now=clock.current_time if clock else None,
                activation_deadline=deadline,
                needs_invoice0=invoice0 is None,
                current_period=active.sequence_number if active else sub.current_period,
                current_period_end=active.period_end if active else None,
                ending_at=sub.ending_at,
                pending_closes=[
                    PendingClose(sequence_number=i.sequence_number, grace_period_end=i.grace_period_end)
                    for i in invoices
                    if i.status in status.INVOICE_AWAITING_FINALIZE
                ],
                workflow_version=WORKFLOW_VERSION,
                dunning=self._open_dunning(sub, invoices),
            )
        state.payment_check_in = await self._payment_check(sub.id, opening)
        return state

    @activity.defn
    async def create_invoice0(self, request: CreateInvoice0) -> Invoice0Created:
        """Invoice 0 with the first period's in-advance charges, and the checkout that gates activation
        (D10); a zero-total Invoice 0 is paid at once and activates the subscription."""
        async with self.sessions() as session:
            sub, invoice0 = await self._opening(session, request.subscription_id, 0)
            if invoice0 is None:
                invoice0 = await self._write_invoice0(session, sub)
                await session.commit()
            payment = (
                await session.get(PaymentSession, invoice0.payment_session_id)
                if invoice0.payment_session_id
                else None
            )
            created = Invoice0Created(
                invoice_id=invoice0.id,
                status=sub.status,
                activation_deadline=payment.expires_at
                if payment and sub.status == "pending_payment"
                else None,
            )
        opening = payment.id if payment is not None and created.activation_deadline is not None else None
        created.payment_check_in = await self._payment_check(request.subscription_id, opening)
        return created

    async def _write_invoice0(self, session: AsyncSession, sub: Subscription) -> Invoice:
        clock = await session.get(TestClock, sub.test_clock_id) if sub.test_clock_id else None
        now = clock.current_time if clock is not None else datetime.now(UTC)
        start, end = period_bounds(sub.billing_anchor, parse_duration(sub.billing_cadence), 0)
        invoice0 = _new_invoice(sub, 0, start, end, grace_period_end=start, status="CALCULATING")
        invoice0.issued_at = now
        session.add(invoice0)
        await session.flush()
        ctx = await load_context(session, sub)
        charges = fee_charges(ctx, "in_advance", start, end, first_period=True)
        wallet_charge = await self._wallet_charge(session, sub)
        if wallet_charge > 0:
            charges.append(funding.topup_charge(invoice0.id, wallet_charge, start, end))
        totals = await write_invoice(session, ctx, invoice0, charges, now)
        if totals.grand_total == 0:
            await self._paid(session, sub, invoice0, now)
            _set_status(sub, "active")
            sub.activated_at = now
        else:
            _transition(invoice0, "DRAFT", now)
            _transition(invoice0, "ISSUED", now)
            open_checkout(session, sub, invoice0, now + timedelta(minutes=sub.session_expiry_minutes))
            await self._record_invoice(session, sub, "invoice.issued.v0", invoice0)
        # Rendered last, so it says what the create answers: Invoice 0's payment, the activation.
        activated = ("subscription.activated.v0",) if sub.status == "active" else ()
        await self._record_subscription(session, sub, "subscription.created.v0", *activated)
        return invoice0

    @staticmethod
    async def _wallet_charge(session: AsyncSession, sub: Subscription) -> Decimal:
        """Invoice 0's top-up for `minimumAccountBalance` (§4.5): what the customer's wallet lacks."""
        if not sub.minimum_account_balance:
            return Decimal(0)
        balance = await funding.wallet_balance(
            session, sub.merchant_id, sub.environment, sub.customer_id, sub.currency
        )
        return minimum_balance_charge(sub.minimum_account_balance, from_nanos(balance), sub.currency)

    @activity.defn
    async def open_period(self, request: OpenPeriod) -> PeriodInfo:
        """Invoice n goes ACTIVE for service period n; a period reaching endingAt is the final one."""
        async with self.sessions() as session:
            sub, invoice = await self._opening(session, request.subscription_id, request.sequence_number)
            if invoice is None:
                start, end = period_bounds(
                    sub.billing_anchor, parse_duration(sub.billing_cadence), request.sequence_number - 1
                )
                final = sub.ending_at is not None and sub.ending_at <= end
                if sub.ending_at is not None and final:
                    end = max(start, sub.ending_at)
                invoice = _new_invoice(
                    sub,
                    request.sequence_number,
                    start,
                    end,
                    grace_period_end=end + self.grace,
                    status="ACTIVE",
                )
                invoice.is_final = final
                session.add(invoice)
                sub.current_period = request.sequence_number
                # Bookkeeping the representation does not show: updatedAt stays what the last webhook said.
                sub.updated_at = Subscription.updated_at
                await session.flush()
                # Manual lines waiting for a later period (invoiceAt past the then-open invoice) join now.
                await session.execute(
                    update(LineItem)
                    .where(
                        LineItem.subscription_id == sub.id,
                        LineItem.invoice_id.is_(None),
                        LineItem.invoice_at < invoice.period_end,
                    )
                    .values(invoice_id=invoice.id)
                )
                await session.commit()
            return PeriodInfo(
                sequence_number=invoice.sequence_number,
                period_end=invoice.period_end,
                is_final=invoice.is_final,
            )

    @activity.defn
    async def close_period(self, request: ClosePeriod) -> PeriodClosed:
        """ACTIVE → CLOSING at periodEnd; a final period (endingAt) also terminates the subscription (D12)."""
        async with self.sessions() as session:
            # The subscription's lock covers its invoices' status changes: the API takes it before it adds a
            # line to the open invoice.
            sub, invoice, _, _ = await self._period(
                session, request.subscription_id, request.sequence_number, lock=Subscription
            )
            if invoice.status == "ACTIVE":
                _transition(invoice, "CLOSING", invoice.period_end)
            terminated = False
            if invoice.is_final and sub.status != "terminated":
                _set_status(sub, "terminated")
                sub.terminated_at = invoice.period_end
                sub.terminated_by, sub.termination_reason = "system", "endingAt reached"
                await self._record_subscription(session, sub, "subscription.cancelled.v0")
                terminated = True
            pending = PendingClose(
                sequence_number=invoice.sequence_number, grace_period_end=invoice.grace_period_end
            )
            await session.commit()
            return PeriodClosed(pending=pending, terminated=terminated or sub.status == "terminated")

    @activity.defn
    async def finalize_invoice(self, request: FinalizeInvoice) -> InvoiceOutcome:
        """At gracePeriodEnd: CLOSED → CALCULATING → DRAFT → ISSUED (auto-approved) → PAID with autoCharge.

        One transaction: the lines, totals and status change commit together, so a retry either redoes all
        of it or finds the invoice already past DRAFT and returns it unchanged. A calculation that fails in
        a way no retry can fix (amounts beyond NUMERIC(38, 9) or exact decimal arithmetic) marks the
        invoice FAILED instead of retrying for ever: the subscription bills on, an operator looks at it.
        """
        try:
            async with self.sessions() as session:
                # Only the invoice is locked (manual lines lock it too): the subscription's next period opens
                # meanwhile, and whatever changes the subscription itself runs in the workflow, one at a time.
                sub, invoice, plan, customer = await self._period(
                    session, request.subscription_id, request.sequence_number, lock=Invoice
                )
                if invoice.status not in status.INVOICE_FINALIZED:
                    ctx = await load_context(session, sub, plan, customer)
                    await self._calculate(session, ctx, invoice, request.at, request.charge_off_session)
                    await session.commit()
                outcome = self._outcome(invoice)
                # Version 5: the workflow charges it (charge_invoice), also when this is a retry.
                outcome.charge = (
                    request.charge_off_session
                    and sub.auto_charge
                    and invoice.status == "ISSUED"
                    and invoice.grand_total > 0
                    and not (invoice.metadata_ or {}).get(CHARGES)
                )
            if invoice.payment_session_id and invoice.status in status.INVOICE_PAYABLE:
                outcome.payment_check_in = await self._payment_check(sub.id, invoice.payment_session_id)
            return outcome
        except (DBAPIError, ArithmeticError) as exc:
            if not _no_retry_fixes(exc):
                raise
            return await self._fail(request, exc)

    @staticmethod
    def _outcome(invoice: Invoice) -> InvoiceOutcome:
        """Formatted as the API formats it, so a retry (which reads the stored row) answers exactly as the
        first attempt (which holds the values it computed) did."""
        failure = (invoice.metadata_ or {}).get("failure")
        return InvoiceOutcome(
            invoice_id=invoice.id,
            status=invoice.status,
            grand_total=format_money(invoice.grand_total, invoice.currency),
            failure=failure["message"] if failure else None,
        )

    async def _fail(self, request: FinalizeInvoice, exc: Exception) -> InvoiceOutcome:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        message = (
            f"the calculation failed and no retry can fix it ({type(exc).__name__}: {reason[:200]}); the "
            "period's usage holds values beyond what billing can represent; correct the meter events, then "
            "ask an operator to recalculate the invoice"
        )
        async with self.sessions() as session:
            _, invoice, _, _ = await self._period(
                session, request.subscription_id, request.sequence_number, lock=Invoice
            )
            if invoice.status not in status.INVOICE_FINALIZED:
                for step in ("CLOSED", "CALCULATING", "FAILED"):
                    if invoice.status != step:
                        _transition(invoice, step, request.at)
                invoice.metadata_ = {
                    **(invoice.metadata_ or {}),
                    "failure": {
                        "type": "CalculationFailed",
                        "message": message,
                        "at": request.at.isoformat(),
                    },
                }
                await session.commit()
                activity.logger.error(
                    "invoice %s of subscription %s FAILED: %s", invoice.id, request.subscription_id, message
                )
            return self._outcome(invoice)

    async def _calculate(
        self,
        session: AsyncSession,
        ctx: BillingContext,
        invoice: Invoice,
        at: datetime,
        charge_off_session: bool = False,
    ) -> None:
        sub = ctx.subscription
        for step in ("CLOSED", "CALCULATING"):
            if invoice.status != step:
                _transition(invoice, step, at)
        charges = await period_charges(session, ctx, invoice)
        totals = await write_invoice(session, ctx, invoice, charges, at)
        _transition(invoice, "DRAFT", at)
        _transition(invoice, "ISSUED", at)
        invoice.issued_at = at
        if totals.grand_total == 0 or (sub.auto_charge and not charge_off_session):
            # A zero invoice has nothing to collect. Before version 5 an autoCharge invoice was paid here
            # at once (the sandbox charging a stored method); since, the workflow charges it (charge_invoice).
            await self._record_invoice(session, sub, "invoice.issued.v0", invoice)
            await self._paid(session, sub, invoice, at)
            return
        if sub.auto_charge:
            # No checkout: the workflow charges the saved method next; a failed charge opens one (Pay now).
            await self._record_invoice(session, sub, "invoice.issued.v0", invoice)
            return
        open_checkout(session, sub, invoice, at + PERIOD_INVOICE_CHECKOUT)
        # Rendered after the checkout opens, so the event carries the paymentUrl GET shows.
        await self._record_invoice(session, sub, "invoice.issued.v0", invoice)

    async def _paid(self, session: AsyncSession, sub: Subscription, invoice: Invoice, at: datetime) -> None:
        _transition(invoice, "PAID", at)
        invoice.paid_at, invoice.paid_amount = at, invoice.grand_total
        if invoice.sequence_number <= 0 and invoice.grand_total > 0:
            # Invoice 0 or a top-up invoice may carry a wallet top-up: it reaches the wallet in the
            # transaction that records the invoice PAID, once (db/funding.py).
            await funding.credit_topup(session, invoice)
        await self._record_invoice(session, sub, "invoice.paid.v0", invoice)

    @activity.defn
    async def record_payment(self, request: RecordPayment) -> PaymentOutcome:
        """A completed checkout pays its invoice (Invoice 0 also activates); a declined one is recorded."""
        async with self.sessions() as session:
            sub = await self._subscription(session, request.subscription_id)
            payment = await session.get(PaymentSession, request.payment_session_id, with_for_update=True)
            invoice = await session.get(Invoice, request.invoice_id, with_for_update=True)
            if payment is None or invoice is None or payment.invoice_id != invoice.id:
                return PaymentOutcome(applied=False, activated=False)
            if payment.status == "completed" or invoice.status not in status.INVOICE_PAYABLE:
                # A retry after this activity's own commit (or a repeated signal) must still tell the
                # workflow that Invoice 0 activated the subscription, or it would later expire it.
                done = payment.status == "completed" and invoice.sequence_number == 0
                return PaymentOutcome(
                    applied=False,
                    activated=done and sub.status == "active",
                    settled=invoice.status not in status.INVOICE_PAYABLE,
                )
            if not request.succeeded:
                _checked(status.PAYMENT_SESSION, payment.status, "declined")
                payment.status = "declined"
                if invoice.sequence_number > 0 and invoice.status != "PAYMENT_FAILED":
                    _transition(invoice, "PAYMENT_FAILED", request.at)
                await session.commit()
                return PaymentOutcome(applied=True, activated=False)
            _checked(status.PAYMENT_SESSION, payment.status, "completed")
            payment.status, payment.completed_at = "completed", request.at
            if sub.auto_charge:
                self._save_method(invoice, payment, request)
            await self._paid(session, sub, invoice, request.at)
            activated = invoice.sequence_number == 0 and sub.status == "pending_payment"
            if activated:
                _set_status(sub, "active")
                sub.activated_at = request.at
                await self._record_subscription(
                    session, sub, "subscription.updated.v0", "subscription.activated.v0"
                )
            await session.commit()
            return PaymentOutcome(applied=True, activated=activated, settled=True)

    # ---- autoCharge: the saved method and off-session charges (version 5) ----------------------------------

    @staticmethod
    def _save_method(invoice: Invoice, payment: PaymentSession, request: RecordPayment) -> None:
        """Keep the method this checkout was paid with for the subscription's off-session charges, in the
        paid invoice's metadata (Invoice 0, or a failed invoice paid by hand: the latest one counts). The
        sandbox saves its test method unless the page named another (a declining one, for tests)."""
        provider = str(getattr(payment, "provider", None) or "sandbox")
        method = request.payment_method or (SANDBOX_SAVED_METHOD if provider == "sandbox" else None)
        if method is None:
            return
        saved = {"provider": provider, "customer": request.provider_customer, "id": method}
        invoice.metadata_ = {**(invoice.metadata_ or {}), SAVED_METHOD: saved}

    @staticmethod
    async def _saved_method(session: AsyncSession, sub: Subscription) -> dict[str, Any] | None:
        """The method the latest paid checkout of this subscription saved, else the customer's method saved
        at a provider (provider_customers: what the Stripe confirmation of an Invoice 0 opened with
        savePaymentMethod keeps)."""
        saved = await session.scalar(
            select(Invoice.metadata_[SAVED_METHOD])
            .where(Invoice.subscription_id == sub.id, Invoice.metadata_[SAVED_METHOD].is_not(None))
            .order_by(Invoice.paid_at.desc().nulls_last(), Invoice.sequence_number.desc())
            .limit(1)
        )
        if isinstance(saved, dict) and saved.get("id"):
            return saved
        known = (
            await session.execute(
                select(
                    ProviderCustomer.provider,
                    ProviderCustomer.provider_customer,
                    ProviderCustomer.payment_method,
                )
                .where(
                    ProviderCustomer.merchant_id == sub.merchant_id,
                    ProviderCustomer.environment == sub.environment,
                    ProviderCustomer.customer_id == sub.customer_id,
                    ProviderCustomer.payment_method.is_not(None),
                )
                .order_by(ProviderCustomer.updated_at.desc())
                .limit(1)
            )
        ).first()
        if known is None:
            return None
        return {"provider": known[0], "customer": known[1], "id": known[2]}

    def _open_dunning(self, sub: Subscription, invoices: list[Invoice]) -> list[Dunning]:
        """The charges a (re)started workflow still owes (a run restarted by the reconciler, or by hand):
        issued autoCharge invoices not charged yet are due at their issue, failed ones at their next retry."""
        if not sub.auto_charge:
            return []
        owed = []
        for invoice in invoices:
            if invoice.sequence_number <= 0 or invoice.status not in status.INVOICE_PAYABLE:
                continue
            charges: list[dict[str, Any]] = (invoice.metadata_ or {}).get(CHARGES, [])
            if not charges:
                if invoice.status != "ISSUED" or invoice.payment_session_id or invoice.grand_total <= 0:
                    continue  # paid through its checkout, as before version 5
                attempts, next_at = 0, invoice.issued_at or invoice.grace_period_end
            else:
                retry_at = self._retry_at(charges)
                if retry_at is None:
                    continue  # the schedule is over: the policy was applied
                attempts, next_at = max(int(c["attempt"]) for c in charges), retry_at
            owed.append(
                Dunning(
                    invoice_id=invoice.id,
                    sequence_number=invoice.sequence_number,
                    attempts=attempts,
                    next_at=next_at,
                )
            )
        return owed

    def _retry_at(self, charges: list[dict[str, Any]]) -> datetime | None:
        """The next retry: the schedule's offsets count from the first failed charge."""
        failed = [c for c in charges if c["outcome"] == "failed"]
        if not failed or len(failed) > len(self.dunning_schedule):
            return None
        return datetime.fromisoformat(failed[0]["at"]) + self.dunning_schedule[len(failed) - 1]

    def _charge_outcome(self, invoice: Invoice, charges: list[dict[str, Any]], attempt: int) -> ChargeOutcome:
        this = next(c for c in charges if c["attempt"] == attempt)
        if this["outcome"] == "paid" or invoice.status not in status.INVOICE_PAYABLE:
            return ChargeOutcome(invoice_id=invoice.id, status=invoice.status, charged=True)
        retry_at = self._retry_at(charges)
        return ChargeOutcome(
            invoice_id=invoice.id,
            status=invoice.status,
            charged=True,
            retry_at=retry_at,
            terminate=retry_at is None and self.dunning_policy == "terminate",
            failure=this.get("failure"),
        )

    @activity.defn
    async def charge_invoice(self, request: ChargeInvoice) -> ChargeOutcome:
        """Charge an issued autoCharge invoice off-session with the subscription's saved method: PAID
        (invoice.paid.v0), or PAYMENT_FAILED with invoice.payment_failed.v0 (each failed attempt), a checkout
        for the portal's Pay now (the first time), and the next retry from the dunning schedule.

        Idempotent: the provider call carries `<invoice id>:charge:<attempt>` (a retry of this activity gets
        the provider's first answer, never a second charge), and the attempt is recorded in the invoice's
        metadata in the transaction that records its outcome (a retry after that commit returns it). The
        invoice's row lock is held across the provider call, so a payment recorded meanwhile waits and a
        charge never races a checkout of the same invoice into paying it twice."""
        async with self.sessions() as session:
            invoice = await session.get(Invoice, request.invoice_id, with_for_update=True)
            if invoice is None or invoice.subscription_id != request.subscription_id:
                raise ApplicationError(
                    f"invoice {request.invoice_id} not found", type="NotFound", non_retryable=True
                )
            charges: list[dict[str, Any]] = list((invoice.metadata_ or {}).get(CHARGES, []))
            if any(c["attempt"] == request.attempt for c in charges):
                return self._charge_outcome(invoice, charges, request.attempt)
            if invoice.status not in status.INVOICE_PAYABLE:
                # Settled meanwhile (paid by hand, cancelled, written off): nothing to charge.
                return ChargeOutcome(invoice_id=invoice.id, status=invoice.status, charged=False)
            sub = await session.get_one(Subscription, invoice.subscription_id)
            saved = await self._saved_method(session, sub)
            reference: str | None = None
            failure: str | None = None
            if saved is None:
                failure = "no saved payment method (Invoice 0 was free, or its method was not kept)"
            else:
                provider = self.provider_named(str(saved.get("provider") or "sandbox"), sub.environment)
                charge = OffSessionCharge(
                    our_id=invoice.id,
                    attempt=request.attempt,
                    merchant_id=sub.merchant_id,
                    environment=sub.environment,
                    amount=invoice.grand_total - invoice.paid_amount,
                    currency=invoice.currency,
                    owner=PaymentOwner(kind="subscription", id=sub.id),
                    description=f"Invoice {invoice.invoice_number or invoice.id}",
                    provider_customer=str(saved.get("customer") or ""),
                    payment_method=str(saved["id"]),
                    invoice_id=invoice.id,
                )
                try:
                    state = await provider.charge_off_session(charge)
                except PaymentDeclinedError as exc:
                    failure = str(exc)
                    reference = exc.state.reference if exc.state is not None else None
                except ProviderRejected as exc:
                    # A method the provider no longer accepts (detached, expired): a failed charge, which
                    # retrying this activity cannot fix. ProviderUnavailable propagates: retried, same key.
                    failure = str(exc)
                else:
                    reference = state.reference
                    if state.status == PaymentStatus.PROCESSING:
                        # Submitted, not settled: the retry asks again with the same key (no new charge).
                        raise ApplicationError(f"charge {state.reference} is processing", type="Processing")
                    if state.status != PaymentStatus.SUCCEEDED:
                        failure = state.failure_message or f"charge {state.status}"
            charges.append(
                {
                    "attempt": request.attempt,
                    "at": request.at.isoformat(),
                    "outcome": "failed" if failure else "paid",
                    "reference": reference,
                    "failure": failure[:300] if failure else None,
                }
            )
            invoice.metadata_ = {**(invoice.metadata_ or {}), CHARGES: charges}
            if failure is None:
                await self._paid(session, sub, invoice, request.at)
            else:
                if invoice.status != "PAYMENT_FAILED":
                    _transition(invoice, "PAYMENT_FAILED", request.at)
                checkout = (
                    await session.get(PaymentSession, invoice.payment_session_id)
                    if invoice.payment_session_id
                    else None
                )
                if (
                    checkout is None
                    or checkout.status not in status.PAYMENT_SESSION_PAYABLE
                    or checkout.expires_at <= request.at
                ):
                    # The portal's Pay now opens this checkout (a fresh one if the last lapsed: a schedule
                    # may outlast it); paying it ends the retries.
                    open_checkout(session, sub, invoice, request.at + PERIOD_INVOICE_CHECKOUT)
                await self._record_invoice(session, sub, "invoice.payment_failed.v0", invoice)
                activity.logger.warning(
                    "invoice %s: off-session charge %d failed: %s", invoice.id, request.attempt, failure
                )
            await session.commit()
            return self._charge_outcome(invoice, charges, request.attempt)

    @activity.defn
    async def expire_activation(self, request: ExpireActivation) -> Terminated:
        """Invoice 0's checkout expired unpaid: Invoice 0 CANCELLED, subscription terminated by system."""
        return await self._terminate(
            Terminate(
                subscription_id=request.subscription_id,
                at=request.at,
                terminated_by="system",
                reason="Invoice 0 was not paid before its payment session expired",
            ),
            expired=True,
        )

    @activity.defn
    async def terminate_subscription(self, request: Terminate) -> Terminated:
        return await self._terminate(request, expired=False)

    async def _terminate(self, request: Terminate, *, expired: bool) -> Terminated:
        """D12: immediate; the running period ends at terminatedAt and is billed after the grace window."""
        async with self.sessions() as session:
            sub = await self._subscription(session, request.subscription_id)
            if sub.status == "terminated":
                # A retry after this activity's own commit: report the period it cut short again, or the
                # workflow would never finalize that invoice.
                return Terminated(
                    terminated_at=sub.terminated_at or request.at,
                    closed=await self._final_close(session, sub),
                )
            was_pending = sub.status == "pending_payment"
            _set_status(sub, "terminated")
            sub.terminated_at = request.at
            sub.terminated_by, sub.termination_reason = request.terminated_by, request.reason
            closed = None
            if was_pending:
                invoice0 = await self._invoice(session, sub.id, 0)
                if invoice0 is not None and status.INVOICE.may(invoice0.status, "CANCELLED"):
                    _transition(invoice0, "CANCELLED", request.at)
                    await self._record_invoice(session, sub, "invoice.cancelled.v0", invoice0)
                    if invoice0.payment_session_id:
                        payment = await session.get(PaymentSession, invoice0.payment_session_id)
                        # A declined checkout stays payable until it expires (api/routers/payments.py).
                        if payment is not None and payment.status in status.PAYMENT_SESSION_PAYABLE:
                            payment.status = "expired" if expired else "cancelled"
            else:
                active = await session.scalar(
                    select(Invoice)
                    .where(Invoice.subscription_id == sub.id, Invoice.status == "ACTIVE")
                    .with_for_update()
                )
                if active is not None:
                    active.period_end = max(active.period_start, request.at)
                    active.grace_period_end = active.period_end + self.grace
                    active.is_final = True
                    _transition(active, "CLOSING", request.at)
                    closed = PendingClose(
                        sequence_number=active.sequence_number, grace_period_end=active.grace_period_end
                    )
            await self._cancel_topups(session, sub, request.at, expired=expired)
            await self._record_subscription(session, sub, "subscription.cancelled.v0")
            await session.commit()
            return Terminated(terminated_at=request.at, closed=closed)

    async def _cancel_topups(
        self, session: AsyncSession, sub: Subscription, at: datetime, *, expired: bool
    ) -> None:
        """Unpaid top-up invoices (POST /v0/customers/{id}/topups) end with the subscription: CANCELLED,
        their checkouts with them, so nothing is credited after termination."""
        open_topups = await session.scalars(
            select(Invoice)
            .where(
                Invoice.subscription_id == sub.id,
                Invoice.sequence_number < 0,
                Invoice.status.in_(status.INVOICE_PAYABLE),
            )
            .order_by(Invoice.sequence_number.desc())
            .with_for_update()
        )
        for invoice in open_topups:
            _transition(invoice, "CANCELLED", at)
            await self._record_invoice(session, sub, "invoice.cancelled.v0", invoice)
            if invoice.payment_session_id:
                payment = await session.get(PaymentSession, invoice.payment_session_id)
                if payment is not None and payment.status in status.PAYMENT_SESSION_PAYABLE:
                    lapsed = expired or payment.expires_at <= at
                    payment.status = "expired" if lapsed else "cancelled"

    async def _final_close(self, session: AsyncSession, sub: Subscription) -> PendingClose | None:
        final = await session.scalar(
            select(Invoice).where(
                Invoice.subscription_id == sub.id,
                Invoice.is_final.is_(True),
                Invoice.status.in_(status.INVOICE_AWAITING_FINALIZE),
            )
        )
        if final is None:
            return None
        return PendingClose(sequence_number=final.sequence_number, grace_period_end=final.grace_period_end)

    # ---- payments at a provider (issue 11: integrations/payments/sessions.py) --------------------------

    async def _payment_check(self, subscription_id: str, opening: str | None) -> timedelta | None:
        """Open the payment of the checkout `opening` at its provider (nothing for the sandbox), after the
        checkout's commit and outside any row lock; when the workflow should ask the provider about the
        subscription's open payments (None: nothing open at a provider, as always with the sandbox)."""
        choice = self.payment_choice
        if choice.only_sandbox:
            return None
        now = datetime.now(UTC)
        if opening is not None:
            opened = await open_payment(self.sessions, choice, opening, self.base_url)
            if opened.provider != "sandbox":
                return choice.check_in(now, now)
        async with self.sessions() as session:
            open_at_provider = await session.scalar(
                select(PaymentSession.id)
                .where(
                    PaymentSession.subscription_id == subscription_id,
                    PaymentSession.status.in_(status.PAYMENT_SESSION_PAYABLE),
                    PaymentSession.provider != "sandbox",
                    PaymentSession.expires_at > now,
                )
                .limit(1)
            )
        return choice.check_in(now, now) if open_at_provider is not None else None

    @activity.defn
    async def reconcile_payments(self, request: ReconcilePayments) -> PaymentsReconciled:
        """Ask the provider about every open payment of the subscription (the webhook may never come): the
        succeeded and newly declined ones, which the workflow records like their signals, and when to ask
        again."""
        outcomes, next_check = await reconcile_subscription(
            self.sessions, self.payment_choice, request.subscription_id, self.base_url, datetime.now(UTC)
        )
        return PaymentsReconciled(
            completed=[
                PaymentCompleted(
                    invoice_id=o.invoice_id,
                    payment_session_id=o.payment_session_id,
                    payment_method=o.payment_method,
                    provider_customer=o.provider_customer,
                )
                for o in outcomes
                if o.succeeded
            ],
            declined=[
                PaymentDeclined(invoice_id=o.invoice_id, payment_session_id=o.payment_session_id)
                for o in outcomes
                if not o.succeeded
            ],
            next_check_in=next_check,
        )

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.load_subscription_state,
            self.create_invoice0,
            self.open_period,
            self.close_period,
            self.finalize_invoice,
            self.record_payment,
            self.charge_invoice,
            self.reconcile_payments,
            self.expire_activation,
            self.terminate_subscription,
        ]
