"""Tracker scraping cost: N whitelisted infohashes scraped over UDP (BEP 15) from Debian's opentracker on
loopback, 74 infohashes per scrape request, next to a baseline measured in the same run: the same client asking
one infohash per request. Prints infohashes per second and requests per 1,000 infohashes, medians of runs.

Each run is one `Scraper.scrape_tracker` call with a fresh connection cache, so it pays for its connect too.
"Pipelined" keeps `--window` scrape requests in flight on one socket and connection id; "sequential" waits for
each answer before sending the next request.

    python benchmarks/scrape.py [--infohashes 10000] [--runs 5] [--window 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chalicelib.upstreams.trackers import UDP_MAX_PER_REQUEST, ConnectionCache, Scraper
from tests.integration.tracker_fixtures import OpenTracker, random_infohashes, start_opentracker

REQUEST_RATIO_TARGET = 70.0
RATE_TARGET = 500_000.0


@dataclass
class Measure:
    label: str
    batch: int
    window: int
    rates: list[float]
    requests: list[int]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def per_thousand(self, n: int) -> float:
        return statistics.median(self.requests) / n * 1000


def run(tracker: OpenTracker, hashes: list[str], batch: int, window: int) -> tuple[float, int]:
    scraper = Scraper(timeout=2.0, max_retries=3, window=window, udp_batch_size=batch, connections=ConnectionCache())
    started = time.perf_counter()
    results = scraper.scrape_tracker(tracker.udp_url, hashes)
    elapsed = time.perf_counter() - started
    assert len(results) == len(hashes)
    if scraper.stats.udp_retransmissions:
        print(f"  (note: {scraper.stats.udp_retransmissions} retransmissions at batch {batch}, window {window})")
    return len(hashes) / elapsed, scraper.stats.udp_connects + scraper.stats.udp_scrapes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--infohashes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=int, default=8, help="scrape requests in flight when pipelined")
    args = parser.parse_args()
    n, window = args.infohashes, args.window

    hashes = random_infohashes(n)
    measures = [
        Measure(f"1 per request, pipelined x{window}", 1, window, [], []),
        Measure(f"{UDP_MAX_PER_REQUEST} per request, sequential", UDP_MAX_PER_REQUEST, 1, [], []),
        Measure(f"{UDP_MAX_PER_REQUEST} per request, pipelined x{window}", UDP_MAX_PER_REQUEST, window, [], []),
    ]
    with start_opentracker(whitelist=hashes) as tracker:
        run(tracker, hashes[:1000], UDP_MAX_PER_REQUEST, window)  # warm up
        for _ in range(args.runs):
            for measure in measures:  # interleaved, so that load from elsewhere hits every variant alike
                rate, requests = run(tracker, hashes, measure.batch, measure.window)
                measure.rates.append(rate)
                measure.requests.append(requests)

    baseline, sequential, pipelined = measures
    print(f"UDP scrape of {n} whitelisted infohashes, opentracker on loopback, {args.runs} runs, medians")
    print(f"{'':36}{'infohash/s':>12}{'ratio':>8}{'req/1000':>10}{'min..max infohash/s':>24}")
    for m in measures:
        spread = f"{min(m.rates):,.0f}..{max(m.rates):,.0f}"
        print(f"{m.label:36}{m.rate:>12,.0f}{m.rate / baseline.rate:>8.1f}{m.per_thousand(n):>10.1f}{spread:>24}")
    fewer = baseline.per_thousand(n) / pipelined.per_thousand(n)
    best = max(sequential.rate, pipelined.rate)
    print("requests include each run's one connect")
    verdict = "PASS" if fewer >= REQUEST_RATIO_TARGET else "FAIL"
    print(f"requests vs one per request: {fewer:.1f}x fewer (target >= {REQUEST_RATIO_TARGET:.0f}x) {verdict}")
    verdict = "PASS" if pipelined.rate >= RATE_TARGET else "FAIL"
    print(f"pipelined rate: {pipelined.rate:,.0f} infohash/s (target >= {RATE_TARGET:,.0f}) {verdict}")
    print(f"sequential rate: {sequential.rate:,.0f} infohash/s (best of the two: {best:,.0f})")


if __name__ == "__main__":
    main()
