"""A rate limiter shared by every process that calls one upstream (all concurrent Lambdas, the local pollers).

It hands out tickets from one DynamoDB item: an atomic `ADD seq 1` returns the ticket's number `n` with the
era's `base` time, and the ticket's slot is `base + n * interval`. The caller waits until its slot, so calls
are spaced at least `interval` apart however many processes share the item, at the cost of one write per
call. When the newest ticket's slot is already in the past (the upstream was idle), whoever notices starts
a new era at `now` with a conditional write (only if no ticket was taken after its own: those slots are still
ahead), so idle time never turns into a burst and two eras never run side by side.

A ticket taken up to `LATE` after its slot is used at once (taking it costs a round trip to DynamoDB);
later than that, the caller starts a new era instead, holding its first slot (two writes for a call after
an idle spell, one while busy). A caller that wakes up more than `LATE` after its slot (a loaded machine
ran it late) takes a new ticket rather than go with the callers of later slots. So every call goes out
within `LATE` of its slot, and `interval` is `1 / rate` stretched by headroom for that and for `JITTER`,
what may pass between a call going out and reaching the upstream: the calls that reach it within any one
second, however placed, are those whose slots fall in 1 + LATE + JITTER seconds, so headroom = LATE +
JITTER keeps them at `rate` or fewer. (With 15%, callers going however late they woke up, and a new era
started by any caller late for its slot while later tickets were out, a two-worker CI run once saw 23 calls
of a 20/s limit within one second; a test run beside two busy loops, 31.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pynamodb.exceptions import UpdateError

from chalicelib.jobs.retry import RetryLaterError
from chalicelib.models.jobs import JobItem

LATE = 0.05  # seconds
JITTER = 0.2  # seconds a caller may get to run after its slot, on a loaded machine


@dataclass
class RateLimiter:
    name: str
    rate: float  # calls per second
    headroom: float = LATE + JITTER
    # Longer than this, and the caller is told to come back later instead of waiting (a job is re-sent).
    max_wait: float = 30.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    interval: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 10_000:
            raise ValueError("rate must be 0..10000 calls per second")
        self.interval = (1 + self.headroom) / self.rate

    def _item(self) -> JobItem:
        return JobItem(f"RATE#{self.name}", "RATE")

    def acquire(self) -> float:
        """Wait for this call's slot; returns the seconds waited. Raises RetryLaterError past `max_wait`."""
        waited = 0.0
        for _ in range(20):
            item = self._item()
            item.update(actions=[JobItem.seq.add(1), JobItem.kind.set("ratelimit")])
            now = self.clock()
            old_base = float(item.base) if item.base is not None else None
            ticket = int(item.seq or 1)
            slot = (old_base or 0.0) + (ticket - 1) * self.interval
            if old_base is None or slot < now - LATE:
                # Idle since (or never used), unless someone took a ticket after this one: then their slot is
                # still ahead and this caller takes a new ticket behind it. Else start a new era at now, holding
                # its first slot; another caller who started it first wins, and this one takes a ticket in theirs.
                if self._new_era(old_base, ticket, now):
                    return waited
                continue
            wait = slot - now
            if wait > self.max_wait:
                raise RetryLaterError(f"{self.name} rate limit: next slot in {wait:.1f}s", retry_after=wait)
            if wait > 0:
                self.sleep(wait)
                waited += wait
                if self.clock() > slot + LATE:
                    continue  # woke up too late for this slot: the next caller's is near, take a new ticket
            return waited
        raise RetryLaterError(f"{self.name} rate limit: too much contention", retry_after=1.0)

    def _new_era(self, old_base: float | None, ticket: int, now: float) -> bool:
        """Set the era to start now with this caller holding ticket 1 (its slot is now). False if the era changed
        or a ticket was taken after `ticket`."""
        if old_base is None:
            condition = JobItem.base.does_not_exist()
        else:
            condition = (JobItem.base == old_base) & (JobItem.seq == ticket)
        try:
            self._item().update(actions=[JobItem.base.set(now), JobItem.seq.set(1)], condition=condition)
            return True
        except UpdateError as exc:
            if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
            return False
