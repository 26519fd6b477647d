"""The Paygentic error envelope as exceptions: {"error", "message", "code"?, "details"?}.

No FastAPI here: resource representations and their validation raise these, and activities import those
(api/errors.py turns them into responses)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

CATEGORIES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


class FieldError(BaseModel):
    field: str
    message: str
    code: str


class ErrorBody(BaseModel):
    """The envelope every error answers with, as the OpenAPI document declares it."""

    error: str
    message: str
    code: str | None = None
    details: dict[str, Any] | None = None
    errors: list[FieldError] | None = None


# What any operation may answer besides its success; declared once for every route (api/app.py).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Invalid request: `errors` names each offending field",
        401: "Missing or invalid API key",
        403: "The API key may not do this (another organization, or live where only sandbox is allowed)",
        404: "No such resource for this API key",
        408: "The request body did not arrive in time",
        409: "Conflicts with the resource's current state",
        413: "Request body too large",
        422: "Well-formed but refers to something that cannot be used",
        503: "A dependency (database, Temporal) is unavailable; nothing was applied, retry",
    }.items()
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.details = details
        self.error = error or CATEGORIES.get(status, "error")

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.code:
            body["code"] = self.code
        if self.details is not None:
            body["details"] = self.details
        return body


class FieldErrors(ApiError):
    """400 validation_error with one entry per offending field, for checks beyond the schema."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(400, f"Invalid request: {summary}", error="validation_error")
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "message": self.message, "errors": self.errors}


def internal_error() -> ApiError:
    return ApiError(500, "Internal error; the request was not applied. Retry, or report it if it persists.")


def invalid(field: str, message: str, code: str = "invalid") -> FieldErrors:
    return FieldErrors([{"field": field, "message": message, "code": code}])


def not_found(kind: str, id_: str) -> ApiError:
    return ApiError(404, f"{kind} {id_!r} was not found")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def conflict(message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(409, message, details=details)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # Union members show up as pydantic's internal tags (e.g. "function-after[...]"); drop them.
    parts = [p for p in parts if "[" not in p]
    return ".".join(parts) or (str(loc[0]) if loc else "body")


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "extra_forbidden": "is not a known field",
    "datetime_type": "must be an ISO-8601 datetime such as 2026-01-15T10:30:00Z",
    "datetime_parsing": "must be an ISO-8601 datetime such as 2026-01-15T10:30:00Z",
    "datetime_from_date_parsing": "must be an ISO-8601 datetime such as 2026-01-15T10:30:00Z",
    "date_type": "must be a date such as 2026-01-15",
    "date_parsing": "must be a date such as 2026-01-15",
    "date_from_datetime_parsing": "must be a date such as 2026-01-15",
}


def _describe(err: dict[str, Any]) -> dict[str, str]:
    kind = err.get("type", "invalid")
    field = _field_name(tuple(err.get("loc", ())))
    if kind == "json_invalid":
        ctx = err.get("ctx") or {}
        reason = ctx.get("error", "malformed JSON")
        return {
            "field": "body",
            "message": f"request body is not valid JSON ({reason})",
            "code": "invalid_json",
        }
    if kind == "missing" and field == "body":
        return {"field": "body", "message": "a JSON object body is required", "code": "missing"}
    message = _MESSAGES.get(kind) or str(err.get("msg", "is invalid"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return {"field": field, "message": message, "code": kind}


def validation_errors(errors: Sequence[Any]) -> FieldErrors:
    """FieldErrors for pydantic errors, e.g. of one item that a batch endpoint validates on its own."""
    # One entry per field: unions report every member's failure, the first is the useful one.
    unique: dict[str, dict[str, str]] = {}
    for e in (_describe(dict(e)) for e in errors):
        unique.setdefault(e["field"], e)
    return FieldErrors(list(unique.values()))
