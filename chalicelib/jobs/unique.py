"""Unique jobs: a fingerprint held while a job is queued or running.

The fingerprint is written with a conditional put and a TTL. A duplicate enqueue finds it and gets the
holder's job id back. It is released when the job ends and expires by itself, so a crash never leaves a
job blocked forever; an expired fingerprint counts as free even before DynamoDB's TTL deletes it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pynamodb.exceptions import DeleteError, PutError

from chalicelib.clock import utcnow
from chalicelib.models.jobs import JobItem, expiry_index


def _key(fingerprint: str) -> tuple[str, str]:
    return f"UNIQUE#{fingerprint}", "UNIQUE"


def _conditional_failed(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def claim(fingerprint: str, job_id: str, ttl: float, now: datetime | None = None) -> str | None:
    """Hold `fingerprint` for `job_id`. Returns None when claimed, else the id of the job holding it."""
    now = now or utcnow()
    pk, sk = _key(fingerprint)
    for _ in range(3):
        expires = now + timedelta(seconds=ttl)
        item = JobItem(pk, sk, kind="unique", owner=job_id, created_at=now, expires_at=expires, **expiry_index(expires))
        try:
            item.save(condition=JobItem.pk.does_not_exist() | (JobItem.expires_at <= now))
            return None
        except PutError as exc:
            if not _conditional_failed(exc):
                raise
        try:
            holder = JobItem.get(pk, sk, consistent_read=True)
        except JobItem.DoesNotExist:
            continue  # released between our put and our read: try again
        if holder.expires_at is not None and holder.expires_at <= now:
            continue  # expired between our put and our read: try again
        return holder.owner or ""
    return holder.owner or ""


def release(fingerprint: str, job_id: str) -> bool:
    """Release the fingerprint if `job_id` still holds it."""
    pk, sk = _key(fingerprint)
    try:
        JobItem(pk, sk).delete(condition=JobItem.owner == job_id)
        return True
    except DeleteError as exc:
        if _conditional_failed(exc):
            return False
        raise


def holder(fingerprint: str, now: datetime | None = None) -> str | None:
    """The job id holding the fingerprint, or None (expired counts as free)."""
    now = now or utcnow()
    try:
        item = JobItem.get(*_key(fingerprint), consistent_read=True)
    except JobItem.DoesNotExist:
        return None
    if item.expires_at is not None and item.expires_at <= now:
        return None
    return item.owner
