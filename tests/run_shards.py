"""`make test`'s runner: one pytest per shard (tests/shard.py), side by side, then one verdict.

    python -m tests.run_shards N [pytest arguments...]

Shard 1 prints as it goes; the others write to files under the build's temporary directory, printed whole
when all have finished, so a failure reads as in a single run. Each shard has its own session fixtures (its
embedded PostgreSQL, its Temporal servers, its API) and its own folder under --basetemp (by default a
temporary one, removed at the end).
N = 1 is a plain pytest run. The exit status is the first failing shard's; a shard left with no tests (a
narrow selection) is not a failure as long as another ran some."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NO_TESTS = 5  # pytest's exit status when nothing was collected or everything was deselected


def with_basetemp(args: list[str], shard: int) -> list[str]:
    """Give each shard a folder of its own under --basetemp (pytest empties a basetemp it is given)."""
    out: list[str] = []
    pending = False
    for arg in args:
        if pending:
            out.append(own_folder(arg, shard))
            pending = False
        elif arg == "--basetemp":
            out.append(arg)
            pending = True
        elif arg.startswith("--basetemp="):
            out.append(f"--basetemp={own_folder(arg.split('=', 1)[1], shard)}")
        else:
            out.append(arg)
    return out


def own_folder(basetemp: str, shard: int) -> str:
    Path(basetemp).mkdir(parents=True, exist_ok=True)  # pytest makes the basetemp, not its parents
    return str(Path(basetemp) / f"shard-{shard}")


def verdict(codes: list[int]) -> int:
    failed = [code for code in codes if code not in (0, NO_TESTS)]
    if failed:
        return failed[0]
    return 0 if 0 in codes else NO_TESTS


def main(argv: list[str]) -> int:
    total, args = int(argv[0]), argv[1:]
    pytest = str(Path(sys.executable).parent / "pytest")
    if total <= 1:
        return subprocess.call([pytest, *args])
    root = Path(__file__).resolve().parents[1]
    env_path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    logs = Path(tempfile.mkdtemp(prefix="accrue-shards-"))
    if not any(arg == "--basetemp" or arg.startswith("--basetemp=") for arg in args):
        # Without it the shards share pytest's numbered /tmp/pytest-of-<user> folders, where one prunes or
        # reuses what another is running on (an embedded PostgreSQL's data directory among them).
        args = [*args, f"--basetemp={logs / 'tmp'}"]
    started = time.monotonic()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for shard in range(1, total + 1):
            env = os.environ | {"ACCRUE_TEST_SHARD": f"{shard}/{total}", "PYTHONPATH": env_path}
            command = [pytest, "-p", "tests.shard", *with_basetemp(args, shard)]
            out = None if shard == 1 else (logs / f"shard-{shard}.log").open("wb")
            processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            process.wait()
        raise
    for shard in range(2, total + 1):
        print(f"\n{'=' * 30} shard {shard}/{total} {'=' * 30}", flush=True)
        sys.stdout.buffer.write((logs / f"shard-{shard}.log").read_bytes())
    shutil.rmtree(logs, ignore_errors=True)
    print(f"\nshards {codes} (pytest exit status of each) in {time.monotonic() - started:.1f} s", flush=True)
    return verdict(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
