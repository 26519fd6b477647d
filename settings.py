"""Every environment variable Accrue reads, in one place (documented in docs/settings.md)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class SettingsError(Exception):
    """A setting that cannot work (a Stripe key of the wrong mode …); its message never holds a secret."""


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

    # ---- payments (issue 11, integrations/payments/; docs/settings.md "Payments") ----------------------
    payment_provider: Literal["sandbox", "stripe"] = Field(
        default="sandbox",
        description="Payment provider of the sandbox environment (sk_test_ merchants): sandbox (Accrue's "
        "test checkout) or stripe (PaymentIntents in the test mode of ACCRUE_STRIPE_SECRET_KEY's account).",
    )
    live_payment_provider: Literal["", "sandbox", "stripe"] = Field(
        default="",
        description="Payment provider of the live environment; empty: stripe once "
        "ACCRUE_STRIPE_LIVE_SECRET_KEY is set, else none (live checkouts say payments are unavailable).",
    )
    payment_provider_overrides: dict[str, Literal["sandbox", "stripe"]] = Field(
        default_factory=dict,
        description='Per-merchant provider, JSON: {"org_…": "stripe"} or {"org_…:sandbox": "stripe"}.',
    )
    stripe_secret_key: SecretStr = Field(
        default=SecretStr(""),
        description="Test-mode secret key (sk_test_/rk_test_) of the deployment's Stripe.",
    )
    stripe_publishable_key: str = Field(
        default="",
        description="Test-mode publishable key (pk_test_) the Stripe checkout page hands Stripe.js.",
    )
    stripe_webhook_secret: SecretStr = Field(
        default=SecretStr(""), description="Signing secret (whsec_) of the test-mode Stripe webhook endpoint."
    )
    stripe_live_secret_key: SecretStr = Field(
        default=SecretStr(""),
        description="Live-mode secret key (sk_live_/rk_live_) of the deployment's Stripe.",
    )
    stripe_live_publishable_key: str = Field(default="", description="Live-mode publishable key (pk_live_).")
    stripe_live_webhook_secret: SecretStr = Field(
        default=SecretStr(""), description="Signing secret (whsec_) of the live-mode Stripe webhook endpoint."
    )
    stripe_js_url: str = Field(
        default="https://js.stripe.com/v3/",
        description="Where the Stripe checkout page loads Stripe.js from (localstripe serves its own).",
    )
    payment_reconcile_interval: timedelta = Field(
        default=timedelta(minutes=10),
        gt=timedelta(0),
        description="How often an owning workflow asks Stripe about an open PaymentIntent whose webhook has "
        "not arrived.",
    )

    # ---- dunning (issue 11 item 5: autoCharge retries; docs/settings.md "Dunning") -----------------------
    dunning_schedule: Annotated[tuple[timedelta, ...], NoDecode] = Field(
        default=(timedelta(days=1), timedelta(days=3), timedelta(days=5), timedelta(days=7)),
        description="When a failed off-session charge of an autoCharge invoice is retried: ISO-8601 "
        "durations, comma-separated, each an offset from the first failure (increasing); empty: no retry.",
    )
    dunning_policy: Literal["keep", "terminate"] = Field(
        default="keep",
        description="What happens after the last retry fails: keep (the subscription stays active, the "
        "invoice PAYMENT_FAILED and payable in the portal) or terminate (terminatedBy system).",
    )

    @field_validator("dunning_schedule", mode="before")
    @classmethod
    def _dunning_offsets(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("dunning_schedule")
    @classmethod
    def _dunning_increasing(cls, value: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
        if any(offset <= timedelta(0) for offset in value):
            raise ValueError("every dunning offset must be positive")
        if list(value) != sorted(set(value)):
            raise ValueError("dunning offsets count from the first failure: they must increase")
        return value

    @property
    def live_provider(self) -> str:
        if self.live_payment_provider:
            return self.live_payment_provider
        return "stripe" if self.stripe_live_secret_key.get_secret_value() else "sandbox"

    @model_validator(mode="after")
    def _stripe_keys_match_their_mode(self) -> Settings:
        """A live key where a test key belongs (or the reverse) stops the process at startup. SettingsError,
        not ValueError: pydantic would wrap a ValueError with the input (the keys themselves) in its message;
        this message names the variable, never the key."""
        from domain.stripe_keys import key_mode

        for var, value, mode in (
            ("ACCRUE_STRIPE_SECRET_KEY", self.stripe_secret_key.get_secret_value(), "test"),
            ("ACCRUE_STRIPE_LIVE_SECRET_KEY", self.stripe_live_secret_key.get_secret_value(), "live"),
        ):
            if not value:
                continue
            try:
                found = key_mode(value)
            except ValueError:
                raise SettingsError(
                    f"{var} is not a Stripe secret key (sk_{mode}_… or rk_{mode}_…)"
                ) from None
            if found != mode:
                where = "the sandbox environment" if mode == "test" else "the live environment"
                raise SettingsError(
                    f"{var} is a {found}-mode key, refused: {where} takes {mode}-mode keys only "
                    f"(sk_{mode}_… or rk_{mode}_…)"
                )
        for var, value, mode in (
            ("ACCRUE_STRIPE_PUBLISHABLE_KEY", self.stripe_publishable_key, "test"),
            ("ACCRUE_STRIPE_LIVE_PUBLISHABLE_KEY", self.stripe_live_publishable_key, "live"),
        ):
            if value and not value.startswith(f"pk_{mode}_"):
                raise SettingsError(f"{var} must be a {mode}-mode publishable key (pk_{mode}_…)")
        sandbox_stripe = self.payment_provider == "stripe" or "stripe" in {
            v for k, v in self.payment_provider_overrides.items() if not k.endswith(":live")
        }
        if sandbox_stripe and not self.stripe_secret_key.get_secret_value():
            raise SettingsError(
                "the sandbox environment's stripe provider needs ACCRUE_STRIPE_SECRET_KEY (a test-mode key)"
            )
        live_stripe = self.live_payment_provider == "stripe" or "stripe" in {
            v for k, v in self.payment_provider_overrides.items() if k.endswith(":live")
        }
        if live_stripe and not self.stripe_live_secret_key.get_secret_value():
            raise SettingsError("the live environment's stripe provider needs ACCRUE_STRIPE_LIVE_SECRET_KEY")
        return self

    @property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
