"""Engine and session factory; built by the composition roots (worker, API app, CLI), never at import."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def create_engine(database_url: str, pool_size: int = 10, *, pre_ping: bool = True) -> AsyncEngine:
    """pre_ping costs three round trips per checkout; it spares an API request a dead pooled connection.
    The worker turns it off: Temporal retries an activity that met one, and the pool replaces it.
    Bound values stay out of error messages: they hold customers' names, emails and addresses, and the
    messages end up in logs and tracebacks."""
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        hide_parameters=True,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
