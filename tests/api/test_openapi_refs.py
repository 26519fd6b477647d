"""Every `$ref` of the served OpenAPI document resolves inside it: a pydantic-local `#/$defs/…` reference
(from a schema passed through openapi_extra) breaks ReDoc's whole page."""

from __future__ import annotations

from typing import Any

import httpx


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_points_into_the_components(api_url: str) -> None:
    document = httpx.get(f"{api_url}/openapi.json", timeout=30).json()
    schemas = document["components"]["schemas"]
    refs = _refs(document["paths"]) + _refs(schemas)
    assert refs
    broken = sorted(
        {r for r in refs if not r.startswith("#/components/schemas/") or r.split("/")[-1] not in schemas}
    )
    assert broken == []
