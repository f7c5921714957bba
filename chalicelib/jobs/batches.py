"""Batches: fan out N jobs and run a continuation exactly once when all N have ended.

Each child's final run is counted in the same transaction that records it (see `runs.finish`), so a
duplicate delivery is never counted twice. The child that finds the count complete claims the continuation
with a conditional write; only one claim succeeds.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib.clock import utcnow
from chalicelib.errors import NotFoundError, ValidationError
from chalicelib.jobs.envelope import Envelope, JobRequest
from chalicelib.models.jobs import JobItem, expiry_index

BATCH_RETENTION = timedelta(days=60)
MAX_BATCH = 10_000


def _key(batch_id: str) -> tuple[str, str]:
    return f"BATCH#{batch_id}", "BATCH"


def start(
    children: list[JobRequest],
    then: JobRequest | None = None,
    *,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> tuple[str, list[Envelope]]:
    """Record a batch and return its id and its children's envelopes (the caller sends them)."""
    from chalicelib.jobs import enqueue

    if not 1 <= len(children) <= MAX_BATCH:
        raise ValidationError(f"a batch holds 1..{MAX_BATCH} jobs")
    now = now or utcnow()
    batch_id = uuid.uuid4().hex
    correlation_id = correlation_id or batch_id
    envelopes = [enqueue.build(c.name, c.args, correlation_id=correlation_id, batch_id=batch_id) for c in children]
    if then is not None:
        enqueue.build(then.name, then.args)  # validate now, not when the last child ends
    JobItem(
        *_key(batch_id),
        kind="batch",
        status="running",
        total=len(children),
        done=0,
        succeeded=0,
        failed=0,
        created_at=now,
        updated_at=now,
        expires_at=now + BATCH_RETENTION,
        **expiry_index(now + BATCH_RETENTION),
        data={"then": then.model_dump() if then else None, "correlation_id": correlation_id},
    ).save()
    return batch_id, envelopes


def enqueue_batch(children: list[JobRequest], then: JobRequest | None = None, **kwargs: Any) -> str:
    from chalicelib.jobs import enqueue

    batch_id, envelopes = start(children, then, **kwargs)
    enqueue.enqueue_envelopes(envelopes)
    return batch_id


def child_ended(batch_id: str, now: datetime | None = None) -> bool:
    """Called after a child's final run was counted. Sends the continuation if this completed the batch."""
    from chalicelib.jobs import enqueue
    from chalicelib.jobs.dispatch import derived_id

    now = now or utcnow()
    try:
        batch = JobItem.get(*_key(batch_id), consistent_read=True)
    except JobItem.DoesNotExist:
        return False
    if (batch.done or 0) < (batch.total or 0) or batch.status != "running":
        return False
    status = "succeeded" if not batch.failed else "completed_with_failures"
    try:
        batch.update(
            actions=[JobItem.status.set(status), JobItem.updated_at.set(now)],
            condition=JobItem.status == "running",
        )
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            return False  # another child got here first
        raise
    then = (batch.data or {}).get("then")
    if then:
        follower = JobRequest.model_validate(then)
        envelope = enqueue.build(
            follower.name,
            follower.args,
            correlation_id=(batch.data or {}).get("correlation_id"),
            previous_result={"batch_id": batch_id, "succeeded": batch.succeeded, "failed": batch.failed},
        ).model_copy(update={"id": derived_id(batch_id, "then")})
        enqueue.send([envelope])
    return True


def get(batch_id: str) -> dict[str, Any]:
    try:
        batch = JobItem.get(*_key(batch_id), consistent_read=True)
    except JobItem.DoesNotExist:
        raise NotFoundError(f"no batch {batch_id!r}") from None
    return {
        "batch_id": batch_id,
        "status": batch.status,
        "total": int(batch.total or 0),
        "done": int(batch.done or 0),
        "succeeded": int(batch.succeeded or 0),
        "failed": int(batch.failed or 0),
        "pending": int((batch.total or 0) - (batch.done or 0)),
        "created_at": batch.created_at.isoformat() if batch.created_at else None,
        "updated_at": batch.updated_at.isoformat() if batch.updated_at else None,
        "then": (batch.data or {}).get("then"),
    }
