"""domain/revenue.py: UTC bucket edges of a half-open window, and how rows add up (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain.revenue import CountRow, InvoiceRow, bucket_count, bucket_start, bucket_starts, summarize

T = datetime(2026, 3, 4, 10, 30, 15, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("width", "start"),
    [
        ("hour", datetime(2026, 3, 4, 10, tzinfo=UTC)),
        ("day", datetime(2026, 3, 4, tzinfo=UTC)),
        ("week", datetime(2026, 3, 2, tzinfo=UTC)),
    ],
)
def test_bucket_start(width: str, start: datetime) -> None:
    assert bucket_start(T, width) == start
    assert bucket_start(start, width) == start  # an edge belongs to the bucket it starts


@pytest.mark.parametrize(
    ("start", "end", "width", "count"),
    [
        (T, T + timedelta(microseconds=1), "hour", 1),
        (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC), "day", 7),  # end excluded
        (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 8, 0, 0, 1, tzinfo=UTC), "day", 8),
        (T, T + timedelta(days=7), "week", 2),
        (T, T, "day", 0),
        (T, T - timedelta(hours=1), "hour", 0),
    ],
)
def test_bucket_count(start: datetime, end: datetime, width: str, count: int) -> None:
    assert bucket_count(start, end, width) == count == len(bucket_starts(start, end, width))


def test_unknown_width() -> None:
    with pytest.raises(ValueError, match="unknown bucket width"):
        bucket_start(T, "minute")


def test_revenue_leaves_top_ups_out_and_nets_refunds() -> None:
    day = datetime(2026, 3, 4, tzinfo=UTC)
    summary = summarize(
        [day],
        [
            InvoiceRow(day, "plan_a", "PAID", 2, Decimal("70.00"), Decimal("50.00"), 1),
            InvoiceRow(day, "plan_a", "ISSUED", 1, Decimal("5.00"), Decimal(0)),
        ],
        [],
        [CountRow(day, "plan_a", 3, Decimal("0.003"))],
        [CountRow(day, "plan_a", 1, Decimal("0.001"))],
        [
            CountRow(day, None, 1, Decimal("9.00"), "completed"),
            CountRow(day, None, 1, Decimal("4"), "pending"),
        ],
        group_by_plan=False,
    )
    total = summary.total
    assert total.revenue == Decimal("70.00") - 50 + Decimal("0.003") - Decimal("0.001") + 9
    assert (total.wallet_funding.count, total.issued.count, total.outstanding.amount) == (1, 3, 5)
    assert (total.payments_pending.count, total.payments_completed.amount) == (1, 9)
    assert summary.buckets[0][1].revenue == total.revenue and summary.groups is None


def test_group_by_plan_merges_beyond_the_top_four() -> None:
    day = datetime(2026, 3, 4, tzinfo=UTC)
    invoices = [InvoiceRow(day, f"plan_{n}", "PAID", 1, Decimal(10 * n), Decimal(0)) for n in range(1, 7)]
    summary = summarize([day], invoices, [], [], [], [], group_by_plan=True)
    assert summary.groups is not None
    assert [(k, g.paid.amount) for k, g in summary.groups] == [
        ("plan_6", 60), ("plan_5", 50), ("plan_4", 40), ("plan_3", 30), ("other", 30),
    ]  # fmt: skip
    assert list(summary.buckets[0][2]) == ["plan_6", "plan_5", "plan_4", "plan_3", "other"]
    assert summary.buckets[0][2]["other"].issued.amount == 30
    five = summarize([day], invoices[1:], [], [], [], [], group_by_plan=True)
    assert five.groups is not None and [k for k, _ in five.groups][-1] == "plan_2"
