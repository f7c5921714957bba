"""The exception hierarchy, and the one place that maps exceptions to HTTP responses.

Every error body is JSON: `{"error": {"code": ..., "message": ...}}` (plus optional `details`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from chalice import BadRequestError as ChaliceBadRequestError
from chalice import ChaliceUnhandledError, ChaliceViewError, Response


class ProjectionistError(ChaliceUnhandledError):
    """Base of every error the app raises on purpose.

    It derives from ChaliceUnhandledError, Chalice's marker for "let the middleware handle this", so the
    one error middleware in app.py maps it with `to_response` instead of Chalice turning it into a bare 500.
    """

    status_code = 500
    code = "internal_error"
    # Permanent errors are not worth retrying: the same input fails the same way.
    permanent = False

    def __init__(self, message: str, *, details: Any = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.retry_after = retry_after  # seconds; sent as the Retry-After header


class ValidationError(ProjectionistError):
    status_code = 400
    code = "invalid_request"
    permanent = True


class UnauthorizedError(ProjectionistError):
    status_code = 401
    code = "unauthorized"
    permanent = True


class ForbiddenError(ProjectionistError):
    status_code = 403
    code = "forbidden"
    permanent = True


class NotFoundError(ProjectionistError):
    status_code = 404
    code = "not_found"
    permanent = True


class ConflictError(ProjectionistError):
    status_code = 409
    code = "conflict"


class PayloadTooLargeError(ProjectionistError):
    status_code = 413
    code = "payload_too_large"
    permanent = True


class TooManyRequestsError(ProjectionistError):
    """Too many attempts (e.g. failed logins): come back after `retry_after` seconds."""

    status_code = 429
    code = "too_many_requests"


class UpstreamError(ProjectionistError):
    """An outside service (TMDB, a tracker, ...) failed."""

    status_code = 502
    code = "upstream_error"


class ServiceUnavailableError(ProjectionistError):
    """A part of our own stack (DynamoDB, SQS, S3) cannot be reached."""

    status_code = 503
    code = "unavailable"


class InvalidEnvelopeError(ProjectionistError):
    """An SQS message whose body is not a job envelope."""

    status_code = 400
    code = "invalid_envelope"
    permanent = True


class UnknownJobError(InvalidEnvelopeError):
    code = "unknown_job"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def json_response(status_code: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body=json.dumps(body, default=str),
        status_code=status_code,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def to_response(exc: Exception) -> Response:
    """Map any exception raised while serving a request to a JSON response. Never leaks a stack trace."""
    if isinstance(exc, ProjectionistError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))} if exc.retry_after is not None else None
        return json_response(exc.status_code, error_body(exc.code, exc.message, exc.details), headers)
    if isinstance(exc, ChaliceBadRequestError):
        return json_response(400, error_body("invalid_request", str(exc)))
    if isinstance(exc, ChaliceViewError):
        status = getattr(exc, "STATUS_CODE", 500)
        code = "internal_error" if status >= 500 else type(exc).__name__.removesuffix("Error").lower()
        return json_response(status, error_body(code, str(exc) if status < 500 else "Internal server error"))
    return json_response(500, error_body("internal_error", "Internal server error"))


def _snake(name: str) -> str:
    name = name.removesuffix("Error") or name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def normalize_response(response: Response) -> Response:
    """Give Chalice's own error responses (`{"Code", "Message"}`: bad JSON, 405, 415, unhandled 500) our shape."""
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code", "Message"}:
        code = "internal_error" if response.status_code >= 500 else _snake(str(body["Code"]))
        message = "Internal server error" if response.status_code >= 500 else str(body["Message"])
        headers = {k: v for k, v in (response.headers or {}).items() if k.lower() != "content-type"}
        normalized = json_response(response.status_code, error_body(code, message))
        normalized.headers.update(headers)
        return normalized
    return response
