"""The job platform's table: task state, runs, locks, unique keys, batches and migrations.

One table, items told apart by their key prefixes (`pk`/`sk`), with one generic GSI for the listings
each kind needs (runs by job and time, tasks by next due time, ...). Every expiring item carries
`expires_at`, DynamoDB's TTL attribute; since TTL deletes late (or, on the emulator, never), readers check
it too.
"""

from __future__ import annotations

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


class JobItem(Model):
    class Meta(TableMeta):
        logical_name = "jobs"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute()
    gsi1pk = UnicodeAttribute(null=True)
    gsi1sk = UnicodeAttribute(null=True)
    status = UnicodeAttribute(null=True)
    data = JSONAttribute(null=True)
    counter = NumberAttribute(null=True)
    created_at = UTCDateTimeAttribute(null=True)
    updated_at = UTCDateTimeAttribute(null=True)
    expires_at = TTLAttribute(null=True)

    by_gsi1 = ByGsi1()
