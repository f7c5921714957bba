"""Accounts: users, refresh tokens and their families, failed-login counters, and the audit log.

The `users` table:

    a user by name                  GetItem USER#<username> / PROFILE
    users in name order             Query   listing  USERS, list_sk = username  (paginated)
    a refresh token                 GetItem REFRESH#<sha256 of the token> / TOKEN  (only its hash is stored)
    a refresh token's family        GetItem FAMILY#<id> / FAMILY  (revoked as a whole on reuse or logout)
    failed logins of an account/IP  GetItem FAILURES#account:<name> | FAILURES#ip:<address> / COUNT
    a marker (e.g. an admin exists) GetItem MARKER#<name> / MARKER

The `audit` table, append-only: one partition per UTC day (DAY#2026-11-23), sorted by time, kept 90 days.
Everything that expires carries `expires_at` (TTL) and is also checked on read: TTL deletes late.
"""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    DiscriminatorAttribute,
    JSONAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.models.base import TableMeta

USERS = "USERS"


class Listing(GlobalSecondaryIndex["UserItem"]):
    class Meta:
        index_name = "listing"
        projection = AllProjection()

    list_pk = UnicodeAttribute(hash_key=True)
    list_sk = UnicodeAttribute(range_key=True)


class UserItem(Model):
    class Meta(TableMeta):
        logical_name = "users"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    cls = DiscriminatorAttribute()
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)
    expires_at = TTLAttribute(null=True)

    listing = Listing()


class User(UserItem, discriminator="user"):
    username = UnicodeAttribute()
    email = UnicodeAttribute(null=True)
    role = UnicodeAttribute()  # "admin" or "user"
    password_hash = UnicodeAttribute()  # Argon2id, PHC string
    disabled = BooleanAttribute(default=False)
    created_at = UTCDateTimeAttribute()
    last_login_at = UTCDateTimeAttribute(null=True)
    password_changed_at = UTCDateTimeAttribute()  # access tokens issued before it are refused
    version = VersionAttribute()

    @staticmethod
    def key(username: str) -> tuple[str, str]:
        return f"USER#{username}", "PROFILE"


class RefreshToken(UserItem, discriminator="refresh"):
    family = UnicodeAttribute()
    username = UnicodeAttribute()
    issued_at = UTCDateTimeAttribute()
    valid_until = UTCDateTimeAttribute()
    spent_at = UTCDateTimeAttribute(null=True)

    @staticmethod
    def key(token_hash: str) -> tuple[str, str]:
        return f"REFRESH#{token_hash}", "TOKEN"


class TokenFamily(UserItem, discriminator="family"):
    family = UnicodeAttribute()
    username = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    revoked_at = UTCDateTimeAttribute(null=True)
    revoked_because = UnicodeAttribute(null=True)

    @staticmethod
    def key(family: str) -> tuple[str, str]:
        return f"FAMILY#{family}", "FAMILY"


class LoginFailures(UserItem, discriminator="failures"):
    subject = UnicodeAttribute()  # "account:<name>" or "ip:<address>"
    failures = NumberAttribute(default=0)
    window_start = UTCDateTimeAttribute()
    locked_until = UTCDateTimeAttribute(null=True)
    version = VersionAttribute()

    @staticmethod
    def key(subject: str) -> tuple[str, str]:
        return f"FAILURES#{subject}", "COUNT"


class Marker(UserItem, discriminator="marker"):
    name = UnicodeAttribute()
    at = UTCDateTimeAttribute()
    details = JSONAttribute(null=True)

    @staticmethod
    def key(name: str) -> tuple[str, str]:
        return f"MARKER#{name}", "MARKER"


class AuditEvent(Model):
    class Meta(TableMeta):
        logical_name = "audit"

    pk = UnicodeAttribute(hash_key=True)  # DAY#<yyyy-mm-dd>
    sk = UnicodeAttribute(range_key=True)  # <iso time>#<id>
    id = UnicodeAttribute()
    at = UTCDateTimeAttribute()
    actor = UnicodeAttribute(null=True)
    action = UnicodeAttribute()
    target = UnicodeAttribute(null=True)
    ip = UnicodeAttribute(null=True)
    outcome = UnicodeAttribute()  # "success" or "failure"
    details = JSONAttribute(default=dict)
    expires_at = TTLAttribute()
