"""The `accrue` command: `dev`, `api`, `worker`, `migrate`, `merchant create`."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from settings import Settings

app = typer.Typer(
    help="Accrue: usage-based billing that speaks the Paygentic API.",
    no_args_is_help=True,
    add_completion=False,
)
merchant_app = typer.Typer(help="Manage merchant organizations.", no_args_is_help=True)
app.add_typer(merchant_app, name="merchant")

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir", help="Where the dev stack keeps PostgreSQL, Temporal's database, logs and keys."
    ),
]
Port = Annotated[int, typer.Option(min=1, max=65535)]


class Environment(StrEnum):
    sandbox = "sandbox"
    live = "live"


@app.command()
def dev(
    data_dir: DataDir = Path(".accrue"),
    api_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="API port [default: ACCRUE_API_PORT or 8000]")
    ] = None,
    temporal_port: Port = 7233,
    ui_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Temporal UI port [default: temporal port + 1000]")
    ] = None,
) -> None:
    """Run everything locally: PostgreSQL, Temporal (with its UI), the worker and the API."""
    from accrue.devstack import DevOptions, run_dev

    settings = Settings()
    options = DevOptions(
        data_dir=data_dir.expanduser().resolve(),
        api_port=api_port or settings.api_port,
        temporal_port=temporal_port,
        ui_port=ui_port or temporal_port + 1000,
    )
    raise typer.Exit(asyncio.run(run_dev(options, settings)))


@app.command()
def api() -> None:
    """Serve the HTTP API with uvicorn on ACCRUE_API_HOST:ACCRUE_API_PORT."""
    import uvicorn

    from api.app import create_app

    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
    )


@app.command()
def worker() -> None:
    """Run the Temporal worker until SIGINT or SIGTERM."""
    import worker as worker_module

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker_module.run(Settings(), stop)

    asyncio.run(main())


@contextmanager
def database(data_dir: Path | None) -> Iterator[str]:
    """DATABASE_URL, or the embedded database of a dev data directory, started only for as long as needed
    when its stack is down and merely borrowed when it is up."""
    if data_dir is None:
        yield Settings().database_url
        return
    from accrue import embedded_db

    pgdata = data_dir.expanduser().resolve() / "postgres"
    if not (pgdata / "PG_VERSION").exists():
        raise typer.BadParameter(
            f"{data_dir} holds no Accrue database; run `accrue dev --data-dir {data_dir}` once first",
            param_hint="--data-dir",
        )
    server, url = embedded_db.start(pgdata)
    try:
        yield url
    finally:
        server.cleanup()


@contextmanager
def reporting_database_errors(url: str) -> Iterator[None]:
    """One line naming the database instead of a driver traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (OSError, SQLAlchemyError) as exc:
        where = make_url(url).render_as_string(hide_password=True)
        typer.echo(f"accrue: database {where}: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def migrate(
    data_dir: Annotated[
        Path | None, typer.Option(help="Migrate the embedded database of this dev data directory.")
    ] = None,
) -> None:
    """Apply database migrations to DATABASE_URL (or a dev data directory's database)."""
    from db.migrate import upgrade

    with database(data_dir) as url, reporting_database_errors(url):
        upgrade(url)
    typer.echo("Database is at the latest migration.")


@merchant_app.command("create")
def merchant_create(
    name: Annotated[str, typer.Option(help="The merchant organization's name.")],
    environment: Annotated[
        Environment, typer.Option(help="Environment of the API key.")
    ] = Environment.sandbox,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"merchantId", "apiKey"} as JSON.')] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Use the embedded database of this dev data directory instead of DATABASE_URL."),
    ] = None,
) -> None:
    """Create a merchant organization with an owner and one API key; the key is shown only now."""
    if not name.strip():
        raise typer.BadParameter("must not be empty", param_hint="--name")
    with database(data_dir) as url, reporting_database_errors(url):
        merchant = asyncio.run(_create_merchant(url, name.strip(), environment.value))
    if as_json:
        typer.echo(json.dumps({"merchantId": merchant[0], "apiKey": merchant[1]}))
    else:
        typer.echo(
            f"Created merchant {merchant[0]} ({name.strip()}); {environment.value} API key: {merchant[1]}"
        )


async def _create_merchant(url: str, name: str, environment: str) -> tuple[str, str]:
    from db.merchants import create_merchant
    from db.session import create_engine, session_factory

    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            created = await create_merchant(session, name, environment)
    finally:
        await engine.dispose()
    return created.merchant_id, created.api_key


if __name__ == "__main__":
    app()
