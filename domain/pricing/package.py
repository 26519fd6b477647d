"""package (extension): units sold in blocks, `{packageSize, packagePrice, rounding}`.

`rounding` "up" (the default) bills a started package whole; "down" bills complete packages only. The
line's quantity is the number of packages and its unit price the packagePrice, so it reads
"3 × 5.00" for 2,500 units in packages of 1,000. Rounding is away from zero ("up") or toward it ("down"),
so a period of net credits mirrors the same number of units consumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.money import EXACT, average_unit_price
from domain.pricing import base

ROUNDING = ("up", "down")
DEFAULT_ROUNDING = "up"


class Package(base.PriceModel):
    name = "package"

    def check(self, props: Mapping[str, Any], out: base.Problems, path: str = "properties") -> dict[str, Any]:
        size = base.check_amount(props, "packageSize", path, self.name, out)
        if size is not None and size == 0:
            out.add(f"{path}.packageSize", "must be greater than 0: the number of units in one package")
        base.check_amount(props, "packagePrice", path, self.name, out)
        rounding = props.get("rounding", DEFAULT_ROUNDING)
        if rounding not in ROUNDING:
            out.add(
                f"{path}.rounding",
                'must be "up" (a started package is billed whole; the default) or "down" '
                "(only complete packages are billed)",
            )
        return {
            "packageSize": props.get("packageSize"),
            "packagePrice": props.get("packagePrice"),
            "rounding": rounding,
        }

    def view(self, props: Mapping[str, Any]) -> dict[str, Any]:
        # SDK 0.1.34 parses only its four property shapes; `unitPrice` (a full package's price per unit,
        # to nanodollar precision) makes this one of them.
        try:
            per_unit = average_unit_price(
                base.decimal_prop(props, "packagePrice"), base.decimal_prop(props, "packageSize")
            )
        except base.PricePropertiesError:
            return dict(props)
        return dict(props) | {"unitPrice": format(per_unit, "f")}

    def rate(self, props: Mapping[str, Any], charge: base.Charge) -> base.Rate:
        return base.Rate(
            base.decimal_prop(props, "packagePrice"), per=base.decimal_prop(props, "packageSize")
        )

    def price_period(self, props: Mapping[str, Any], usage: base.PeriodUsage) -> base.Charge:
        size = base.decimal_prop(props, "packageSize")
        price = base.decimal_prop(props, "packagePrice")
        rounding = props.get("rounding", DEFAULT_ROUNDING)
        if size <= 0:
            raise base.PricePropertiesError("price property 'packageSize' must be greater than 0")
        if rounding not in ROUNDING:
            raise base.PricePropertiesError(
                f"price property 'rounding' must be 'up' or 'down', got {rounding!r}"
            )
        whole, rest = EXACT.divmod(usage.quantity, size)  # exact: truncated toward zero, and what is left
        whole = EXACT.plus(whole)  # -0 (from a small credit) is 0 packages
        if rest != 0 and rounding == "up":
            whole = EXACT.add(whole, 1 if rest > 0 else -1)
        return base.Charge(whole, price, EXACT.multiply(whole, price))


MODEL = Package()
