"""The guard every HTTP request passes (app.py's middleware calls `check`), before any handler runs.

- Public: `/health`, `/auth/login`, `/auth/refresh`. Every other route needs `Authorization: Bearer <access
  token>`, so a route added later is protected without anyone remembering to.
- `/admin/*` needs the `admin` role: 401 without a valid token, 403 for a `user`.
- The user behind a token is read on every request: a disabled account or a changed password ends its
  tokens at once.
- The static ADMIN_TOKEN of the foundation still works as an admin until the first admin account exists
  (the `admin-exists` marker, written by the first admin's creation or by a one-time migration); then never.
- Bodies larger than MAX_BODY_BYTES are a 413 before anything reads them.
- Every mutating request to `/admin/*` or `/feeds` is audited with its outcome.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from chalicelib.auth import tokens, users
from chalicelib.errors import ForbiddenError, PayloadTooLargeError, UnauthorizedError
from chalicelib.settings import get_settings

PUBLIC = frozenset({"/health", "/auth/login", "/auth/refresh"})
KEY = "projectionist.principal"
STATIC = "admin-token"  # the actor name of the static token in the audit log


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    via: str  # "token" or "static"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def source_ip(request: Any) -> str | None:
    identity = (getattr(request, "context", None) or {}).get("identity") or {}
    ip = identity.get("sourceIp")
    return str(ip) if ip else None


def _bearer(request: Any) -> str | None:
    header = str(request.headers.get("authorization") or "")
    scheme, _, token = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <access token>'")
    return token.strip()


def _static(token: str) -> bool:
    expected = get_settings().admin_token
    return expected is not None and hmac.compare_digest(token.encode(), expected.get_secret_value().encode())


def authenticate(request: Any) -> Principal:
    token = _bearer(request)
    if token is None:
        raise UnauthorizedError("sign in first: Authorization: Bearer <access token> (POST /auth/login)")
    if token.count(".") != 2 and _static(token):
        if users.admin_exists():
            raise UnauthorizedError("the static admin token is retired now that an admin account exists: sign in")
        return Principal(STATIC, "admin", "static")
    claims = tokens.decode_access(token)
    user = users.get(claims.username)
    if user is None or user.disabled or tokens.password_stamp(user) != claims.password_stamp:
        raise UnauthorizedError("the access token is no longer valid: sign in again")
    return Principal(user.username, user.role, "token")


def check(request: Any) -> Principal | None:
    """Authenticate and authorize `request` (raises 401/403/413); the principal is kept on the request."""
    raw = request.raw_body if request.method in ("POST", "PUT", "PATCH", "DELETE") else b""
    if raw and len(raw) > get_settings().max_body_bytes:
        raise PayloadTooLargeError(f"the request body is over {get_settings().max_body_bytes} bytes")
    if request.path in PUBLIC:
        return None
    principal = authenticate(request)
    if request.path.startswith("/admin") and not principal.is_admin:
        raise ForbiddenError("this needs an admin")
    request.context[KEY] = principal
    return principal


def current(request: Any) -> Principal:
    """The signed-in user of a request the guard let through."""
    principal = request.context.get(KEY)
    if principal is None:
        raise UnauthorizedError("sign in first")
    return principal


def audited(request: Any) -> bool:
    return request.method in ("POST", "PUT", "PATCH", "DELETE") and (
        request.path.startswith("/admin") or request.path.startswith("/feeds")
    )
