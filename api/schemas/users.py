from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator

from api.schemas.customers import AddressIn, AddressOut, Phone
from api.wire import DateOnly, Name, Timestamp, WireModel
from db.models import Membership, User

UserType = Literal["COMPANY", "INDIVIDUAL"]


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _date_string(value: Any) -> Any:
    # Only a plain YYYY-MM-DD string: pydantic alone would also take timestamps and epoch numbers.
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError("must be a date written YYYY-MM-DD, like 1990-01-31")
    return value


def _not_future(value: date) -> date:
    if value > datetime.now(UTC).date():
        raise ValueError("must not be in the future")
    return value


BirthDate = Annotated[date, BeforeValidator(_date_string), AfterValidator(_not_future)]


class UserUpdate(WireModel):
    address: AddressIn | None = None
    date_of_birth: BirthDate | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    phone: Phone | None = None
    type: UserType | None = None


class UserOrganizationOut(WireModel):
    id: str
    state: str


class UserOut(WireModel):
    id: str
    object: Literal["user"] = "user"
    email: str
    ory_id: str
    organizations: list[UserOrganizationOut]
    first_name: str | None
    last_name: str | None
    phone: str | None
    date_of_birth: DateOnly | None
    address: AddressOut | None
    type: str | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, row: User, memberships: list[Membership]) -> UserOut:
        address: dict[str, Any] | None = row.address
        return cls(
            id=row.id,
            email=row.email,
            ory_id=row.ory_id,
            organizations=[UserOrganizationOut(id=m.organization_id, state=m.state) for m in memberships],
            first_name=row.first_name,
            last_name=row.last_name,
            phone=row.phone,
            date_of_birth=row.date_of_birth,
            address=AddressOut.model_validate(address) if address is not None else None,
            type=row.type,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
