"""Source health end to end: the stats planner sends due sources to scrape jobs on the `torrent` queue, the
torrent worker (behind its VPN gate) scrapes a real tracker (Debian's opentracker) where a real seeder
(aria2c) announces, and the counts, the ranking, the next check and the dead/alive state follow."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import timedelta

from chalicelib.catalog import jobs as catalog_jobs
from chalicelib.clock import utcnow
from chalicelib.health import check_health, queue_depth
from chalicelib.jobs.queues import get_queue
from chalicelib.models.catalog import Movie
from chalicelib.models.sources import Source
from chalicelib.settings import get_settings, reset_settings
from chalicelib.sources import health, store
from chalicelib.upstreams.trackers import ScrapeResult
from infra.local.runtime import LocalRuntime
from tests.integration.platform_fixtures import wait_for
from tests.integration.tracker_fixtures import OpenTracker, Seeder, random_infohashes

NOTLD = 10331


def use_tracker(tracker: OpenTracker) -> None:
    os.environ.update(TRACKERS=tracker.udp_url, TRACKER_TIMEOUT="1", TRACKER_RETRIES="1")
    reset_settings()


def add_source(infohash: str, quality: str = "1080p", seeders: int = 5) -> Source:
    found = store.Found(infohash=infohash, title=f"release {infohash[:6]}", quality=quality, seeders=seeders)
    return store.upsert(NOTLD, found, "test")[0]


def reload(infohash: str) -> Source:
    return Source.get(*Source.key(infohash), consistent_read=True)


def test_a_due_source_is_scraped_on_a_real_tracker_through_the_torrent_worker(
    sources: Callable[..., LocalRuntime], opentracker: OpenTracker, seeder: Seeder
) -> None:
    use_tracker(opentracker)
    sources(torrent_worker=True)
    catalog_jobs.sync_movie_now(NOTLD)
    seeded = add_source(seeder.infohash, seeders=40)  # an index said 40; the tracker knows better
    empty = random_infohashes(1)[0]
    opentracker.whitelist(empty)
    add_source(empty, quality="720p", seeders=3)

    # When the stats planner ticks: both are due (new sources are), one scrape job of two info-hashes goes out
    assert health.plan_stats() == 2
    wait_for(lambda: reload(seeder.infohash).stats_checked_at is not None, 30, "the scrape")
    wait_for(lambda: reload(empty).stats_checked_at is not None, 10, "the other")

    # Then the counts are the tracker's: one seeder for the seeded torrent, none for the other
    source = reload(seeder.infohash)
    assert (source.seeders, source.stats_checked_at > seeded.first_seen) == (1, True)
    assert reload(empty).seeders == 0 and reload(empty).dead_checks == 1 and not reload(empty).dead
    # the next check is 6-72 h away, with jitter; the ranking follows the fresh counts
    wait = source.next_stats_at - source.stats_checked_at
    assert timedelta(hours=6) * 0.8 <= wait <= timedelta(hours=72) * 1.2
    assert [s.infohash for s in store.best(NOTLD)] == [seeder.infohash]  # no seeder: not ranked at all
    # and nothing is due any more
    assert health.plan_stats() == 0


def test_a_source_dead_on_three_checks_leaves_the_ranking_and_its_movie_is_searched_again(
    sources: Callable[..., LocalRuntime],
) -> None:
    sources(run_pollers=False)
    catalog_jobs.sync_movie_now(NOTLD)
    movie = Movie.get(*Movie.key(NOTLD))
    movie.update(actions=[Movie.due_pk.set("DUE#SOURCE_SEARCH#1"), Movie.due_sk.set("9999")])  # searched, not due
    infohash = random_infohashes(1)[0]
    add_source(infohash)
    now = utcnow()

    for check in range(1, 4):
        counts = health.apply_scrape({infohash: ScrapeResult(0, 2, 9)}, now + timedelta(hours=check))
        assert counts["updated"] == 1
        assert reload(infohash).dead == (check == 3)
    assert counts["died"] == 1
    dead = reload(infohash)
    assert dead.score is None and dead.media_pk is None and store.best(NOTLD) == []
    assert dead.next_stats_at - dead.stats_checked_at == health.MAX_INTERVAL  # still checked, rarely
    # the movie, left without a live source, is due for a search now
    searched_again = Movie.get(*Movie.key(NOTLD), consistent_read=True)
    assert searched_again.due_pk.startswith("DUE#SOURCE_SEARCH#") and searched_again.due_sk < "9999"

    # seen alive again, it comes back into the ranking
    counts = health.apply_scrape({infohash: ScrapeResult(3, 2, 1)}, now + timedelta(days=4))
    assert counts["revived"] == 1 and [s.infohash for s in store.best(NOTLD)] == [infohash]


def test_the_next_check_adapts_to_how_much_the_counts_move() -> None:
    rng = random.Random(7)
    day = timedelta(hours=24)
    assert timedelta(hours=6) * 0.8 <= health.next_interval(None, 0, 10, rng) <= timedelta(hours=6) * 1.2
    assert timedelta(hours=6) * 0.8 <= health.next_interval(day, 100, 20, rng) <= timedelta(hours=6) * 1.2
    assert timedelta(hours=12) * 0.8 <= health.next_interval(day, 100, 130, rng) <= timedelta(hours=12) * 1.2
    assert timedelta(hours=48) * 0.8 <= health.next_interval(day, 100, 101, rng) <= timedelta(hours=48) * 1.2
    assert health.next_interval(timedelta(hours=60), 100, 100, rng) <= timedelta(hours=72) * 1.2  # capped
    spread = {round(health.next_interval(day, 100, 100, rng).total_seconds()) for _ in range(20)}
    assert len(spread) > 10  # jittered, so checks do not bunch up


def test_while_the_vpn_gate_is_closed_torrent_jobs_are_held_back_never_dropped(
    sources: Callable[..., LocalRuntime], opentracker: OpenTracker, seeder: Seeder
) -> None:
    use_tracker(opentracker)
    os.environ.update(VPN_REQUIRED="true", VPN_INTERFACE="wgnotthere0", VPN_CHECK_INTERVAL="0", VPN_RETRY_DELAY="2")
    reset_settings()
    sources(torrent_worker=True)
    catalog_jobs.sync_movie_now(NOTLD)
    add_source(seeder.infohash)

    assert health.plan_stats() == 1
    torrent = get_queue("torrent")
    wait_for(lambda: queue_depth(torrent)["delayed"] == 1, 20, "the job to be put back, delayed")
    assert reload(seeder.infohash).stats_checked_at is None  # not run
    _, report = check_health(get_settings())  # (this test's stack has only some of the queues)
    assert report["vpn_gate"]["state"] == "closed"
    assert "wgnotthere0 does not exist" in report["vpn_gate"]["reason"]
    wait_for(lambda: queue_depth(torrent)["delayed"] == 1, 10, "the job to be held back again")  # and again
    assert reload(seeder.infohash).stats_checked_at is None

    # When the gate opens (here: the VPN is no longer required), the held job runs
    os.environ["VPN_REQUIRED"] = "false"
    reset_settings()
    wait_for(lambda: reload(seeder.infohash).stats_checked_at is not None, 20, "the held job to run")
    assert reload(seeder.infohash).seeders == 1
    assert queue_depth(torrent)["dlq"] == 0
    assert check_health(get_settings())[1]["vpn_gate"]["state"] == "open"
