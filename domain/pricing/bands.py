"""Bands of a tier ladder, shared by volume's band form and graduated: `tiers: [{upTo, unitPrice}]`.

Each band covers the quantities above the previous band's `upTo` up to and including its own; `upTo` is
strictly ascending and greater than 0, and null on the last band only, so every quantity has a band.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.money import format_amount
from domain.pricing.base import PricePropertiesError, Problems, check_amount, decimal_prop, json_type

MAX_BANDS = 100
FLAT_PRICE = "flatPrice"


@dataclass(frozen=True, slots=True)
class Band:
    up_to: Decimal | None  # inclusive; None: no upper bound (the last band)
    unit_price: Decimal
    flat_price: Decimal | None = None

    def holds(self, quantity: Decimal) -> bool:
        return self.up_to is None or quantity <= self.up_to


def _ladder_hint(flat: bool) -> str:
    extra = ', "flatPrice"?' if flat else ""
    return f'a list of bands [{{"upTo", "unitPrice"{extra}}}], ascending by upTo, the last with upTo null'


def check_bands(
    props: Mapping[str, Any], path: str, model: str, out: Problems, *, flat: bool
) -> list[dict[str, Any]]:
    """The ladder to store, as the caller's strings; `flat` allows a band's optional flatPrice."""
    field = f"{path}.tiers"
    tiers = props.get("tiers")
    if tiers is None:
        out.add(field, f"is required for the {model} model: {_ladder_hint(flat)}", "missing")
        return []
    if not isinstance(tiers, list) or not tiers:
        out.add(field, f"must be {_ladder_hint(flat)}", "list_type")
        return []
    if len(tiers) > MAX_BANDS:
        out.add(field, f"has {len(tiers)} bands; a price has at most {MAX_BANDS}")
        return []
    stored: list[dict[str, Any]] = []
    previous: Decimal | None = Decimal(0)
    for i, tier in enumerate(tiers):
        at = f"{field}[{i}]"
        if not isinstance(tier, dict):
            out.add(
                at, f'must be an object {{"upTo", "unitPrice"}}, not a JSON {json_type(tier)}', "dict_type"
            )
            previous = None
            continue
        last = i == len(tiers) - 1
        previous = _check_up_to(tier, at, model, last, previous, out)
        check_amount(tier, "unitPrice", at, model, out)
        band = {"upTo": tier.get("upTo"), "unitPrice": tier.get("unitPrice")}
        if FLAT_PRICE in tier:
            if flat:
                check_amount(tier, FLAT_PRICE, at, model, out)
                band[FLAT_PRICE] = tier[FLAT_PRICE]
            else:
                out.add(f"{at}.{FLAT_PRICE}", f"is not part of the {model} model; graduated bands have it")
        stored.append(band)
    return stored


def _check_up_to(
    tier: Mapping[str, Any], at: str, model: str, last: bool, previous: Decimal | None, out: Problems
) -> Decimal | None:
    """Checks one band's upTo against its place in the ladder; returns it (None when unusable)."""
    field = f"{at}.upTo"
    if "upTo" not in tier:
        out.add(field, "is required: a decimal string, or null on the last band", "missing")
        return None
    value = tier["upTo"]
    if value is None:
        if not last:
            out.add(field, "may be null only on the last band; give this band's upper bound")
        return None
    if last:
        out.add(field, "must be null on the last band, so that every quantity has a band")
        return None
    up_to = check_amount(tier, "upTo", at, model, out)
    if up_to is None:
        return None
    if up_to <= 0:
        out.add(field, "must be greater than 0")
        return None
    if previous is not None and up_to <= previous:
        out.add(field, f"must be greater than the previous band's upTo ({format_amount(previous)})")
    return up_to


def parse_bands(props: Mapping[str, Any]) -> list[Band]:
    """The stored ladder; PricePropertiesError when it cannot be priced."""
    tiers = props.get("tiers")
    if not isinstance(tiers, Sequence) or isinstance(tiers, str) or not tiers:
        raise PricePropertiesError("price property 'tiers' must be a non-empty list of bands")
    bands = []
    for i, tier in enumerate(tiers):
        if not isinstance(tier, Mapping):
            raise PricePropertiesError(f"price property 'tiers[{i}]' must be an object")
        up_to = None if tier.get("upTo") is None else decimal_prop(tier, "upTo", f"tiers[{i}].upTo")
        flat = (
            None if tier.get(FLAT_PRICE) is None else decimal_prop(tier, FLAT_PRICE, f"tiers[{i}].flatPrice")
        )
        bands.append(Band(up_to, decimal_prop(tier, "unitPrice", f"tiers[{i}].unitPrice"), flat))
    if bands[-1].up_to is not None:
        raise PricePropertiesError("the last band of price property 'tiers' must have upTo null")
    return bands


def band_for(bands: Sequence[Band], quantity: Decimal) -> Band:
    """The band a period quantity falls in (the first whose upTo holds it)."""
    return next(band for band in bands if band.holds(quantity))


def first_unit_price(props: Mapping[str, Any]) -> str | None:
    """The first band's unitPrice as stored: a ladder's compatibility `unitPrice` (docs/api-extensions.md)."""
    tiers = props.get("tiers")
    if isinstance(tiers, list) and tiers and isinstance(tiers[0], Mapping):
        price = tiers[0].get("unitPrice")
        return price if isinstance(price, str) else None
    return None
