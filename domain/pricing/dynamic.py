"""dynamic: each record reports its own unit price at `$.price`, held to [minPrice, maxPrice] (D7).

A period is Σ value × price over its records. A single record priced on its own (a legacy usage event)
must report a price inside the bounds: PriceOutOfBounds otherwise, never a silent clamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from domain.money import average_unit_price, format_amount
from domain.pricing import base

PRICE_PATH = "$.price"  # where a meter event carries its own unit price


class Dynamic(base.RecordPricedModel):
    name = "dynamic"

    def check(self, props: Mapping[str, Any], out: base.Problems, path: str = "properties") -> dict[str, Any]:
        low = base.check_amount(props, "minPrice", path, self.name, out)
        high = base.check_amount(props, "maxPrice", path, self.name, out)
        base.check_ordered(low, high, f"{path}.minPrice", "maxPrice", out)
        return {"minPrice": props.get("minPrice"), "maxPrice": props.get("maxPrice")}

    def record_rule(self, props: Mapping[str, Any]) -> base.RecordRule:
        return base.RecordRule(
            price_path=PRICE_PATH,
            price_min=base.decimal_prop(props, "minPrice"),
            price_max=base.decimal_prop(props, "maxPrice"),
        )

    def shown_price(self, props: Mapping[str, Any], usage: base.PeriodUsage) -> Decimal:
        """The one price every record shares, else the quantity-weighted mean to nanodollar precision."""
        if usage.record_price is not None:
            return usage.record_price
        return average_unit_price(usage.record_amount, usage.record_values)

    def price_record(
        self, props: Mapping[str, Any], quantity: Decimal, price: Decimal | None = None
    ) -> base.Charge:
        low, high = base.decimal_prop(props, "minPrice"), base.decimal_prop(props, "maxPrice")
        bounds = f"minPrice {format_amount(low)} and maxPrice {format_amount(high)}"
        if price is None:
            raise base.PriceOutOfBounds(
                f"the record reports no price; a dynamic price needs one between {bounds}"
            )
        if not low <= price <= high:
            raise base.PriceOutOfBounds(
                f"price {format_amount(price)} is outside the price's bounds: it must be between {bounds}"
            )
        return super().price_record(props, quantity, price)


MODEL = Dynamic()
