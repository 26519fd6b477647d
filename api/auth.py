"""Bearer API keys: hashed at rest, one merchant organization and one environment each (D20)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.problems import ApiError, forbidden
from db.models import ApiKey
from domain.api_keys import environment_of, hash_key


@dataclass(frozen=True)
class Caller:
    merchant_id: str
    environment: str
    user_id: str
    key_id: str

    def require_merchant(self, merchant_id: str, field: str = "merchantId") -> None:
        """A merchantId/organizationId parameter must name the caller's organization (403 otherwise)."""
        if merchant_id != self.merchant_id:
            raise forbidden(f"{field} {merchant_id!r} is not the organization of this API key")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message)


async def authenticate(request: Request, session: AsyncSession) -> Caller:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Missing API key: send the header 'Authorization: Bearer sk_test_…'")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise _unauthorized("Malformed Authorization header: expected 'Bearer <api key>'")
    environment = environment_of(secret)
    if environment is None:
        raise _unauthorized("API keys start with sk_test_ (sandbox) or sk_live_ (live)")
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
    if key is None or key.revoked_at is not None or key.environment != environment:
        raise _unauthorized("Invalid or revoked API key")
    return Caller(key.merchant_id, key.environment, key.user_id, key.id)
