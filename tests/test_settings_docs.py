"""docs/settings.md documents every environment variable settings.py reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import AliasChoices

from settings import Settings

DOC = (Path(__file__).parents[1] / "docs" / "settings.md").read_text()


def env_names(name: str) -> list[str]:
    field = Settings.model_fields[name]
    if isinstance(field.validation_alias, AliasChoices):
        return [str(choice) for choice in field.validation_alias.choices]
    return [f"ACCRUE_{name.upper()}"]


def test_every_setting_is_documented() -> None:
    missing = [env for name in Settings.model_fields for env in env_names(name) if f"`{env}`" not in DOC]
    assert missing == []


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@db:5432/x")
    monkeypatch.setenv("ACCRUE_API_PORT", "9001")
    monkeypatch.setenv("ACCRUE_INVOICE_GRACE_PERIOD", "PT2H")
    settings = Settings()
    assert (settings.database_url, settings.api_port) == ("postgresql+asyncpg://u@db:5432/x", 9001)
    assert settings.invoice_grace_period.total_seconds() == 7200
