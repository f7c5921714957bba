"""Stream grants: signed, expiring, and refused with the right error when anything is off."""

from __future__ import annotations

import time

import pytest

from chalicelib.errors import ForbiddenError, UnauthorizedError
from chalicelib.streams import grants

KEY = b"k" * 32
HASH = "ab" * 20


def test_a_grant_round_trips() -> None:
    token = grants.issue(HASH.upper(), "alice", file_index=2, ttl=60, key=KEY)
    grant = grants.verify(token, key=KEY)
    assert (grant.infohash, grant.file_index, grant.user) == (HASH, 2, "alice")
    assert time.time() < grant.expires_at <= time.time() + 60


@pytest.mark.parametrize(
    "token, error",
    [
        (None, UnauthorizedError),
        ("", UnauthorizedError),
        ("not-a-token", UnauthorizedError),  # no signature at all
        ("!!!.???", UnauthorizedError),
    ],
)
def test_missing_or_malformed_tokens_are_refused(token: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        grants.verify(token, key=KEY)


def test_a_token_signed_with_another_key_or_altered_is_forged() -> None:
    token = grants.issue(HASH, "alice", key=KEY)
    with pytest.raises(ForbiddenError, match="not one we signed"):
        grants.verify(token, key=b"x" * 32)
    _, signature = token.split(".")
    other = grants.issue("cd" * 20, "mallory", key=b"x" * 32).split(".")[0]
    with pytest.raises(ForbiddenError):
        grants.verify(f"{other}.{signature}", key=KEY)  # someone else's payload under this signature


def test_an_expired_token_is_refused() -> None:
    token = grants.sign(grants.Grant(HASH, None, "alice", int(time.time()) - 1), key=KEY)
    with pytest.raises(ForbiddenError, match="expired"):
        grants.verify(token, key=KEY)
    fresh = grants.issue(HASH, "alice", ttl=100, key=KEY)
    with pytest.raises(ForbiddenError, match="expired"):
        grants.verify(fresh, key=KEY, now=time.time() + 101)
