"""Password hashing (Argon2id, argon2-cffi) and the password policy.

The hasher's parameters come from the settings; a hash made with other parameters still verifies, and
`needs_rehash` tells the login to store a new one. An unknown user's login verifies against a dummy hash made
with the same parameters, so it costs the same time as a wrong password.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from chalicelib.errors import ValidationError
from chalicelib.settings import get_settings

MAX_LENGTH = 1024  # bytes of password worth hashing; longer is refused before any work is done


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID)


def hasher() -> PasswordHasher:
    s = get_settings()
    return _hasher(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)


@lru_cache(maxsize=4)
def _dummy(time_cost: int, memory_kib: int, parallelism: int) -> str:
    return _hasher(time_cost, memory_kib, parallelism).hash("not anybody's password")


def hash_password(password: str) -> str:
    return hasher().hash(password)


def verify(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored` (None: no such user; the same work is done against a dummy hash)."""
    s = get_settings()
    target = stored or _dummy(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)
    try:
        ok = hasher().verify(target, password)
    except (VerificationError, InvalidHashError):
        return False
    return ok and stored is not None


def needs_rehash(stored: str) -> bool:
    return hasher().check_needs_rehash(stored)


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    text = (Path(__file__).with_name("common_passwords.txt")).read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def check_policy(password: str, username: str | None = None, field: str = "password") -> None:
    """A 400 naming `field` unless the password is long enough, not too long, not common, not the username."""
    minimum = get_settings().password_min_length
    if len(password) < minimum:
        raise ValidationError(f"{field} must be at least {minimum} characters", details={"field": field})
    if len(password.encode()) > MAX_LENGTH:
        raise ValidationError(f"{field} must be at most {MAX_LENGTH} bytes", details={"field": field})
    lowered = password.lower()
    if lowered in common_passwords() or (username and username.lower() in lowered):
        raise ValidationError(f"{field} is too easy to guess: choose another", details={"field": field})
