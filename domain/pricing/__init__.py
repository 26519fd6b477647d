"""Price models (behaviour §3.4, D5–D7, docs/api-extensions.md): one module per model behind a registry.

Each model checks its properties (the API's 400 messages), prices one record and prices a period. db/
aggregates a period's events in SQL (under the model's RecordRule when it prices per record) and hands
the PeriodUsage to `model_for(name).price_period`.
"""

from domain.pricing.base import (
    Charge,
    PeriodUsage,
    PriceModel,
    PriceOutOfBounds,
    PricePropertiesError,
    Problems,
    Rate,
    RecordRule,
)
from domain.pricing.registry import FEE_MODEL, MODELS, NAMES, model_for, names_text

__all__ = [
    "FEE_MODEL",
    "MODELS",
    "NAMES",
    "Charge",
    "PeriodUsage",
    "PriceModel",
    "PriceOutOfBounds",
    "PricePropertiesError",
    "Problems",
    "Rate",
    "RecordRule",
    "model_for",
    "names_text",
]
