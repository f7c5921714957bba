"""Upstream responses cached with a TTL (TMDB's, mostly), checked on read since DynamoDB's TTL deletes late."""

from __future__ import annotations

from pynamodb.attributes import BinaryAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from chalicelib.models.base import TableMeta


class CachedResponse(Model):
    class Meta(TableMeta):
        logical_name = "cache"

    key = UnicodeAttribute(hash_key=True)  # "<upstream>:<sha256 of path and sorted query>"
    url = UnicodeAttribute()  # path and query, without credentials: for people reading the table
    status = NumberAttribute()  # 200, or 404 (a cached "not found")
    body = BinaryAttribute(null=True, legacy_encoding=False)  # zlib-compressed JSON
    fetched_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()
