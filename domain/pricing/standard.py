"""standard: every unit costs the same, quantity × unitPrice (behaviour §3.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.money import EXACT
from domain.pricing import base


class Standard(base.PriceModel):
    name = "standard"
    fee_capable = True
    discountable = True

    def check(self, props: Mapping[str, Any], out: base.Problems, path: str = "properties") -> dict[str, Any]:
        base.check_amount(props, "unitPrice", path, self.name, out)
        return {"unitPrice": props.get("unitPrice")}

    def price_period(self, props: Mapping[str, Any], usage: base.PeriodUsage) -> base.Charge:
        unit_price = base.decimal_prop(props, "unitPrice")
        return base.Charge(usage.quantity, unit_price, EXACT.multiply(usage.quantity, unit_price))


MODEL = Standard()
