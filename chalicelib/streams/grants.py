"""Stream grants: what the API gives a player and the streamer checks before it starts anything.

A grant names a source (its info-hash), the file to play (an index, or None for the main video), the user
and an expiry; it is signed with HMAC-SHA256 under STREAM_SIGNING_KEY, which only the API and the streamer
know. The token is `<payload>.<signature>`, both base64url without padding; the payload is compact JSON.
A token that does not parse, is signed with another key, or has expired is refused with a typed error
(401 for a missing or malformed one, 403 for a forged or expired one), before any torrent work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from chalicelib.errors import ForbiddenError, ServiceUnavailableError, UnauthorizedError
from chalicelib.settings import get_settings

DEFAULT_TTL = 6 * 3600  # seconds: long enough to watch a film, with pauses


@dataclass(frozen=True)
class Grant:
    infohash: str
    file_index: int | None
    user: str
    expires_at: int  # unix seconds

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _key(key: bytes | None) -> bytes:
    if key is not None:
        return key
    secret = get_settings().stream_signing_key
    if secret is None:
        raise ServiceUnavailableError("STREAM_SIGNING_KEY is not set: streams cannot be granted or checked")
    return secret.get_secret_value().encode()


def sign(grant: Grant, key: bytes | None = None) -> str:
    payload = json.dumps(
        {"s": grant.infohash, "f": grant.file_index, "u": grant.user, "e": grant.expires_at}, separators=(",", ":")
    ).encode()
    signature = hmac.new(_key(key), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def issue(
    infohash: str, user: str, file_index: int | None = None, ttl: int = DEFAULT_TTL, key: bytes | None = None
) -> str:
    return sign(Grant(infohash.lower(), file_index, user, int(time.time()) + ttl), key)


def verify(token: str | None, key: bytes | None = None, now: float | None = None) -> Grant:
    """The grant a token carries, or UnauthorizedError (none, malformed) / ForbiddenError (forged, expired)."""
    if not token:
        raise UnauthorizedError("a stream needs a grant token")
    payload_part, dot, signature_part = token.partition(".")
    if not dot:
        raise UnauthorizedError("the stream token is malformed")
    try:
        payload, signature = _unb64(payload_part), _unb64(signature_part)
    except (ValueError, TypeError):
        raise UnauthorizedError("the stream token is malformed") from None
    if not signature or not hmac.compare_digest(hmac.new(_key(key), payload, hashlib.sha256).digest(), signature):
        raise ForbiddenError("the stream token is not one we signed")
    try:
        data = json.loads(payload)
        grant = Grant(
            str(data["s"]), data["f"] if data["f"] is None else int(data["f"]), str(data["u"]), int(data["e"])
        )
    except (ValueError, KeyError, TypeError):
        raise UnauthorizedError("the stream token is malformed") from None
    if (now if now is not None else time.time()) >= grant.expires_at:
        raise ForbiddenError("the stream token has expired")
    return grant
