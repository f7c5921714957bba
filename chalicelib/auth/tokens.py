"""Access tokens (JWT, HS256, 15 minutes) and refresh tokens (opaque, stored hashed, 30 days, rotated).

An access token names the user, their role and the password it was issued under (`pwd`: the time of the last
password change, in microseconds), so a password change or a disabled account ends it at once; decoding pins
the algorithm, the issuer and the token type, and requires every claim.

A refresh token is 32 random bytes; only its SHA-256 is stored. Each login starts a family; each refresh
spends the presented token and issues the next one in the same family, in one transaction conditional on the
token not being spent yet. Presenting a spent token is reuse (a stolen token, or its thief's): the whole family
is revoked, so every token in it stops working. Logout revokes the family too.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.auth import audit
from chalicelib.clock import utcnow
from chalicelib.errors import ServiceUnavailableError, UnauthorizedError
from chalicelib.models.auth import RefreshToken, TokenFamily, User
from chalicelib.models.base import connection
from chalicelib.settings import get_settings

ALGORITHM = "HS256"
ISSUER = "projectionist"


@dataclass(frozen=True)
class AccessClaims:
    username: str
    role: str
    password_stamp: int
    expires_at: int


def _secret() -> str:
    secret = get_settings().jwt_secret
    if secret is None:
        raise ServiceUnavailableError("JWT_SECRET is not set: no one can sign in")
    return secret.get_secret_value()


def password_stamp(user: User) -> int:
    return int(user.password_changed_at.timestamp() * 1_000_000)


def issue_access(user: User, now: datetime | None = None) -> tuple[str, int]:
    now = now or utcnow()
    lifetime = get_settings().access_token_minutes * 60
    claims = {
        "iss": ISSUER,
        "sub": user.username,
        "role": user.role,
        "typ": "access",
        "pwd": password_stamp(user),
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, _secret(), algorithm=ALGORITHM), lifetime


def decode_access(token: str) -> AccessClaims:
    """The claims of a valid access token, else UnauthorizedError (expired, wrongly signed, `alg: none`, ...)."""
    try:
        claims = jwt.decode(
            token,
            _secret(),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "typ", "pwd"]},
        )
    except jwt.ExpiredSignatureError:
        raise UnauthorizedError("the access token has expired: refresh it") from None
    except jwt.PyJWTError:
        raise UnauthorizedError("the access token is not valid") from None
    if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str) or not isinstance(claims["pwd"], int):
        raise UnauthorizedError("the access token is not valid")
    return AccessClaims(claims["sub"], str(claims.get("role")), claims["pwd"], int(claims["exp"]))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_refresh(username: str, family: str, now: datetime) -> tuple[str, RefreshToken]:
    token = secrets.token_urlsafe(32)
    valid_until = now + timedelta(days=get_settings().refresh_token_days)
    item = RefreshToken(
        *RefreshToken.key(_hash(token)),
        family=family,
        username=username,
        issued_at=now,
        valid_until=valid_until,
        expires_at=valid_until,
    )
    return token, item


def start_family(user: User, now: datetime | None = None) -> str:
    """A login: a new family and its first refresh token."""
    now = now or utcnow()
    family = uuid.uuid4().hex
    token, item = _new_refresh(user.username, family, now)
    valid_until = now + timedelta(days=get_settings().refresh_token_days)
    record = TokenFamily(
        *TokenFamily.key(family), family=family, username=user.username, created_at=now, expires_at=valid_until
    )
    with TransactWrite(connection=connection()) as tx:
        tx.save(record)
        tx.save(item)
    return token


def _load(token: str) -> RefreshToken:
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        raise UnauthorizedError("the refresh token is not valid")
    try:
        return RefreshToken.get(*RefreshToken.key(_hash(token)), consistent_read=True)
    except RefreshToken.DoesNotExist:
        raise UnauthorizedError("the refresh token is not valid") from None


def _family(item: RefreshToken) -> TokenFamily:
    try:
        return TokenFamily.get(*TokenFamily.key(item.family), consistent_read=True)
    except TokenFamily.DoesNotExist:
        raise UnauthorizedError("the refresh token is not valid") from None


def revoke_family(family: str, because: str, now: datetime | None = None) -> None:
    TokenFamily(*TokenFamily.key(family)).update(
        actions=[TokenFamily.revoked_at.set(now or utcnow()), TokenFamily.revoked_because.set(because)],
        condition=TokenFamily.pk.exists(),
    )


def rotate(token: str, ip: str | None = None, now: datetime | None = None) -> tuple[str, str]:
    """Spend `token` and issue the next one of its family: (username, new refresh token). Reuse of a spent
    token revokes the family (audited); a revoked family, an expired token or a vanished user is a 401."""
    now = now or utcnow()
    item = _load(token)
    family = _family(item)
    if family.revoked_at is not None:
        raise UnauthorizedError("the refresh token was revoked: sign in again")
    if item.spent_at is not None:
        revoke_family(item.family, "reuse", now)
        audit.record("auth.token_reuse", actor=item.username, outcome="failure", ip=ip, details={"family": item.family})
        raise UnauthorizedError("the refresh token was already used: every session of it is revoked; sign in again")
    if item.valid_until <= now:
        raise UnauthorizedError("the refresh token has expired: sign in again")
    new_token, new_item = _new_refresh(item.username, item.family, now)
    try:
        with TransactWrite(connection=connection()) as tx:
            tx.update(item, actions=[RefreshToken.spent_at.set(now)], condition=RefreshToken.spent_at.does_not_exist())
            tx.condition_check(TokenFamily, family.pk, family.sk, condition=TokenFamily.revoked_at.does_not_exist())
            tx.save(new_item)
    except TransactWriteError:
        # Spent (or revoked) by a concurrent call between our read and this write: the same as reuse.
        revoke_family(item.family, "reuse", now)
        audit.record("auth.token_reuse", actor=item.username, outcome="failure", ip=ip, details={"family": item.family})
        raise UnauthorizedError("the refresh token was already used: every session of it is revoked") from None
    return item.username, new_token


def logout(token: str, username: str, now: datetime | None = None) -> None:
    """Revoke the family of `token`, which must be `username`'s (another user's token is simply not valid)."""
    item = _load(token)
    if item.username != username:
        raise UnauthorizedError("the refresh token is not valid")
    revoke_family(item.family, "logout", now)


def family_of(token: str) -> str:
    return _load(token).family


def describe(user: User, refresh_token: str, now: datetime | None = None) -> dict[str, Any]:
    from chalicelib.auth.users import view

    access, lifetime = issue_access(user, now)
    return {
        "access_token": access,
        "token_type": "bearer",
        "expires_in": lifetime,
        "refresh_token": refresh_token,
        "user": view(user),
    }
