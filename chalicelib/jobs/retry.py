"""Retry policy for jobs: exponential backoff with full jitter and a cap, honouring Retry-After.

The delay itself comes from tenacity's `wait_random_exponential` ("Full Jitter"); what this module adds is
the job-level policy: how many attempts, which errors are permanent, and an upstream's Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from tenacity import wait_random_exponential

from chalicelib.errors import ProjectionistError


class RetryLaterError(ProjectionistError):
    """Raised by a job (or an upstream client) that was told when to come back, e.g. HTTP 429 Retry-After."""

    status_code = 429
    code = "retry_later"
    retry_after: float

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=max(0.0, float(retry_after)))


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 5
    base: float = 2.0  # seconds: the first retry waits up to `base`, the n-th up to base * 2^(n-1)
    cap: float = 3600.0  # seconds: no retry waits longer
    _wait: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 100:
            raise ValueError("max_attempts must be 1..100")
        if not 0 < self.base <= self.cap:
            raise ValueError("base must be > 0 and <= cap")
        if self.cap > 7 * 24 * 3600:
            raise ValueError("cap must be at most 7 days")
        object.__setattr__(self, "_wait", wait_random_exponential(multiplier=self.base, max=self.cap))

    def delay_after(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait before the attempt after `attempt` (1-based) failed with `error`."""
        if isinstance(error, RetryLaterError):
            return min(error.retry_after, self.cap)
        return float(self._wait(SimpleNamespace(attempt_number=attempt)))

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        return attempt < self.max_attempts and not is_permanent(error)


def is_permanent(error: BaseException) -> bool:
    """Permanent errors fail at once: bad input, an unknown job, a 4xx an upstream will repeat."""
    return bool(getattr(error, "permanent", False))
