"""Import rules of api/ that design.md sets: resource representations load without FastAPI (activities
render webhook data and outbox payloads with them), and no router imports another router."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "api"


def test_resource_representations_import_without_fastapi() -> None:
    modules = ["api.wire", "api.problems"] + [
        f"api.schemas.{p.stem}" for p in sorted((API / "schemas").glob("*.py")) if p.stem != "__init__"
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette'})\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=API.parent
    )
    assert result.stdout.strip() == "", f"importing {modules} loaded {result.stdout.strip()}"


def test_no_router_imports_another_router() -> None:
    offenders = []
    for path in sorted((API / "routers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("api.routers"):
                offenders.append(f"{path.name}: from {node.module} import …")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.name}: import {a.name}" for a in node.names if a.name.startswith("api.routers")
                ]
    assert offenders == []
