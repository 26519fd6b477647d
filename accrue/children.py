"""Child processes of `accrue dev`: started with their output in a log file, stopped gently then firmly."""

from __future__ import annotations

import asyncio
import ctypes
import os
import shlex
import signal
import sys
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Resolved before any fork: looking a symbol up in the child could deadlock on a lock another thread held.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if `accrue dev` is killed outright (SIGKILL), the kernel sends
    # SIGTERM to its children so no API, worker or Temporal server is left behind.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One supervised process. Its own process group keeps a terminal Ctrl-C away from it, so shutdown
    happens in the supervisor's order rather than everyone at once."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path, log_offset: int) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.log_offset = log_offset

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str]) -> Child:
        # Owner-only: the API's log records request paths and errors of customer data.
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # a log created by an older version was world-readable
        with os.fdopen(fd, "ab") as out:
            offset = out.tell()
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"==== {stamp} {shlex.join(argv)}\n".encode())
            out.flush()
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return cls(name, process, log, offset)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        if self.running:
            with suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                with suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        return self.process.returncode if self.process.returncode is not None else -1

    def tail(self, lines: int = 20) -> str:
        """The end of what this run of the child logged, to show why it died."""
        try:
            with self.log.open("rb") as log:
                log.seek(self.log_offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
