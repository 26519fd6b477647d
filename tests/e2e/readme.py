"""The README's quick-start commands, exactly as written, retargeted at a test stack's data dir and port."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]


def quick_start_blocks() -> list[str]:
    """The shell blocks of the README's quick start that call the API."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [b for b in blocks if "127.0.0.1:8000" in b]


def run_block(block: str, data_dir: Path, api_port: int) -> str:
    script = block.replace(".accrue/", f"{data_dir}/").replace("127.0.0.1:8000", f"127.0.0.1:{api_port}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"README block failed:\n{script}\n{done.stdout}\n{done.stderr}"
    return done.stdout
