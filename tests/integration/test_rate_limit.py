"""The TMDB rate limit holds across concurrent workers: it is shared through DynamoDB, not kept per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from chalicelib.settings import get_settings, reset_settings
from chalicelib.upstreams import tmdb
from infra.local.runtime import LocalRuntime
from infra.local.upstreams.tmdb import SampleTMDB

RATE = 20
WORKERS = 8
REQUESTS_EACH = 12
SEED_MOVIES = [10331, 4808, 3085, 653, 19, 961, 10098, 20367, 10513, 24452, 10378, 9761]


def busiest_second(times: list[float]) -> int:
    """The most requests in any window of one second, wherever it starts."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_eight_concurrent_workers_never_exceed_the_configured_rate(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    os.environ["TMDB_RATE_LIMIT"] = str(RATE)
    reset_settings()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        client = tmdb.build(get_settings())  # a client of its own, as each Lambda has
        try:
            for i in range(REQUESTS_EACH):
                client.movie(SEED_MOVIES[(n + i) % len(SEED_MOVIES)], max_age=0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    sample_tmdb.reset_requests()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    arrivals = [r.at for r in sample_tmdb.served(r"^/3/movie/\d+$")]
    assert len(arrivals) == WORKERS * REQUESTS_EACH
    busiest = busiest_second(arrivals)
    print(f"\n{len(arrivals)} requests from {WORKERS} workers, busiest second: {busiest} (limit {RATE})")
    assert busiest <= RATE
    assert busiest >= RATE // 2  # and it does let the traffic through near the rate, not a trickle


def test_busiest_second_counts_any_window() -> None:
    assert busiest_second([0.0, 0.5, 0.99, 1.0, 1.5]) == 3  # [0.5, 1.5) holds 0.5, 0.99, 1.0
    assert busiest_second([0.0, 1.0, 2.0]) == 1
    assert busiest_second([]) == 0
