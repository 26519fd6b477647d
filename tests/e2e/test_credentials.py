"""The dev stack's merchant survives restarts, and is recreated when its database no longer knows it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from accrue import credentials
from db.models import ApiKey, Organization
from db.session import session_factory
from domain.api_keys import hash_key


async def test_created_once_then_reused(engine: AsyncEngine, tmp_path: Path) -> None:
    first, created = await credentials.ensure(engine, tmp_path)
    assert created and first.merchant_id.startswith("org_") and first.api_key.startswith("sk_test_")
    path = tmp_path / credentials.FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "merchantId": first.merchant_id,
        "apiKey": first.api_key,
        "environment": "sandbox",
    }
    async with session_factory(engine)() as session:
        org = await session.get(Organization, first.merchant_id)
        key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(first.api_key)))
    assert org is not None and org.name == credentials.DEV_MERCHANT_NAME
    assert key is not None and key.merchant_id == first.merchant_id and key.environment == "sandbox"

    again, created = await credentials.ensure(engine, tmp_path)
    assert (again, created) == (first, False)


async def test_recreated_when_the_key_is_unknown(engine: AsyncEngine, tmp_path: Path) -> None:
    """What a wiped or swapped database looks like: the saved key matches no row."""
    stale = credentials.Credentials(merchant_id="org_gone", api_key="sk_test_" + "x" * 40)
    credentials.save(tmp_path, stale)
    fresh, created = await credentials.ensure(engine, tmp_path)
    assert created and fresh.merchant_id != stale.merchant_id and fresh.api_key != stale.api_key
    assert credentials.load(tmp_path) == fresh


async def test_recreated_when_the_key_was_revoked(engine: AsyncEngine, tmp_path: Path) -> None:
    first, _ = await credentials.ensure(engine, tmp_path)
    async with session_factory(engine)() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(first.api_key)))
        assert key is not None
        key.revoked_at = key.created_at
        await session.commit()
    second, created = await credentials.ensure(engine, tmp_path)
    assert created and second.api_key != first.api_key


async def test_unreadable_file_is_replaced(engine: AsyncEngine, tmp_path: Path) -> None:
    (tmp_path / credentials.FILENAME).write_text("{not json")
    fresh, created = await credentials.ensure(engine, tmp_path)
    assert created and credentials.load(tmp_path) == fresh
