"""The price models by name. A model is a module of this package defining `MODEL`; adding one is adding
that module (its tests aside): the API, the invoices and the portal find it here."""

from __future__ import annotations

import importlib
import pkgutil
from types import MappingProxyType

import domain.pricing as _package
from domain.pricing.base import PriceModel, PricePropertiesError

_SHARED = {"base", "bands", "registry"}


def _discover() -> dict[str, PriceModel]:
    found: dict[str, PriceModel] = {}
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _SHARED:
            continue
        model = getattr(importlib.import_module(f"{_package.__name__}.{info.name}"), "MODEL", None)
        if isinstance(model, PriceModel):
            found[model.name] = model
    return found


MODELS = MappingProxyType(_discover())
NAMES = tuple(MODELS)
# Fee prices have exactly one model, so a fee price may leave `model` out.
(FEE_MODEL,) = (m.name for m in MODELS.values() if m.fee_capable)


def model_for(name: str) -> PriceModel:
    """The model called `name`; PricePropertiesError for a name no model has."""
    model = MODELS.get(name)
    if model is None:
        raise PricePropertiesError(f"unknown price model {name!r}; expected one of {', '.join(NAMES)}")
    return model


def names_text(names: tuple[str, ...] = NAMES) -> str:
    """'a, b or c', for messages."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
