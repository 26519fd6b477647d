"""design.md: `workflows/` holds deterministic workflow code and imports no module that does I/O; client-side
helpers (starts, update-with-start, schedules, search-attribute registration) live in workflows/client.py
only, and workflows call activities by reference, never by name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
IO_PACKAGES = {"sqlalchemy", "asyncpg", "httpx", "fastapi", "starlette", "stripe", "db", "activities", "api"}


def test_workflow_modules_import_nothing_that_does_io() -> None:
    modules = [
        f"workflows.{p.stem}" for p in sorted(WORKFLOWS.glob("*.py")) if p.stem not in ("__init__", "client")
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(IO_PACKAGES)!r}))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=WORKFLOWS.parent
    )
    assert result.stdout.strip() == "", f"importing {modules} loaded {result.stdout.strip()}"


def test_activities_are_called_by_reference() -> None:
    """`workflow.execute_activity("name", …)` with a string is how typos reach production."""
    offenders = []
    for path in sorted(WORKFLOWS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute_activity", "start_activity")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
