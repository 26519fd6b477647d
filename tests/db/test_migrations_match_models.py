"""The migrated schema is the one db/models.py declares: alembic's autogenerate, run against the session's
database (migrated to head), finds nothing to add, drop or alter. A model change without its migration (or
a migration that drifts from the model) fails here, not in production."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

import db.models  # noqa: F401  (registers every table on the metadata)
from db.base import Base


def differences(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_the_migrations_create_exactly_the_models_tables(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        diff = await connection.run_sync(differences)
    assert diff == []
