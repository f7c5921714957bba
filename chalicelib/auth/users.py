"""Users: create, read, list, change role or state, set a password. Usernames are lower-case and unique."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Any

from pynamodb.exceptions import PutError

from chalicelib.auth import passwords
from chalicelib.clock import utcnow
from chalicelib.errors import ConflictError, NotFoundError, ValidationError
from chalicelib.jobs.migrations import Migration, migration
from chalicelib.jobs.registry import JobContext
from chalicelib.models.auth import USERS, Marker, User
from chalicelib.models.base import checked_start_key

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,31}$")
ROLES = ("admin", "user")
ADMIN_EXISTS = "admin-exists"  # the marker that retires the static ADMIN_TOKEN


def check_username(username: object, field: str = "username") -> str:
    if not isinstance(username, str) or not USERNAME.match(username):
        raise ValidationError(
            f"{field} must be 3-32 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter"
            " or digit",
            details={"field": field},
        )
    return username


def get(username: str, consistent: bool = False) -> User | None:
    try:
        return User.get(*User.key(username), consistent_read=consistent)
    except User.DoesNotExist:
        return None


def require(username: str) -> User:
    user = get(username, consistent=True) if USERNAME.match(username or "") else None
    if user is None:
        raise NotFoundError(f"no user {username!r}")
    return user


def create_user(
    username: str, password: str, role: str = "user", email: str | None = None, now: datetime | None = None
) -> User:
    """A new user (409 if the name is taken); the password must pass the policy."""
    now = now or utcnow()
    check_username(username)
    if role not in ROLES:
        raise ValidationError("role must be 'admin' or 'user'", details={"field": "role"})
    passwords.check_policy(password, username)
    user = User(
        *User.key(username),
        username=username,
        email=email,
        role=role,
        password_hash=passwords.hash_password(password),
        created_at=now,
        password_changed_at=now,
        list_pk=USERS,
        list_sk=username,
    )
    try:
        user.save()  # conditional: the version attribute makes a first save "does not exist yet"
    except PutError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            raise ConflictError(f"the username {username!r} is taken", details={"field": "username"}) from None
        raise
    if role == "admin":
        note_admin_exists(username, now)
    return user


def note_admin_exists(username: str | None, now: datetime | None = None) -> None:
    """Record (once) that an admin account exists: from then on the static ADMIN_TOKEN is refused."""
    if admin_exists():
        return
    Marker(*Marker.key(ADMIN_EXISTS), name=ADMIN_EXISTS, at=now or utcnow(), details={"first_admin": username}).save()


def admin_exists() -> bool:
    try:
        Marker.get(*Marker.key(ADMIN_EXISTS), consistent_read=True)
        return True
    except Marker.DoesNotExist:
        return False


def any_admin() -> str | None:
    """The name of an admin account, if there is one (reads the users listing; used by the migration)."""
    for user in User.listing.query(USERS):
        if isinstance(user, User) and user.role == "admin":
            return user.username
    return None


def view(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "email": user.email,
        "role": user.role,
        "disabled": bool(user.disabled),
        "created_at": user.created_at.isoformat(),
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }


def listing(limit: int = 50, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    last = None
    if cursor:
        try:
            last = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        except ValueError:
            raise ValidationError("cursor is not one this API gave", details={"field": "cursor"}) from None
    last = checked_start_key(last, {"pk", "sk", "list_pk", "list_sk"})
    query = User.listing.query(USERS, limit=limit, last_evaluated_key=last)
    users = [view(u) for u in query if isinstance(u, User)]
    key = query.last_evaluated_key
    return users, base64.urlsafe_b64encode(json.dumps(key).encode()).decode() if key else None


def update(user: User, *, role: str | None = None, disabled: bool | None = None) -> User:
    if role is not None:
        if role not in ROLES:
            raise ValidationError("role must be 'admin' or 'user'", details={"field": "role"})
        user.role = role
    if disabled is not None:
        user.disabled = disabled
    user.save()
    if user.role == "admin":
        note_admin_exists(user.username)
    return user


def set_password(user: User, password: str, now: datetime | None = None) -> None:
    """A new password (policy checked); access tokens issued before now stop working."""
    passwords.check_policy(password, user.username)
    user.password_hash = passwords.hash_password(password)
    user.password_changed_at = now or utcnow()
    user.save()


@migration
class RetireStaticToken(Migration):
    """Deployments that made admin accounts before this marker existed: record the switch once."""

    id = "2026-11-23_retire_static_admin_token"
    description = "Record that an admin account exists, so the static ADMIN_TOKEN stops working"

    def run(self, ctx: JobContext) -> dict[str, Any]:
        admin = any_admin()
        if admin is not None:
            note_admin_exists(admin)
        return {"admin": admin, "static_token_retired": admin is not None}
