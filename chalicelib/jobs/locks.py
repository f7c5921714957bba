"""Keyed locks: a DynamoDB lease with an owner token and an expiry, renewed while a long job runs.

This is how "one at a time" is done, since Lambda's MaximumConcurrency cannot go below 2. A holder that
dies simply stops renewing; once the lease expires the next job takes the lock over.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import DeleteError, PutError, UpdateError

from chalicelib.clock import utcnow
from chalicelib.models.jobs import JobItem, expiry_index
from chalicelib.observability import logger


def _key(name: str) -> tuple[str, str]:
    return f"LOCK#{name}", "LOCK"


def _conditional_failed(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def _lease_ends(now: datetime, lease: float) -> dict[str, Any]:
    """The lease's end, to the microsecond (`lease_until`, what the conditions compare), and the item's TTL
    (`expires_at`, whole seconds as DynamoDB's TTL wants them, rounded up so it never ends a live lease)."""
    until = now + timedelta(seconds=lease)
    expires = until.replace(microsecond=0) + timedelta(seconds=1)
    return {"lease_until": until, "expires_at": expires, **expiry_index(expires)}


def acquire(name: str, owner: str, lease: float, now: datetime | None = None) -> bool:
    """Take the lock if it is free, its lease has ended, or it is already ours."""
    now = now or utcnow()
    pk, sk = _key(name)
    item = JobItem(pk, sk, kind="lock", owner=owner, created_at=now, **_lease_ends(now, lease))
    try:
        item.save(condition=JobItem.pk.does_not_exist() | (JobItem.lease_until <= now) | (JobItem.owner == owner))
        return True
    except PutError as exc:
        if _conditional_failed(exc):
            return False
        raise


def renew(name: str, owner: str, lease: float, now: datetime | None = None) -> bool:
    now = now or utcnow()
    ends = _lease_ends(now, lease)
    try:
        JobItem(*_key(name)).update(
            actions=[getattr(JobItem, attribute).set(value) for attribute, value in ends.items()],
            condition=JobItem.owner == owner,
        )
        return True
    except UpdateError as exc:
        if _conditional_failed(exc):
            return False
        raise


def release(name: str, owner: str) -> bool:
    try:
        JobItem(*_key(name)).delete(condition=JobItem.owner == owner)
        return True
    except DeleteError as exc:
        if _conditional_failed(exc):
            return False
        raise


class Renewer:
    """Renews a held lease every third of its length until stopped (for jobs that outlive one lease)."""

    def __init__(self, name: str, owner: str, lease: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(name, owner, lease), name=f"lock-{name}", daemon=True)
        self._thread.start()

    def _run(self, name: str, owner: str, lease: float) -> None:
        while not self._stop.wait(lease / 3):
            try:
                if not renew(name, owner, lease):
                    logger.warning("lost lock %s: another owner took it over", name)
                    return
            except Exception:
                logger.exception("could not renew lock %s", name)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
