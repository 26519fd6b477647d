"""The activities SubscriptionWorkflow calls, declared without their implementation.

The workflow calls them by reference (`workflow.execute_activity_method(SubscriptionActivityDefs.close_period,
…)`), so their names and message types are checked by mypy instead of matched by strings, and this module
imports nothing that does I/O. `activities.subscription.SubscriptionActivities` subclasses it and overrides
every method with the real side effect; a method's name is its activity name, which recorded histories hold,
so renaming one breaks replay.
"""

from __future__ import annotations

from temporalio import activity

from workflows.subscription_messages import (
    ChargeInvoice,
    ChargeOutcome,
    ClosePeriod,
    CreateInvoice0,
    ExpireActivation,
    FinalizeInvoice,
    Invoice0Created,
    InvoiceOutcome,
    LoadState,
    OpenPeriod,
    PaymentOutcome,
    PaymentsReconciled,
    PeriodClosed,
    PeriodInfo,
    ReconcilePayments,
    RecordPayment,
    SubscriptionState,
    Terminate,
    Terminated,
)


class SubscriptionActivityDefs:
    @activity.defn
    async def load_subscription_state(self, request: LoadState) -> SubscriptionState:
        raise NotImplementedError

    @activity.defn
    async def create_invoice0(self, request: CreateInvoice0) -> Invoice0Created:
        raise NotImplementedError

    @activity.defn
    async def open_period(self, request: OpenPeriod) -> PeriodInfo:
        raise NotImplementedError

    @activity.defn
    async def close_period(self, request: ClosePeriod) -> PeriodClosed:
        raise NotImplementedError

    @activity.defn
    async def finalize_invoice(self, request: FinalizeInvoice) -> InvoiceOutcome:
        raise NotImplementedError

    @activity.defn
    async def record_payment(self, request: RecordPayment) -> PaymentOutcome:
        raise NotImplementedError

    @activity.defn
    async def expire_activation(self, request: ExpireActivation) -> Terminated:
        raise NotImplementedError

    @activity.defn
    async def terminate_subscription(self, request: Terminate) -> Terminated:
        raise NotImplementedError

    @activity.defn
    async def charge_invoice(self, request: ChargeInvoice) -> ChargeOutcome:
        raise NotImplementedError

    @activity.defn
    async def reconcile_payments(self, request: ReconcilePayments) -> PaymentsReconciled:
        raise NotImplementedError
