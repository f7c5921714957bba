"""Enqueue jobs: validate, claim unique fingerprints, and send envelopes in SendMessageBatch calls of 10.

Delays up to 15 minutes ride on SQS DelaySeconds. Longer ones are parked (see `delays.py`) and sent when
due, so they work the same on AWS and under `make run`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib import aws
from chalicelib.clock import utcnow
from chalicelib.errors import ServiceUnavailableError
from chalicelib.jobs import delays, unique
from chalicelib.jobs.envelope import Envelope, JobRequest
from chalicelib.jobs.queues import get_queue
from chalicelib.jobs.registry import Registry, registry

MAX_SQS_DELAY = 900


@dataclass(frozen=True)
class Enqueued:
    job_id: str
    sent: bool  # False when a unique job was already queued or running: job_id is that job's


def build(
    name: str,
    args: dict[str, Any] | None = None,
    *,
    correlation_id: str | None = None,
    then: Iterable[JobRequest] = (),
    batch_id: str | None = None,
    previous_result: Any = None,
    jobs: Registry = registry,
) -> Envelope:
    """A validated envelope for a new job (unknown names and invalid arguments fail here, at once)."""
    definition = jobs.get(name)
    canonical = definition.validate_args(args)
    for follower in then:
        jobs.get(follower.name).validate_args(follower.args)
    extra: dict[str, Any] = {}
    if correlation_id:
        extra["correlation_id"] = correlation_id
    envelope = Envelope(
        name=name, args=canonical, then=list(then), batch_id=batch_id, previous_result=previous_result, **extra
    )
    if definition.unique is not None:
        envelope = envelope.model_copy(update={"unique_key": definition.unique.fingerprint(name, canonical)})
    return envelope


def enqueue(
    name: str,
    args: dict[str, Any] | None = None,
    *,
    delay: float = 0,
    correlation_id: str | None = None,
    then: Iterable[JobRequest] = (),
    jobs: Registry = registry,
    now: datetime | None = None,
) -> Enqueued:
    envelope = build(name, args, correlation_id=correlation_id, then=then, jobs=jobs)
    return enqueue_envelopes([envelope], delay=delay, jobs=jobs, now=now)[0]


def enqueue_envelopes(
    envelopes: list[Envelope],
    *,
    delay: float = 0,
    jobs: Registry = registry,
    unique_ttl: float | None = None,
    now: datetime | None = None,
) -> list[Enqueued]:
    """Send new jobs, honouring uniqueness: a duplicate of a queued or running unique job sends nothing."""
    now = now or utcnow()
    results: list[Enqueued | None] = [None] * len(envelopes)
    to_send: list[tuple[int, Envelope]] = []
    for index, envelope in enumerate(envelopes):
        definition = jobs.get(envelope.name)
        ttl = unique_ttl or (definition.unique.ttl if definition.unique else None)
        if envelope.unique_key and ttl:
            holder = unique.claim(envelope.unique_key, envelope.id, ttl, now=now)
            if holder is not None:
                results[index] = Enqueued(job_id=holder, sent=False)
                continue
        to_send.append((index, envelope))
    try:
        send([e for _, e in to_send], delay=delay, jobs=jobs, now=now)
    except Exception:
        for _, envelope in to_send:  # nothing was queued for them: free their fingerprints
            if envelope.unique_key:
                unique.release(envelope.unique_key, envelope.id)
        raise
    for index, envelope in to_send:
        results[index] = Enqueued(job_id=envelope.id, sent=True)
    return [r for r in results if r is not None]


def send(
    envelopes: list[Envelope], *, delay: float = 0, jobs: Registry = registry, now: datetime | None = None
) -> None:
    """Put envelopes on their queues (grouped by queue, 10 per request), or park them if the delay is long."""
    if not envelopes:
        return
    if delay > MAX_SQS_DELAY:
        delays.park(envelopes, due=(now or utcnow()).timestamp() + delay, queue_of=lambda e: jobs.get(e.name).queue)
        return
    by_queue: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in envelopes:
        by_queue[jobs.get(envelope.name).queue].append(envelope)
    for queue, batch in by_queue.items():
        send_to_queue(queue, [e.to_body() for e in batch], delay=math.ceil(delay))


def send_spread(envelopes: list[Envelope], over: float, *, jobs: Registry = registry) -> None:
    """Send new jobs with delays spread evenly over `over` seconds (at most 15 minutes), e.g. so that a
    planner's batch reaches a rate-limited upstream at the pace the budget allows, not all at once."""
    step = min(over, MAX_SQS_DELAY) / max(1, len(envelopes))
    by_queue: dict[str, list[tuple[Envelope, int]]] = defaultdict(list)
    for index, envelope in enumerate(envelopes):
        by_queue[jobs.get(envelope.name).queue].append((envelope, int(index * step)))
    for queue, batch in by_queue.items():
        send_to_queue(queue, [e.to_body() for e, _ in batch], delays=[d for _, d in batch])


def send_to_queue(
    queue: str, bodies: list[str], *, delay: int = 0, delays: list[int] | None = None, dlq: bool = False
) -> None:
    spec = get_queue(queue)
    url = aws.queue_url(spec.dlq_name() if dlq else spec.queue_name())
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        entries: list[dict[str, Any]] = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)]
        if (delay or delays) and not spec.fifo:
            for i, entry in enumerate(entries):
                entry["DelaySeconds"] = min(delays[start + i] if delays else delay, MAX_SQS_DELAY)
        remaining = entries
        for _ in range(3):  # SendMessageBatch can fail some entries; resend just those
            response = aws.sqs().send_message_batch(QueueUrl=url, Entries=remaining)
            failed = {f["Id"] for f in response.get("Failed", [])}
            remaining = [e for e in remaining if e["Id"] in failed]
            if not remaining:
                break
        if remaining:
            raise ServiceUnavailableError(f"SQS refused {len(remaining)} messages for queue {queue}")
