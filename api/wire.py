"""Wire conventions shared by every resource: camelCase, ISO-8601 UTC, money as strings, list envelopes."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, Strict, StringConstraints
from pydantic.alias_generators import to_camel

from api.problems import invalid, not_found
from domain.money import MoneyFormatError, parse_decimal


# A page repeats instants (every invoice of a period has its bounds) and isoformat costs microseconds each;
# equal datetimes are the same instant (or both naive), so they format alike whatever their offset.
@functools.lru_cache(maxsize=4096)
def iso(value: datetime) -> str:
    """`2026-01-31T00:00:00.000Z`: aware UTC, milliseconds, Z."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_utc(value: datetime) -> datetime:
    """Naive datetimes from clients are UTC (the SDK sends naive values without an offset)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Every instant the API accepts: billing periods, month windows and clock advances computed from one stay
# far inside what datetime and PostgreSQL hold (a year-1 instant has no month before it).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def in_range(value: datetime) -> datetime:
    message = f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)"
    try:
        value = as_utc(value)
    except OverflowError:  # year 1 or 9999 with an offset that moves it past datetime's range
        raise ValueError(message) from None
    if not EARLIEST <= value < LATEST:
        raise ValueError(message)
    return value


Timestamp = Annotated[datetime, PlainSerializer(iso, return_type=str)]
DateOnly = Annotated[date, PlainSerializer(lambda d: d.isoformat(), return_type=str)]
UtcDatetime = Annotated[datetime, AfterValidator(in_range)]

Text = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=10_000)]
Name = Annotated[str, Strict(), StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
OptionalText = Annotated[str, Strict(), StringConstraints(max_length=10_000)]
Id = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)]


def _money(value: str) -> str:
    try:
        parse_decimal(value)
    except MoneyFormatError as exc:
        raise ValueError(str(exc)) from None
    return value


MoneyStr = Annotated[str, Strict(), AfterValidator(_money)]

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class WireModel(BaseModel):
    """camelCase on the wire; unknown request keys are ignored, as Paygentic does."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


@dataclass
class Page:
    """One offset page of a list request (api/deps.py reads it from limit and offset)."""

    limit: int
    offset: int


class Pagination(WireModel):
    limit: int
    offset: int
    total: int
    has_more: bool


ItemT = TypeVar("ItemT")


class ListResponse(WireModel, Generic[ItemT]):
    """The one offset-list envelope every SDK version parses."""

    object: Literal["list"] = "list"
    data: list[ItemT]
    pagination: Pagination


def list_envelope(items: list[ItemT], page: Page, total: int) -> ListResponse[ItemT]:
    pagination = Pagination(
        limit=page.limit, offset=page.offset, total=total, has_more=page.offset + len(items) < total
    )
    return ListResponse[ItemT](data=items, pagination=pagination)


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)


def changes(body: BaseModel, nullable: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields a PATCH body set; an explicit null is only allowed where the contract allows it."""
    out: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name not in nullable:
            raise invalid(to_camel(name), "cannot be null; omit the field to leave it unchanged")
        out[name] = value
    return out


def contains(column: Any, text: str) -> Any:
    """Case-insensitive substring match of `text` in `column`, with LIKE's wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


def require_no_item(item_id: str | None) -> None:
    # Items (SDK 0.6.3) are not implemented, so no itemId can name one; null is the only valid link.
    if item_id is not None:
        raise not_found("Item", item_id)
