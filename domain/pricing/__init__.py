"""Price models (behaviour §3.4, D5–D7)."""

from domain.pricing._legacy import *  # noqa: F403
from domain.pricing._legacy import _prop  # noqa: F401
from domain.pricing.base import PeriodUsage, RecordRule

__all__ = ["PeriodUsage", "RecordRule"]
