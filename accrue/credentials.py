"""The dev stack's merchant and sandbox API key, kept in `<data-dir>/credentials.json` (mode 0600)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.merchants import create_merchant
from db.models import ApiKey
from db.session import session_factory
from domain.api_keys import hash_key

DEV_MERCHANT_NAME = "Accrue Dev Merchant"
FILENAME = "credentials.json"


class Credentials(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    merchant_id: str = Field(alias="merchantId")
    api_key: str = Field(alias="apiKey")
    environment: str = "sandbox"


def load(data_dir: Path) -> Credentials | None:
    try:
        return Credentials.model_validate_json((data_dir / FILENAME).read_text())
    except (FileNotFoundError, ValidationError, json.JSONDecodeError):
        return None


def save(data_dir: Path, credentials: Credentials) -> None:
    """Written to a private temporary file and renamed, so the key is never readable by others."""
    path = data_dir / FILENAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(credentials.model_dump_json(by_alias=True, indent=2) + "\n")
    os.replace(tmp, path)


async def is_valid(engine: AsyncEngine, credentials: Credentials) -> bool:
    """The key still authenticates as that merchant (the database may have been wiped or swapped)."""
    async with session_factory(engine)() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(credentials.api_key)))
    return (
        key is not None
        and key.revoked_at is None
        and key.merchant_id == credentials.merchant_id
        and key.environment == credentials.environment
    )


async def ensure(engine: AsyncEngine, data_dir: Path) -> tuple[Credentials, bool]:
    """The saved dev merchant when its key still works, else a new one; returns it and whether it is new."""
    saved = load(data_dir)
    if saved is not None and await is_valid(engine, saved):
        return saved, False
    async with session_factory(engine)() as session:
        merchant = await create_merchant(session, DEV_MERCHANT_NAME, "sandbox")
    created = Credentials(merchant_id=merchant.merchant_id, api_key=merchant.api_key)
    save(data_dir, created)
    return created, True
