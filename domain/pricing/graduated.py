"""graduated (extension): each unit is priced by the band it falls in, `tiers: [{upTo, unitPrice,
flatPrice?}]`; a band's flatPrice is added once when any unit falls in it.

A ladder '100' at '5' then null at '3' bills 101 units 100 × 5 + 1 × 3 = 503. A quantity at or below zero
(a period of net credits) falls in the first band, at its unit price and without its flat price.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from domain.money import EXACT, average_unit_price
from domain.pricing import bands, base


class Graduated(base.PriceModel):
    name = "graduated"

    def check(self, props: Mapping[str, Any], out: base.Problems, path: str = "properties") -> dict[str, Any]:
        return {"tiers": bands.check_bands(props, path, self.name, out, flat=True)}

    def view(self, props: Mapping[str, Any]) -> dict[str, Any]:
        # SDK 0.1.34 parses only its four property shapes; `unitPrice` makes this one of them.
        return dict(props) | {"unitPrice": bands.first_unit_price(props)}

    def price_period(self, props: Mapping[str, Any], usage: base.PeriodUsage) -> base.Charge:
        quantity = usage.quantity
        ladder = bands.parse_bands(props)
        if quantity <= 0:
            first = ladder[0].unit_price
            return base.Charge(quantity, first, EXACT.multiply(quantity, first))
        amount = Decimal(0)
        floor = Decimal(0)
        for band in ladder:
            top = quantity if band.up_to is None else min(quantity, band.up_to)
            units = EXACT.subtract(top, floor)
            if units <= 0:
                break
            amount = EXACT.add(amount, EXACT.multiply(units, band.unit_price))
            if band.flat_price is not None:
                amount = EXACT.add(amount, band.flat_price)
            if band.up_to is None:
                break
            floor = band.up_to
        return base.Charge(quantity, average_unit_price(amount, quantity), amount)


MODEL = Graduated()
