"""What every price model shares: the Charge it produces, its errors, and the pricing ⇄ aggregation seam
(RecordRule, PeriodUsage) that db/ compiles to SQL."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class RecordRule:
    """How a per-record price model prices one meter event; db/ compiles it to SQL, domain/ applies it in
    Python for single records. amount(record) = clamp(value × price, amount_min, amount_max), where
    price = factor when price_path is None, else the number at price_path held to [price_min, price_max]
    (missing or not a number → price_min). A None bound is no bound."""

    factor: Decimal | None = None
    price_path: str | None = None
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    """What the aggregation engine reports for one metered price over one period."""

    quantity: Decimal  # the billable metric's aggregation (SUM, COUNT, AVG, …) over the period
    record_values: Decimal = Decimal(0)  # Σ record values (read only when the model has a RecordRule)
    record_amount: Decimal = Decimal(0)  # Σ amount(record) under the model's RecordRule
    record_price: Decimal | None = None  # the one price every record shares; None when they differ or none
