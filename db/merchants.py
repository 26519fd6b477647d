"""Merchant bootstrap: the API has no call that creates merchants, so the CLI and tests use this."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ApiKey, Membership, Organization, User
from domain.api_keys import generate_key, hash_key
from domain.ids import new_id


@dataclass(frozen=True)
class NewMerchant:
    merchant_id: str
    user_id: str
    api_key: str
    environment: str


async def create_merchant(
    session: AsyncSession, name: str, environment: str = "sandbox", email: str | None = None
) -> NewMerchant:
    """A merchant organization, its owner user and one API key for `environment`, in one transaction."""
    org = Organization(id=new_id("organization"), kind="merchant", name=name)
    user_id = new_id("user")
    user = User(id=user_id, email=email or f"owner+{org.id}@accrue.local", ory_id=user_id)
    secret = generate_key(environment)
    session.add_all([org, user])
    await session.flush()
    session.add_all(
        [
            Membership(user_id=user.id, organization_id=org.id, state="active"),
            ApiKey(
                id=new_id("api_key"),
                merchant_id=org.id,
                user_id=user.id,
                environment=environment,
                name=f"{environment} key",
                key_hash=hash_key(secret),
                last4=secret[-4:],
            ),
        ]
    )
    await session.commit()
    return NewMerchant(org.id, user.id, secret, environment)
