"""The job platform's table: task state, runs, locks, unique keys, batches and migrations.

One table, items told apart by their key prefixes (`pk`/`sk`), with two generic GSIs for the listings
each kind needs (gsi1: runs by job name and time; gsi2: runs by day and time, delayed jobs by due time).
Every expiring item carries `expires_at`, DynamoDB's TTL attribute; since TTL deletes late (or, on the
emulator, never), readers check it too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pynamodb.attributes import JSONAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.models.base import TableMeta


class ByGsi1(GlobalSecondaryIndex["JobItem"]):
    class Meta:
        index_name = "gsi1"
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


class ByGsi2(GlobalSecondaryIndex["JobItem"]):
    class Meta:
        index_name = "gsi2"
        projection = AllProjection()

    gsi2pk = UnicodeAttribute(hash_key=True)
    gsi2sk = UnicodeAttribute(range_key=True)


class JobItem(Model):
    class Meta(TableMeta):
        logical_name = "jobs"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute()
    gsi1pk = UnicodeAttribute(null=True)
    gsi1sk = UnicodeAttribute(null=True)
    gsi2pk = UnicodeAttribute(null=True)
    gsi2sk = UnicodeAttribute(null=True)
    status = UnicodeAttribute(null=True)
    owner = UnicodeAttribute(null=True)  # lock and run owner token, compared in conditional writes
    data = JSONAttribute(null=True)
    # Counters, changed with ADD: run stats per job name, batch progress.
    total = NumberAttribute(null=True)
    done = NumberAttribute(null=True)
    succeeded = NumberAttribute(null=True)
    failed = NumberAttribute(null=True)
    duration_ms = NumberAttribute(null=True)
    takeovers = NumberAttribute(null=True)  # a run's deliveries that took it over after a crash
    # A shared rate limiter's tickets: slot n starts at base + n * interval (see upstreams/ratelimit.py).
    base = NumberAttribute(null=True)
    seq = NumberAttribute(null=True)
    created_at = UTCDateTimeAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    lease_until = UTCDateTimeAttribute(null=True)  # a lease that ends, unlike expires_at, without deletion
    expires_at = TTLAttribute(null=True)

    by_gsi1 = ByGsi1()
    by_gsi2 = ByGsi2()


def expiry_index(expires: datetime) -> dict[str, Any]:
    """gsi2 keys that let housekeeping find an item by the day it expires (a backstop for TTL's lag)."""
    return {"gsi2pk": f"EXPIRES#{expires:%Y-%m-%d}", "gsi2sk": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
