"""Wire shapes of GET /v0/revenue: the 0.1.34 revenue summary, with the fields 0.6.3 requires (`revenue`
and `rebates` on each trend bucket, `revenue` on each group trend entry) and Accrue's additions
(`walletFunding`, `instantUsage`, per-bucket `instantUsage` and `refunds`; docs/api-extensions.md)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from api.wire import Timestamp, WireModel
from domain.money import format_money
from domain.revenue import OTHER, OTHER_LABEL, Figures, Summary, Tally


class CategoryOut(WireModel):
    count: int
    amount: str


class InvoiceSummaryOut(WireModel):
    issued: CategoryOut
    outstanding: CategoryOut
    paid: CategoryOut
    written_off: CategoryOut


class PaymentSummaryOut(WireModel):
    completed_count: int
    completed_amount: str
    pending_count: int
    pending_amount: str
    expired_count: int
    expired_amount: str


class InstantUsageOut(WireModel):
    """Usage charged at once (instant payment terms) in the window, and refunds of such charges made in it."""

    count: int
    amount: str
    refund_count: int
    refund_amount: str


class GroupTrendOut(WireModel):
    group_key: str
    group_label: str
    issued_invoices: str
    revenue: str


class TrendBucketOut(WireModel):
    timestamp: Timestamp
    issued_invoices: str
    written_off_invoices: str
    completed_payments: str
    revenue: str
    rebates: str
    instant_usage: str
    refunds: str
    group_breakdown: list[GroupTrendOut] | None = None


class GroupSummaryOut(WireModel):
    group_key: str
    group_label: str
    issued: CategoryOut
    outstanding: CategoryOut
    paid: CategoryOut
    written_off: CategoryOut
    revenue: str


class RevenueSummaryOut(WireModel):
    object: Literal["revenue_summary"] = "revenue_summary"
    currency: str
    net_revenue: str
    invoices: InvoiceSummaryOut
    payments: PaymentSummaryOut
    wallet_funding: CategoryOut
    instant_usage: InstantUsageOut
    total_refunds: str
    refund_count: int
    total_rebates: str
    rebate_count: int
    trend: list[TrendBucketOut]
    group_breakdown: list[GroupSummaryOut] | None = None

    @classmethod
    def of(cls, summary: Summary, currency: str, labels: dict[str, str]) -> RevenueSummaryOut:
        def money(amount: Decimal) -> str:
            return format_money(amount, currency)

        def category(tally: Tally) -> CategoryOut:
            return CategoryOut(count=tally.count, amount=money(tally.amount))

        def label(key: str) -> str:
            return OTHER_LABEL if key == OTHER else labels.get(key, key)

        def bucket(at: datetime, figures: Figures, groups: dict[str, Figures]) -> TrendBucketOut:
            return TrendBucketOut(
                timestamp=at,
                issued_invoices=money(figures.issued.amount),
                written_off_invoices=money(figures.written_off_at.amount),
                completed_payments=money(figures.payments_completed.amount),
                revenue=money(figures.revenue),
                rebates=money(Decimal(0)),
                instant_usage=money(figures.instant_usage.amount),
                refunds=money(figures.refunds.amount),
                group_breakdown=None
                if summary.groups is None
                else [
                    GroupTrendOut(
                        group_key=key,
                        group_label=label(key),
                        issued_invoices=money(g.issued.amount),
                        revenue=money(g.revenue),
                    )
                    for key, g in groups.items()
                ],
            )

        t = summary.total
        return cls(
            currency=currency,
            net_revenue=money(t.revenue),
            invoices=InvoiceSummaryOut(
                issued=category(t.issued),
                outstanding=category(t.outstanding),
                paid=category(t.paid),
                written_off=category(t.written_off),
            ),
            payments=PaymentSummaryOut(
                completed_count=t.payments_completed.count,
                completed_amount=money(t.payments_completed.amount),
                pending_count=t.payments_pending.count,
                pending_amount=money(t.payments_pending.amount),
                expired_count=t.payments_expired.count,
                expired_amount=money(t.payments_expired.amount),
            ),
            wallet_funding=category(t.wallet_funding),
            instant_usage=InstantUsageOut(
                count=t.instant_usage.count,
                amount=money(t.instant_usage.amount),
                refund_count=t.refunds.count,
                refund_amount=money(t.refunds.amount),
            ),
            total_refunds=money(t.refunds.amount),
            refund_count=t.refunds.count,
            total_rebates=money(Decimal(0)),
            rebate_count=0,
            trend=[bucket(at, f, g) for at, f, g in summary.buckets],
            group_breakdown=None
            if summary.groups is None
            else [
                GroupSummaryOut(
                    group_key=key,
                    group_label=label(key),
                    issued=category(g.issued),
                    outstanding=category(g.outstanding),
                    paid=category(g.paid),
                    written_off=category(g.written_off),
                    revenue=money(g.revenue),
                )
                for key, g in summary.groups
            ],
        )
