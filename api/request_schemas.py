"""Request-body schemas for routes documented through `openapi_extra` (the lean ingestion routes): pydantic
points nested models at a local `$defs`, which is no valid reference inside an OpenAPI document (ReDoc
refuses the whole page), so the definitions are inlined where they are used."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_LOCAL = "#/$defs/"


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema (wire names) with every `#/$defs/…` reference replaced by its definition."""
    schema = model.model_json_schema(by_alias=True)
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_LOCAL):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return resolve(defs[ref.removeprefix(_LOCAL)]) | {k: resolve(v) for k, v in rest.items()}
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
