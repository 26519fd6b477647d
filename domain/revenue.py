"""Revenue summary (GET /v0/revenue, behavior §12.3): time buckets and the exact figures of a window.

Pure: db/revenue.py reads aggregated rows (per bucket, plan and status) and this module adds them up into
the summary, its trend and the per-plan breakdown. Amounts stay exact Decimals; the representation rounds
each figure once (domain.money.format_money).

What counts (docs/decisions.md, "Revenue"):
- invoices issued in the window (by `issuedAt`, every billing version), in four categories by their status
  now: issued (all), outstanding (ISSUED, PAYMENT_FAILED), paid (PAID), written off (WRITTEN_OFF); the
  trend's `writtenOffInvoices` goes by when the invoice was written off instead;
- instant usage charges (the part of a usage event debited from a wallet or reservation at once) by the
  event's `timestamp`, and their refunds by `refundedAt`; in-arrears usage is on the period invoices;
- completed one-off payments (POST /v0/payments) by `completedAt`; pending ones by `createdAt`, expired
  ones by when they expired (db/revenue.payment_rows).
Revenue = paid invoices − the wallet top-ups they carried (prepaid money, revenue only once usage spends
it) + instant usage − its refunds + completed payments. The trend's buckets sum to it exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

BUCKET_WIDTHS = ("hour", "day", "week")
MAX_BUCKETS = 2000
TOP_GROUPS = 4  # groupBy=plan: the top 4 plans by issued amount, the rest as "other" (at most 5 groups)
OTHER = "other"
OTHER_LABEL = "Other"

OUTSTANDING = frozenset({"ISSUED", "PAYMENT_FAILED"})
PAID = "PAID"
WRITTEN_OFF = "WRITTEN_OFF"

_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}


def bucket_start(at: datetime, width: str) -> datetime:
    """The start of the UTC bucket holding `at`: the hour, midnight, or Monday 00:00 (ISO weeks)."""
    at = at.astimezone(UTC)
    if width == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if width == "day":
        return day
    if width == "week":
        return day - timedelta(days=day.weekday())
    raise ValueError(f"unknown bucket width {width!r}; expected one of {', '.join(BUCKET_WIDTHS)}")


def bucket_starts(start: datetime, end: datetime, width: str) -> list[datetime]:
    """Every bucket that overlaps the half-open window [start, end), oldest first."""
    first, step = bucket_start(start, width), _STEP[width]
    count = bucket_count(start, end, width)
    return [first + n * step for n in range(count)]


def bucket_count(start: datetime, end: datetime, width: str) -> int:
    if end <= start:
        return 0
    first, step = bucket_start(start, width), _STEP[width]
    return (end - first + step - timedelta(microseconds=1)) // step


@dataclass
class Tally:
    """Count and exact amount."""

    count: int = 0
    amount: Decimal = Decimal(0)

    def add(self, count: int, amount: Decimal) -> None:
        self.count += count
        self.amount += amount


@dataclass
class Figures:
    """The exact figures of one scope: the whole window, one bucket, one plan, or one plan in one bucket."""

    issued: Tally = field(default_factory=Tally)
    outstanding: Tally = field(default_factory=Tally)
    paid: Tally = field(default_factory=Tally)
    written_off: Tally = field(default_factory=Tally)  # issued in the window, written off since
    written_off_at: Tally = field(default_factory=Tally)  # written off in the window (the trend's figure)
    wallet_funding: Tally = field(default_factory=Tally)  # top-up lines on the paid invoices
    instant_usage: Tally = field(default_factory=Tally)
    refunds: Tally = field(default_factory=Tally)
    payments_completed: Tally = field(default_factory=Tally)
    payments_pending: Tally = field(default_factory=Tally)
    payments_expired: Tally = field(default_factory=Tally)

    @property
    def revenue(self) -> Decimal:
        return (
            self.paid.amount
            - self.wallet_funding.amount
            + self.instant_usage.amount
            - self.refunds.amount
            + self.payments_completed.amount
        )


# ---- rows db/revenue.py reads (bucket = bucket_start of the row's instant; plan_id None = no plan) -----


@dataclass(frozen=True)
class InvoiceRow:
    bucket: datetime
    plan_id: str | None
    status: str
    count: int
    amount: Decimal  # Σ grandTotal
    funding: Decimal  # Σ of their wallet top-up lines
    funded: int = 0  # how many of them carry a top-up


@dataclass(frozen=True)
class CountRow:
    """Written-off invoices (by when), instant usage (by timestamp), refunds (by refundedAt), payments."""

    bucket: datetime
    plan_id: str | None
    count: int
    amount: Decimal
    status: str | None = None  # payments: completed, pending, expired


@dataclass
class Summary:
    total: Figures
    buckets: list[tuple[datetime, Figures, dict[str, Figures]]]  # per bucket: figures, and per group
    groups: list[tuple[str, Figures]] | None  # groupBy: (group key, figures), ranked; None without groupBy


def summarize(
    buckets: Iterable[datetime],
    invoices: Iterable[InvoiceRow],
    written_off: Iterable[CountRow],
    usage: Iterable[CountRow],
    refunds: Iterable[CountRow],
    payments: Iterable[CountRow],
    *,
    group_by_plan: bool,
) -> Summary:
    """Add the rows up per bucket (and per plan); with `group_by_plan`, plans beyond the top 4 by issued
    amount (then revenue, then id) are merged into "other" when there are more than 5."""
    starts = list(buckets)
    total = Figures()
    per_bucket: dict[datetime, Figures] = {b: Figures() for b in starts}
    per_plan: dict[str, Figures] = {}
    per_cell: dict[tuple[datetime, str], Figures] = {}

    def targets(bucket: datetime, plan_id: str | None) -> list[Figures]:
        out = [total]
        if bucket in per_bucket:
            out.append(per_bucket[bucket])
        if group_by_plan:
            key = plan_id or OTHER
            out.append(per_plan.setdefault(key, Figures()))
            if bucket in per_bucket:
                out.append(per_cell.setdefault((bucket, key), Figures()))
        return out

    for row in invoices:
        for f in targets(row.bucket, row.plan_id):
            f.issued.add(row.count, row.amount)
            if row.status in OUTSTANDING:
                f.outstanding.add(row.count, row.amount)
            elif row.status == PAID:
                f.paid.add(row.count, row.amount)
                if row.funded:
                    f.wallet_funding.add(row.funded, row.funding)
            elif row.status == WRITTEN_OFF:
                f.written_off.add(row.count, row.amount)
    for kind, counted in (("written_off_at", written_off), ("instant_usage", usage), ("refunds", refunds)):
        for item in counted:
            for f in targets(item.bucket, item.plan_id):
                getattr(f, kind).add(item.count, item.amount)
    for item in payments:
        for f in targets(item.bucket, item.plan_id):
            tally = {
                "completed": f.payments_completed,
                "pending": f.payments_pending,
                "expired": f.payments_expired,
            }.get(item.status or "")
            if tally is not None:
                tally.add(item.count, item.amount)

    groups: list[tuple[str, Figures]] | None = None
    cells: dict[tuple[datetime, str], Figures] = per_cell
    if group_by_plan:
        ranked = sorted(
            (k for k in per_plan if k != OTHER),
            key=lambda k: (-per_plan[k].issued.amount, -per_plan[k].revenue, k),
        )
        has_other = OTHER in per_plan
        if len(ranked) + has_other > TOP_GROUPS + 1:
            kept, merged = ranked[:TOP_GROUPS], set(ranked[TOP_GROUPS:]) | {OTHER}
        else:
            kept, merged = ranked, {OTHER}
        groups = [(k, per_plan[k]) for k in kept]
        other = _merge(per_plan[k] for k in merged if k in per_plan)
        if any(k in per_plan for k in merged):
            groups.append((OTHER, other))
        cells = {}
        for (bucket, key), figures in per_cell.items():
            target = key if key in kept else OTHER
            cells[(bucket, target)] = _merge([cells.get((bucket, target), Figures()), figures])
    keys = [k for k, _ in groups] if groups is not None else []
    return Summary(
        total=total,
        buckets=[(b, per_bucket[b], {k: cells.get((b, k), Figures()) for k in keys}) for b in starts],
        groups=groups,
    )


def _merge(parts: Iterable[Figures]) -> Figures:
    out = Figures()
    for part in parts:
        for name in Figures.__dataclass_fields__:
            tally: Tally = getattr(part, name)
            getattr(out, name).add(tally.count, tally.amount)
    return out
