"""Signing in, with brute-force limits.

Failed logins are counted per account name (whether or not it exists) and per source IP, in a window
(LOGIN_FAILURE_WINDOW). At LOGIN_MAX_FAILURES for an account, or LOGIN_MAX_FAILURES_PER_IP for an address,
further attempts are refused with a 429 and Retry-After for LOGIN_LOCKOUT seconds, before any password is
checked. An unknown user, a wrong password and a disabled account all get the same 401 after the same work
(a password hash is verified either way). Every outcome is audited.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import PutError

from chalicelib.auth import audit, passwords, tokens, users
from chalicelib.clock import utcnow
from chalicelib.errors import TooManyRequestsError, UnauthorizedError
from chalicelib.models.auth import LoginFailures
from chalicelib.settings import get_settings

WRONG = "wrong username or password"


class InvalidCredentialsError(UnauthorizedError):
    code = "invalid_credentials"


def _subjects(username: str, ip: str | None) -> list[tuple[str, int]]:
    s = get_settings()
    found = [(f"account:{username}", s.login_max_failures)]
    if ip:
        found.append((f"ip:{ip}", s.login_max_failures_per_ip))
    return found


def _get(subject: str) -> LoginFailures | None:
    try:
        return LoginFailures.get(*LoginFailures.key(subject), consistent_read=True)
    except LoginFailures.DoesNotExist:
        return None


def locked_for(username: str, ip: str | None, now: datetime) -> float:
    """Seconds until the account or the address may try again (0: now)."""
    wait = 0.0
    for subject, _ in _subjects(username, ip):
        item = _get(subject)
        if item is not None and item.locked_until is not None and item.locked_until > now:
            wait = max(wait, (item.locked_until - now).total_seconds())
    return wait


def _count_failure(subject: str, limit: int, now: datetime) -> bool:
    """One more failure of `subject`; True when it just became locked."""
    s = get_settings()
    window = timedelta(seconds=s.login_failure_window)
    for _ in range(5):
        item = _get(subject)
        if item is None or item.window_start + window <= now:
            item = item or LoginFailures(*LoginFailures.key(subject), subject=subject)
            item.failures, item.window_start, item.locked_until = 0, now, None
        item.failures = int(item.failures or 0) + 1
        locked = item.failures >= limit
        if locked:
            item.locked_until = now + timedelta(seconds=s.login_lockout)
            item.failures, item.window_start = 0, now  # after the lockout, a fresh window
        item.expires_at = now + window + timedelta(seconds=s.login_lockout)
        try:
            item.save()
            return locked
        except PutError as exc:
            if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
    return False


def _clear(subject: str) -> None:
    item = _get(subject)
    if item is not None and item.failures:
        item.delete()


def login(username: object, password: object, ip: str | None, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    name = username.strip().lower() if isinstance(username, str) else ""
    secret = password if isinstance(password, str) else ""
    wait = locked_for(name, ip, now)
    if wait > 0:
        audit.record("auth.login", actor=name or None, outcome="failure", ip=ip, details={"reason": "locked"})
        raise TooManyRequestsError("too many failed sign-ins: try again later", retry_after=math.ceil(wait))
    user = users.get(name, consistent=True) if users.USERNAME.match(name) else None
    too_long = len(secret.encode()) > passwords.MAX_LENGTH
    ok = passwords.verify(user.password_hash if user else None, "" if too_long else secret) and not too_long
    if not ok or user is None or user.disabled:
        reason = "unknown user" if user is None else "disabled" if ok else "wrong password"
        audit.record("auth.login", actor=name or None, outcome="failure", ip=ip, details={"reason": reason})
        for subject, limit in _subjects(name, ip):
            if _count_failure(subject, limit, now):
                audit.record("auth.lockout", actor=None, target=subject, outcome="success", ip=ip)
        raise InvalidCredentialsError(WRONG)
    _clear(f"account:{name}")
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(secret)  # parameters changed: upgrade the stored hash
    user.last_login_at = now
    user.save()
    refresh = tokens.start_family(user, now)
    audit.record("auth.login", actor=name, outcome="success", ip=ip)
    return tokens.describe(user, refresh, now)
