"""percentage: a share of each record's money value, held per record to [minCharge, maxCharge], summed (D5).

`percentage` is a fraction: 0.029 charges 2.9 %. Every record is charged at least minCharge, as a card
processor charges its fixed minimum on each transaction. The line's quantity is the summed value and its
unit price the percentage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from domain.pricing import base

_PERCENTAGE = re.compile(r"^([0-9](\.[0-9]{1,4})?|10(\.0{1,4})?)$")


class Percentage(base.RecordPricedModel):
    name = "percentage"
    prices_money = True

    def check(self, props: Mapping[str, Any], out: base.Problems, path: str = "properties") -> dict[str, Any]:
        share = props.get("percentage")
        if share is None:
            out.add(f"{path}.percentage", "is required for the percentage model", "missing")
        elif not isinstance(share, str) or not _PERCENTAGE.match(share):
            out.add(
                f"{path}.percentage",
                "must be a decimal string between 0 and 10 with at most 4 decimal places, "
                'such as "0.05" for 5%',
            )
        low = base.check_amount(props, "minCharge", path, self.name, out)
        high = base.check_amount(props, "maxCharge", path, self.name, out)
        base.check_ordered(low, high, f"{path}.minCharge", "maxCharge", out)
        return {"percentage": share, "minCharge": props.get("minCharge"), "maxCharge": props.get("maxCharge")}

    def record_rule(self, props: Mapping[str, Any]) -> base.RecordRule:
        return base.RecordRule(
            factor=base.decimal_prop(props, "percentage"),
            amount_min=base.decimal_prop(props, "minCharge"),
            amount_max=base.decimal_prop(props, "maxCharge"),
        )

    def rate(self, props: Mapping[str, Any], charge: base.Charge) -> base.Rate:
        return base.Rate(base.decimal_prop(props, "percentage"), share=True)

    def shown_price(self, props: Mapping[str, Any], usage: base.PeriodUsage) -> Decimal:
        return base.decimal_prop(props, "percentage")


MODEL = Percentage()
