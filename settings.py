"""Every environment variable Accrue reads, in one place (documented in docs/settings.md)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCRUE_", extra="ignore")

    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/accrue",
        validation_alias=AliasChoices("DATABASE_URL", "ACCRUE_DATABASE_URL"),
        description="SQLAlchemy URL of the PostgreSQL database (asyncpg driver).",
    )
    temporal_address: str = Field(
        default="127.0.0.1:7233",
        validation_alias=AliasChoices("TEMPORAL_ADDRESS", "ACCRUE_TEMPORAL_ADDRESS"),
        description="host:port of the Temporal frontend.",
    )
    temporal_namespace: str = Field(default="default", description="Temporal namespace.")
    task_queue: str = Field(default="accrue", description="Temporal task queue the worker polls.")
    api_host: str = Field(default="127.0.0.1", description="Interface the API binds to.")
    api_port: int = Field(default=8000, description="Port the API binds to.")
    public_base_url: str = Field(
        default="",
        description="Base URL the API is reached at, for links it hands out; default http://api_host:api_port.",
    )
    max_request_bytes: int = Field(
        default=1_048_576, description="Largest request body the API accepts; larger ones get 413."
    )
    request_body_timeout: float = Field(
        default=30.0,
        description="Seconds a request body may take to arrive; a slower one gets 408.",
    )
    event_writer_lanes: int = Field(
        default=2, description="Connections the API's meter-event writer keeps for its group commits."
    )
    event_writer_linger: float = Field(
        default=0.0, description="Seconds the meter-event writer holds a group commit open for late arrivals."
    )
    db_pool_size: int = Field(default=10, description="Connections kept in each process's DB pool.")
    invoice_grace_period: timedelta = Field(
        default=timedelta(hours=24), description="Time after periodEnd that late events still count."
    )
    worker_cached_workflows: int = Field(
        default=5000,
        gt=0,
        description="Workflows a worker keeps in memory between tasks; a workflow not kept is replayed from "
        "its history when it next has work.",
    )
    reconcile_interval: timedelta = Field(
        default=timedelta(minutes=5),
        description="How often the reconciler Schedule starts any missing subscription workflow.",
    )
    stripe_api_base: str = Field(
        default="",
        description="Base URL of every Stripe API call (customers' revenue sources, payments); empty: "
        "Stripe's own (https://api.stripe.com). Point it at a Stripe fake (localstripe) to run offline.",
    )
    source_poll_interval: timedelta = Field(
        default=timedelta(minutes=5),
        description="How often each source installation polls its customer's Stripe for paid invoices.",
    )
    source_polls_per_run: int = Field(
        default=100,
        gt=0,
        description="Polls a source installation's workflow makes before it continues as new.",
    )
    platform_fee_rate: Decimal = Field(
        default=Decimal(0),
        ge=0,
        le=1,
        description="Fraction of every instant usage charge the platform keeps (0.05 = 5%); the merchant's "
        "revenue account is credited the rest.",
    )
    log_level: str = Field(default="INFO", description="Python log level for API and worker.")
    secret_key: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Signs customer and webhook portal links and seals stored secrets (webhook signing secrets); "
            "required in production (empty: links use a per-process key, secrets a public development key)."
        ),
    )

    @property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
