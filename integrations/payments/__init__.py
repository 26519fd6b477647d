"""Payment providers (D14): the seam in base.py, the sandbox and Stripe implementations, and the choice of
provider per merchant and environment (`provider_for`).

Choice: a merchant's `environment` ("sandbox", the sk_test_ keys, or "live") picks the deployment-wide
provider setting for it (ACCRUE_PAYMENT_PROVIDER for sandbox, default `sandbox`; ACCRUE_LIVE_PAYMENT_PROVIDER
for live, default `stripe` once a live key is set), unless ACCRUE_PAYMENT_PROVIDER_OVERRIDES names the
merchant (`{"org_…": "stripe"}` or `{"org_…:sandbox": "stripe"}`). The Stripe provider of the sandbox
environment uses the test-mode keys (ACCRUE_STRIPE_SECRET_KEY …), that of the live environment the live
ones (ACCRUE_STRIPE_LIVE_SECRET_KEY …); settings.py refuses a live key where a test key belongs and vice
versa at startup, and `provider_for` refuses again rather than charge in the wrong mode.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from domain.stripe_keys import key_mode
from integrations.payments.base import (
    CreatedPayment,
    OffSessionCharge,
    PaymentDeclinedError,
    PaymentOwner,
    PaymentProvider,
    PaymentRequest,
    PaymentState,
    PaymentStatus,
    ProviderError,
    ProviderName,
    ProviderRejected,
    ProviderUnavailable,
)
from integrations.payments.sandbox import SandboxProvider
from integrations.payments.stripe import StripeProvider

if TYPE_CHECKING:
    from settings import Settings

__all__ = [
    "CreatedPayment",
    "OffSessionCharge",
    "PaymentDeclinedError",
    "PaymentOwner",
    "PaymentProvider",
    "PaymentRequest",
    "PaymentState",
    "PaymentStatus",
    "ProviderConfigError",
    "ProviderError",
    "ProviderName",
    "ProviderRejected",
    "ProviderUnavailable",
    "SandboxProvider",
    "StripeProvider",
    "provider_for",
    "provider_name_for",
    "provider_named",
    "publishable_key_for",
    "webhook_secrets",
]

_SANDBOX = SandboxProvider()


class ProviderConfigError(ProviderError):
    """The settings do not allow this provider here (no key, or a key of the other mode)."""


def provider_name_for(settings: Settings, merchant_id: str, environment: str) -> ProviderName:
    """The provider a new payment of this merchant and environment goes through."""
    overrides = settings.payment_provider_overrides
    chosen: str | None = overrides.get(f"{merchant_id}:{environment}") or overrides.get(merchant_id)
    if chosen is None:
        chosen = settings.payment_provider if environment == "sandbox" else settings.live_provider
    if (
        chosen == "stripe"
        and environment != "sandbox"
        and not settings.stripe_live_secret_key.get_secret_value()
    ):
        # A merchant-wide override without live keys: live payments stay unavailable, as without Stripe.
        return "sandbox"
    return "stripe" if chosen == "stripe" else "sandbox"


def _keys(settings: Settings, environment: str) -> tuple[str, str]:
    if environment == "sandbox":
        secret, publishable, mode, var = (
            settings.stripe_secret_key.get_secret_value(),
            settings.stripe_publishable_key,
            "test",
            "ACCRUE_STRIPE_SECRET_KEY",
        )
    else:
        secret, publishable, mode, var = (
            settings.stripe_live_secret_key.get_secret_value(),
            settings.stripe_live_publishable_key,
            "live",
            "ACCRUE_STRIPE_LIVE_SECRET_KEY",
        )
    if not secret:
        raise ProviderConfigError(f"the Stripe provider of the {environment} environment needs {var}")
    try:
        found = key_mode(secret)
    except ValueError:
        raise ProviderConfigError(f"{var} is not a Stripe secret key") from None
    if found != mode:
        raise ProviderConfigError(
            f"{var} is a {found}-mode key; the {environment} environment takes {mode}-mode keys only"
        )
    return secret, publishable


@lru_cache(maxsize=16)
def _stripe(secret: str, publishable: str, api_base: str) -> StripeProvider:
    return StripeProvider(secret, publishable, api_base)


def provider_named(settings: Settings, name: str, environment: str) -> PaymentProvider:
    """The provider a stored payment was created with (rows keep the name), for this environment."""
    if name == "stripe":
        secret, publishable = _keys(settings, environment)
        return _stripe(secret, publishable, settings.stripe_api_base)
    return _SANDBOX


def provider_for(settings: Settings, merchant_id: str, environment: str) -> PaymentProvider:
    """The provider a new payment of `merchant_id` in `environment` goes through (see the module doc)."""
    return provider_named(settings, provider_name_for(settings, merchant_id, environment), environment)


def publishable_key_for(settings: Settings, environment: str) -> str:
    return (
        settings.stripe_publishable_key if environment == "sandbox" else settings.stripe_live_publishable_key
    )


def webhook_secrets(settings: Settings) -> list[str]:
    """Every configured Stripe webhook signing secret (test mode, live mode)."""
    found = [
        settings.stripe_webhook_secret.get_secret_value(),
        settings.stripe_live_webhook_secret.get_secret_value(),
    ]
    return [s for s in found if s]
