"""A rate limiter shared by every process that calls one upstream (all concurrent Lambdas, the local pollers).

It hands out tickets from one DynamoDB item: an atomic `ADD seq 1` returns the ticket's number `n` with the
era's `base` time, and the ticket's slot is `base + n * interval`. The caller waits until its slot, so calls
are spaced at least `interval` apart however many processes share the item, at the cost of one write per
call. When the newest ticket's slot is already in the past (the upstream was idle), whoever notices starts
a new era at `now` with a conditional write, so idle time never turns into a burst.

A ticket taken up to `LATE` after its slot is used at once (taking it costs a round trip to DynamoDB);
later than that, the caller starts a new era instead, holding its first slot (two writes for a call after
an idle spell, one while busy). So a call goes out within `LATE` of its slot, and
`interval` is `1 / rate` stretched by enough headroom (15%) that no window of one second, however placed,
sees more than `rate` calls go out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pynamodb.exceptions import UpdateError

from chalicelib.jobs.retry import RetryLaterError
from chalicelib.models.jobs import JobItem

LATE = 0.1  # seconds


@dataclass
class RateLimiter:
    name: str
    rate: float  # calls per second
    headroom: float = 0.15
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
        for _ in range(20):
            item = self._item()
            item.update(actions=[JobItem.seq.add(1), JobItem.kind.set("ratelimit")])
            now = self.clock()
            old_base = float(item.base) if item.base is not None else None
            slot = (old_base or 0.0) + (int(item.seq or 1) - 1) * self.interval
            if old_base is None or slot < now - LATE:
                # Idle since (or never used): start a new era at now, holding its first slot; another caller
                # who started it first wins, and this one takes a ticket in theirs.
                if self._new_era(old_base, now):
                    return 0.0
                continue
            wait = slot - now
            if wait > self.max_wait:
                raise RetryLaterError(f"{self.name} rate limit: next slot in {wait:.1f}s", retry_after=wait)
            if wait > 0:
                self.sleep(wait)
            return max(0.0, wait)
        raise RetryLaterError(f"{self.name} rate limit: too much contention", retry_after=1.0)

    def _new_era(self, old_base: float | None, now: float) -> bool:
        """Set the era to start now with this caller holding ticket 1 (its slot is now). False if it changed."""
        condition = JobItem.base.does_not_exist() if old_base is None else JobItem.base == old_base
        try:
            self._item().update(actions=[JobItem.base.set(now), JobItem.seq.set(1)], condition=condition)
            return True
        except UpdateError as exc:
            if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
            return False
