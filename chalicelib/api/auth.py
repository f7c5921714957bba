"""Accounts over HTTP: sign in, refresh, sign out, who am I, change my password; and the users API (admin).

Bodies are validated with pydantic: a 400 names the field. Errors never say whether a username exists.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from chalice import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from chalicelib.auth import audit, guard, login, passwords, tokens, users
from chalicelib.errors import ForbiddenError, ValidationError, json_response

bp = Blueprint(__name__)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class LoginBody(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(Body):
    refresh_token: str = Field(min_length=1, max_length=200)


class PasswordBody(Body):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class NewUserBody(Body):
    username: str = Field(min_length=3, max_length=32, pattern=r"^[a-z0-9][a-z0-9._-]{2,31}$")
    password: str = Field(min_length=1, max_length=1024)
    role: Literal["admin", "user"] = "user"
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")


class UserChangeBody(Body):
    role: Literal["admin", "user"] | None = None
    disabled: bool | None = None


class ResetBody(Body):
    password: str = Field(min_length=1, max_length=1024)


def parse(model: type[Body], request: Any) -> Any:
    """The request's JSON body as `model`, or a 400 naming the first field at fault."""
    try:
        raw = request.json_body if request.raw_body else None
    except Exception:
        raise ValidationError("the body must be JSON") from None
    if not isinstance(raw, dict):
        raise ValidationError("the body must be a JSON object")
    try:
        return model.model_validate(raw)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationError(f"{field}: {first['msg']}", details={"field": field}) from None


def _params() -> dict[str, str]:
    return dict(bp.current_request.query_params or {})


def _ip() -> str | None:
    return guard.source_ip(bp.current_request)


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = _params().get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number", details={"field": name}) from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be {low}..{high}", details={"field": name})
    return value


def _time(name: str) -> datetime | None:
    raw = _params().get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{name} must be an ISO 8601 time", details={"field": name}) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- signing in ---------------------------------------------------------------------------------------------


@bp.route("/auth/login", methods=["POST"])
def sign_in() -> dict[str, Any]:
    body = parse(LoginBody, bp.current_request)
    return login.login(body.username, body.password, _ip())


@bp.route("/auth/refresh", methods=["POST"])
def refresh() -> dict[str, Any]:
    body = parse(RefreshBody, bp.current_request)
    username, new_token = tokens.rotate(body.refresh_token, ip=_ip())
    user = users.get(username, consistent=True)
    if user is None or user.disabled:
        tokens.revoke_family(tokens.family_of(new_token), "disabled")
        raise login.InvalidCredentialsError("the account is not available: sign in again")
    return tokens.describe(user, new_token)


@bp.route("/auth/logout", methods=["POST"])
def sign_out() -> Response:
    body = parse(RefreshBody, bp.current_request)
    principal = guard.current(bp.current_request)
    tokens.logout(body.refresh_token, principal.username)
    audit.record("auth.logout", actor=principal.username, ip=_ip())
    return Response(body="", status_code=204)


@bp.route("/auth/me", methods=["GET"])
def me() -> dict[str, Any]:
    principal = guard.current(bp.current_request)
    if principal.via == "static":
        return {"username": principal.username, "email": None, "role": "admin", "disabled": False,
                "created_at": datetime.fromtimestamp(0, UTC).isoformat(), "last_login_at": None}  # fmt: skip
    return users.view(users.require(principal.username))


@bp.route("/auth/password", methods=["POST"])
def change_password() -> Response:
    body = parse(PasswordBody, bp.current_request)
    principal = guard.current(bp.current_request)
    if principal.via == "static":
        raise ForbiddenError("the static admin token has no password: create an admin account")
    user = users.require(principal.username)
    if not passwords.verify(user.password_hash, body.current_password):
        audit.record("auth.password_change", actor=user.username, outcome="failure", ip=_ip())
        raise ForbiddenError("the current password is wrong", details={"field": "current_password"})
    users.set_password(user, body.new_password)
    audit.record("auth.password_change", actor=user.username, ip=_ip())
    return Response(body="", status_code=204)


# -- users (admin) ------------------------------------------------------------------------------------------


@bp.route("/admin/users", methods=["GET"])
def list_users() -> dict[str, Any]:
    found, cursor = users.listing(_int("limit", 50, 1, 100), _params().get("cursor"))
    return {"users": found, "next_cursor": cursor}


@bp.route("/admin/users", methods=["POST"])
def create_user() -> Response:
    body = parse(NewUserBody, bp.current_request)
    user = users.create_user(body.username, body.password, body.role, body.email)
    return json_response(201, users.view(user))


@bp.route("/admin/users/{username}", methods=["GET"])
def get_user(username: str) -> dict[str, Any]:
    return users.view(users.require(username))


@bp.route("/admin/users/{username}", methods=["PATCH"])
def change_user(username: str) -> dict[str, Any]:
    body = parse(UserChangeBody, bp.current_request)
    user = users.require(username)
    before = user.role
    principal = guard.current(bp.current_request)
    if principal.username == username and (body.disabled or body.role == "user"):
        raise ValidationError("an admin cannot disable or demote themselves", details={"field": "role"})
    users.update(user, role=body.role, disabled=body.disabled)
    if body.role is not None and body.role != before:
        audit.record("auth.role_change", actor=principal.username, target=username, ip=_ip(),
                     details={"from": before, "to": body.role})  # fmt: skip
    return users.view(user)


@bp.route("/admin/users/{username}/password", methods=["POST"])
def reset_password(username: str) -> Response:
    body = parse(ResetBody, bp.current_request)
    user = users.require(username)
    users.set_password(user, body.password)
    principal = guard.current(bp.current_request)
    audit.record("auth.password_reset", actor=principal.username, target=username, ip=_ip())
    return Response(body="", status_code=204)


@bp.route("/admin/audit", methods=["GET"])
def list_audit() -> dict[str, Any]:
    params = _params()
    events, cursor = audit.listing(
        limit=_int("limit", 50, 1, 200),
        cursor=params.get("cursor"),
        action=params.get("action"),
        actor=params.get("actor"),
        since=_time("since"),
        until=_time("until"),
    )
    return {"events": events, "next_cursor": cursor}
