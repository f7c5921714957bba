"""Backoff: delays grow exponentially with full jitter, respect the cap and Retry-After."""

from __future__ import annotations

import itertools
import statistics

import pytest

from chalicelib.errors import NotFoundError, UpstreamError
from chalicelib.jobs.retry import Retry, RetryLaterError, is_permanent


def samples(retry: Retry, attempt: int, n: int = 400) -> list[float]:
    return [retry.delay_after(attempt) for _ in range(n)]


def test_delays_grow_exponentially_with_full_jitter() -> None:
    retry = Retry(max_attempts=20, base=1.0, cap=10_000)
    for attempt in range(1, 9):
        window = 2 ** (attempt - 1)
        delays = samples(retry, attempt)
        assert all(0 <= d <= window for d in delays)  # full jitter: anywhere in [0, window]
        assert statistics.mean(delays) == pytest.approx(window / 2, rel=0.2)
        assert max(delays) > 0.8 * window and min(delays) < 0.2 * window
    means = [statistics.mean(samples(retry, a)) for a in (2, 4, 6, 8)]
    assert all(later > 3 * earlier for earlier, later in itertools.pairwise(means))


def test_delays_never_exceed_the_cap() -> None:
    retry = Retry(max_attempts=50, base=5.0, cap=60.0)
    delays = [d for attempt in range(1, 50) for d in samples(retry, attempt, 50)]
    assert max(delays) <= 60.0
    assert max(samples(retry, 30)) > 45  # late attempts use the whole capped window


def test_retry_after_is_the_next_delay_within_the_cap() -> None:
    retry = Retry(max_attempts=5, base=1.0, cap=600.0)
    assert retry.delay_after(1, RetryLaterError("429", retry_after=120)) == 120
    assert retry.delay_after(4, RetryLaterError("429", retry_after=7200)) == 600


def test_permanent_errors_and_the_last_attempt_stop_retries() -> None:
    retry = Retry(max_attempts=3)
    assert retry.should_retry(1, UpstreamError("502 from TMDB"))
    assert retry.should_retry(2, RuntimeError("flaky"))
    assert not retry.should_retry(3, RuntimeError("flaky"))
    assert not retry.should_retry(1, NotFoundError("no such movie"))
    assert is_permanent(NotFoundError("x")) and not is_permanent(TimeoutError())


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base": 0}, {"base": 10, "cap": 5}, {"cap": 10**7}])
def test_a_nonsensical_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Retry(**kwargs)  # type: ignore[arg-type]
