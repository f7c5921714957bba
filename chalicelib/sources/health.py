"""Source health: the stats planner, the scrape job on the `torrent` queue, and the resync of dead sources.

    sources.stats_planner   every minute  sources whose next check is due (a due index, never a scan) go out in
                                          scrape jobs of up to 74 info-hashes (one UDP request per tracker each)
    torrent.scrape          torrent queue the trackers' answers merged (max seeders) and applied: counts, score,
                                          the next check, and the dead/alive state

The next check is adaptive: 6 hours when the counts moved a lot (more than half), 12 when they moved some,
else twice the last interval, up to 72 hours; each with +/-20% jitter so checks spread out. A source with no
seeder on DEAD_AFTER consecutive checks is dead: out of the ranking (still checked, every 72 hours), and a
movie left with no live source is put back on the search schedule at once. A dead source seen alive again
comes back.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import PutError

from chalicelib.clock import utcnow
from chalicelib.jobs import enqueue
from chalicelib.jobs.periodic import periodic
from chalicelib.jobs.registry import JobContext, job
from chalicelib.jobs.retry import Retry
from chalicelib.models.base import update_if
from chalicelib.models.catalog import NEW, OTHERS, POPULAR, POPULAR_FROM, SOURCE_SEARCH, CatalogItem, Movie, iso
from chalicelib.models.sources import Source, SourceItem
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.sources import store
from chalicelib.upstreams import trackers

PER_JOB = trackers.UDP_MAX_PER_REQUEST  # 74
SOURCES_PER_TICK = PER_JOB * 40
MIN_INTERVAL, MAX_INTERVAL = timedelta(hours=6), timedelta(hours=72)
DEAD_AFTER = 3
CLAIM = timedelta(minutes=30)  # a source sent to a scrape is not due again for this long
JITTER = 0.2


def next_interval(previous: timedelta | None, old: int, new: int, rng: random.Random | None = None) -> timedelta:
    """How long until the next check, from how much the seeders moved since the last one."""
    rng = rng or random.Random()
    change = abs(new - old) / max(old, 1)
    if previous is None or change > 0.5:
        base = MIN_INTERVAL
    elif change > 0.2:
        base = timedelta(hours=12)
    else:
        base = previous * 2
    base = max(MIN_INTERVAL, min(MAX_INTERVAL, base))
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


# -- planning ---------------------------------------------------------------------------------------------


def plan_stats(limit: int = SOURCES_PER_TICK, now: datetime | None = None) -> int:
    """Send the due sources to scrape jobs of up to 74 info-hashes; returns how many sources were sent."""
    now = now or utcnow()
    due = [
        s
        for s in Source.by_due.query(f"DUE#{store.STATS_DUE}", SourceItem.due_sk <= iso(now) + "~", limit=limit)
        if isinstance(s, Source)
    ]
    claimed: list[str] = []
    for source in due:
        old = source.due_sk
        store.set_stats_due(source, now + CLAIM)
        actions = [
            SourceItem.due_pk.set(source.due_pk),
            SourceItem.due_sk.set(source.due_sk),
            Source.next_stats_at.set(source.next_stats_at),
        ]
        if not update_if(source, actions, SourceItem.due_sk == old):
            continue  # another planner claimed it
        claimed.append(source.infohash)
    chunks = [claimed[i : i + PER_JOB] for i in range(0, len(claimed), PER_JOB)]
    enqueue.enqueue_envelopes([enqueue.build("torrent.scrape", {"infohashes": chunk}) for chunk in chunks])
    return len(claimed)


@periodic(
    "sources.stats_planner", schedule="rate(1 minute)", description="Scrape trackers for sources whose check is due"
)
@job("sources.stats_planner", queue="sources", timeout=60)
def stats_planner(ctx: JobContext) -> dict[str, int]:
    return {"sent": plan_stats()}


# -- applying a scrape ------------------------------------------------------------------------------------


def apply(source: Source, result: trackers.ScrapeResult, now: datetime, rng: random.Random | None = None) -> bool:
    """Apply one scrape to a loaded source (not saved). True if it just died."""
    old = int(source.seeders or 0)
    previous = (
        source.next_stats_at - source.stats_checked_at
        if source.next_stats_at is not None and source.stats_checked_at is not None
        else None
    )
    source.seeders, source.leechers, source.completed = result.seeders, result.leechers, result.completed
    source.stats_checked_at = now
    died = False
    if result.seeders > 0:
        source.dead_checks, source.dead, source.last_seen_alive = 0, False, now
    else:
        source.dead_checks = int(source.dead_checks or 0) + 1
        if source.dead_checks >= DEAD_AFTER and not source.dead:
            source.dead, died = True, True
    interval = MAX_INTERVAL if source.dead else next_interval(previous, old, result.seeders, rng)
    store.set_stats_due(source, now + interval)
    store.rank(source, now)
    return died


def _search_again_if_orphaned(owner: str, now: datetime) -> None:
    """A movie whose last live source died goes back on the search schedule, now."""
    if not owner.startswith("MOVIE#") or any(True for _ in Source.by_media.query(owner, limit=1)):
        return
    movie_id = int(owner.removeprefix("MOVIE#"))
    try:
        movie = Movie.get(*Movie.key(movie_id))
    except Movie.DoesNotExist:
        return
    tier = POPULAR if float(movie.popularity or 0) >= POPULAR_FROM else OTHERS
    movie.set_due(f"{SOURCE_SEARCH}#{tier if movie.sources_searched_at else NEW}", now)
    movie.update(actions=[CatalogItem.due_pk.set(movie.due_pk), CatalogItem.due_sk.set(movie.due_sk)])
    logger.info("movie %s has no live source left: searching again", movie_id)


def apply_scrape(results: dict[str, trackers.ScrapeResult], now: datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    counts = {"updated": 0, "died": 0, "revived": 0, "missing": 0}
    for infohash, result in results.items():
        for _ in range(5):  # optimistic: the source may be rewritten by a discovery meanwhile
            try:
                source = Source.get(*Source.key(infohash), consistent_read=True)
            except Source.DoesNotExist:
                counts["missing"] += 1
                break
            was_dead = bool(source.dead)
            died = apply(source, result, now)
            try:
                source.save()
            except PutError as exc:
                if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
                    continue
                raise
            counts["updated"] += 1
            counts["died"] += died
            counts["revived"] += was_dead and not source.dead
            if died:
                _search_again_if_orphaned(source.owner, now)
            break
    return counts


def scraper() -> trackers.Scraper:
    settings = get_settings()
    return trackers.Scraper(timeout=settings.tracker_timeout, max_retries=settings.tracker_retries)


@job("torrent.scrape", queue="torrent", retry=Retry(max_attempts=5, base=120, cap=3600))
def scrape(ctx: JobContext, infohashes: list[str]) -> dict[str, Any]:
    """Scrape up to 74 sources on every configured tracker and apply the merged counts."""
    results = trackers.scrape(get_settings().trackers, infohashes, scraper=scraper())
    return apply_scrape(results) | {"infohashes": len(infohashes)}
