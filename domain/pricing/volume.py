"""volume: one unit price for the whole period, chosen by the period's quantity, applied to every unit (D6).

Two forms of properties:
- linear (SDK 0.1.34): `{default, parameters: {function: "linear", gradient, min, max}}`: the unit price
  is default + gradient × quantity held to [min, max]; a negative gradient makes volume cheaper per unit.
- bands (SDK 0.6.3): `{tiers: [{upTo, unitPrice}]}`: the band holding the quantity prices every unit, so
  '100' at '5' then null at '3' bills 100 units 500 and 101 units 303.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.money import EXACT
from domain.pricing import bands, base

_LINEAR_KEYS = ("default", "parameters")


def _is_linear(props: Mapping[str, Any]) -> bool:
    # SDK 0.6.3 reads a linear price back with `tiers: []` (see `view`); sent again, it is still linear.
    return any(k in props for k in _LINEAR_KEYS) and props.get("tiers") in (None, [])


class Volume(base.PriceModel):
    name = "volume"

    def check(self, props: Mapping[str, Any], out: base.Problems, path: str = "properties") -> dict[str, Any]:
        if _is_linear(props):
            return self._check_linear(props, out, path)
        if any(k in props for k in _LINEAR_KEYS):
            out.add(
                f"{path}.tiers",
                "give either tiers (bands) or default and parameters (a linear function), not both",
            )
            return {}
        return {"tiers": bands.check_bands(props, path, self.name, out, flat=False)}

    def _check_linear(self, props: Mapping[str, Any], out: base.Problems, path: str) -> dict[str, Any]:
        base.check_amount(props, "default", path, self.name, out)
        params = props.get("parameters")
        if not isinstance(params, dict):
            out.add(
                f"{path}.parameters",
                "is required for the volume model: an object "
                '{"function": "linear", "gradient", "min", "max"}',
                "missing" if params is None else "dict_type",
            )
            return {}
        q = f"{path}.parameters"
        if params.get("function") != "linear":
            out.add(f"{q}.function", 'must be "linear", the only volume function')
        base.check_amount(params, "gradient", q, self.name, out, signed=True)
        low = base.check_amount(params, "min", q, self.name, out)
        high = base.check_amount(params, "max", q, self.name, out)
        base.check_ordered(low, high, f"{q}.min", "max", out)
        keys = ("function", "gradient", "min", "max")
        return {"default": props.get("default"), "parameters": {k: params.get(k) for k in keys}}

    def view(self, props: Mapping[str, Any]) -> dict[str, Any]:
        shown = dict(props)
        if "tiers" in props:
            # SDK 0.1.34 parses only its four property shapes; `unitPrice` makes this one of them.
            shown["unitPrice"] = bands.first_unit_price(props)
        else:
            # SDK 0.6.3 only parses volume properties that carry `tiers`; a linear volume price has none.
            shown["tiers"] = []
        return shown

    def price_period(self, props: Mapping[str, Any], usage: base.PeriodUsage) -> base.Charge:
        quantity = usage.quantity
        if "tiers" in props:
            unit_price = bands.band_for(bands.parse_bands(props), quantity).unit_price
        else:
            params = props.get("parameters")
            if not isinstance(params, Mapping):
                raise base.PricePropertiesError(
                    "volume price properties need a 'parameters' object or 'tiers'"
                )
            function = params.get("function", "linear")
            if function != "linear":
                raise base.PricePropertiesError(
                    f"volume function {function!r} is not supported; only 'linear' is"
                )
            gradient = base.decimal_prop(params, "gradient", "parameters.gradient")
            unit_price = base.clamp(
                EXACT.add(base.decimal_prop(props, "default"), EXACT.multiply(gradient, quantity)),
                base.decimal_prop(params, "min", "parameters.min"),
                base.decimal_prop(params, "max", "parameters.max"),
            )
        return base.Charge(quantity, unit_price, EXACT.multiply(quantity, unit_price))


MODEL = Volume()
