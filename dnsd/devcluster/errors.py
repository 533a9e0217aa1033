"""API errors rendered as Kubernetes `Status` objects."""

from __future__ import annotations

from typing import Any

REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_object(
    code: int,
    message: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a failure `Status` object like the API server returns."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, ""),
        "code": code,
    }
    if details:
        status["details"] = details
    return status


def success_status(name: str, kind: str, group: str = "", uid: str = "") -> dict[str, Any]:
    """The `Status` returned by a successful DELETE of kinds that do not echo the object."""
    details: dict[str, Any] = {"name": name, "kind": kind}
    if group:
        details["group"] = group
    if uid:
        details["uid"] = uid
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


class ApiError(Exception):
    """An error the HTTP layer turns into a `Status` response with `code`."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "")
        self.details = details

    def status(self) -> dict[str, Any]:
        """The `Status` object for this error."""
        return status_object(self.code, self.message, self.reason, self.details)


def _subject(resource: str, name: str, group: str) -> tuple[str, dict[str, Any]]:
    """The qualified resource name and the Status details naming one object."""
    details: dict[str, Any] = {"name": name, "kind": resource}
    if group:
        details["group"] = group
    return (f"{resource}.{group}" if group else resource), details


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    """`<resource> "<name>" not found` (404)."""
    qual, details = _subject(resource, name, group)
    return ApiError(404, f'{qual} "{name}" not found', "NotFound", details)


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    """`<resource> "<name>" already exists` (409)."""
    qual, details = _subject(resource, name, group)
    return ApiError(409, f'{qual} "{name}" already exists', "AlreadyExists", details)


def conflict(resource: str, name: str, group: str = "") -> ApiError:
    """Optimistic-concurrency failure (409 Conflict)."""
    qual, details = _subject(resource, name, group)
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {qual} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        "Conflict",
        details,
    )


def invalid(kind: str, name: str, causes: list[tuple[str, str]], group: str = "") -> ApiError:
    """422 Invalid with one cause per `(field, message)`."""
    qual = f"{kind}.{group}" if group else kind
    text = "; ".join(f"{field}: {msg}" for field, msg in causes)
    details: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "causes": [
            {"reason": "FieldValueInvalid", "message": msg, "field": field} for field, msg in causes
        ],
    }
    if group:
        details["group"] = group
    return ApiError(422, f'{qual} "{name}" is invalid: {text}', "Invalid", details)


def expired(message: str) -> ApiError:
    """410 Expired (too old resourceVersion / continue token)."""
    return ApiError(410, message, "Expired")
