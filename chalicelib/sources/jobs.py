"""Source discovery jobs: the movie source search planner and the search job.

sources.search_planner   every minute  movies due for a search, new ones first, then popular ones, then the
                                       rest, as many as the YTS budget allows, spread over the minute
sources.search_movie     one movie     YTS by IMDb id; a hit brings the next search in 24 h, a miss in
                                       45-75 minutes (at random, so misses do not come back in step)
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from pynamodb.expressions.update import Action

from chalicelib.clock import utcnow
from chalicelib.errors import NotFoundError, UpstreamError
from chalicelib.jobs import enqueue
from chalicelib.jobs.periodic import periodic
from chalicelib.jobs.registry import JobContext, UniqueFor, job
from chalicelib.jobs.retry import Retry
from chalicelib.models.base import update_if
from chalicelib.models.catalog import NEW, OTHERS, POPULAR, POPULAR_FROM, SOURCE_SEARCH, CatalogItem, Movie, iso
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.sources import feeds, metadata, store
from chalicelib.upstreams import yts

HIT_AGAIN = timedelta(hours=24)
MISS_AGAIN = (45 * 60, 75 * 60)  # seconds, at random
NO_IMDB_AGAIN = timedelta(hours=6)  # a movie TMDB has no IMDb id for yet
CLAIM = timedelta(minutes=15)  # a movie sent to its search is not due again for this long
SEARCH_RETRY = Retry(max_attempts=6, base=60, cap=1800)


def _tier(movie: Movie) -> int:
    return POPULAR if float(movie.popularity or 0) >= POPULAR_FROM else OTHERS


def _set_due(movie: Movie, tier: int | None, at: datetime | None, condition: Any = None) -> bool:
    """Put the movie's next search on the due index (or take it off): False if `condition` failed."""
    movie.set_due(f"{SOURCE_SEARCH}#{tier}" if tier is not None else None, at)
    actions: list[Action] = (
        [CatalogItem.due_pk.set(movie.due_pk), CatalogItem.due_sk.set(movie.due_sk)]
        if movie.due_pk
        else [CatalogItem.due_pk.remove(), CatalogItem.due_sk.remove()]
    )
    return update_if(movie, actions, condition)


def plan_searches(budget: int | None = None, now: datetime | None = None) -> int:
    """Send the searches that are due, reading only due movies (three Queries on the due index, one per
    tier), and claim each (a conditional write) so that overlapping planners never send one twice."""
    now = now or utcnow()
    budget = budget if budget is not None else max(1, int(get_settings().yts_requests_per_minute))
    due: list[Movie] = []
    for tier in (NEW, POPULAR, OTHERS):
        if len(due) >= budget:
            break
        found = CatalogItem.by_due.query(
            f"DUE#{SOURCE_SEARCH}#{tier}", CatalogItem.due_sk <= iso(now) + "~", limit=budget - len(due)
        )
        due += [m for m in found if isinstance(m, Movie)]
    claimed = []
    for movie in due:
        tier = _tier(movie) if movie.sources_searched_at else NEW
        if not _set_due(movie, tier, now + CLAIM, CatalogItem.due_sk == movie.due_sk):
            continue  # another planner claimed it
        claimed.append(enqueue.build("sources.search_movie", {"movie_id": int(movie.tmdb_id)}))
    enqueue.send_spread(claimed, over=60.0)  # the budget is per minute: so is the pace
    return len(claimed)


@periodic(
    "sources.search_planner",
    schedule="rate(1 minute)",
    description="Search YTS for movies due a source search (new first, then popular), within the YTS budget",
)
@job("sources.search_planner", queue="sources", timeout=60)
def search_planner(ctx: JobContext) -> dict[str, int]:
    return {"sent": plan_searches()}


def _found(movie: yts.Movie, torrent: yts.Torrent) -> store.Found:
    quality = torrent.quality
    return store.Found(
        infohash=torrent.hash,
        title=f"{movie.title_long or movie.title} [{quality or '?'}] [YTS]",
        quality=quality,
        codec=torrent.video_codec,
        source_type=torrent.type,
        bit_depth=int(depth) if (depth := torrent.bit_depth or "").isascii() and depth.isdigit() else None,
        audio_channels=torrent.audio_channels or None,
        size_bytes=torrent.size_bytes,
        seeders=torrent.seeds,
        leechers=torrent.peers,
    )


def search_movie_now(movie_id: int, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    try:
        movie = Movie.get(*Movie.key(movie_id), consistent_read=True)
    except Movie.DoesNotExist:
        raise NotFoundError(f"movie {movie_id} is not in the catalog") from None
    if movie.removed_at is not None:
        _set_due(movie, None, None)
        return {"movie_id": movie_id, "outcome": "removed from TMDB: no more searches"}
    if not movie.imdb_id:
        _set_due(movie, _tier(movie), now + NO_IMDB_AGAIN)
        return {"movie_id": movie_id, "outcome": "no IMDb id yet"}
    found = 0
    new: list[str] = []
    alive: list[str] = []
    for yts_movie in yts.get_yts().movies_by_imdb(movie.imdb_id):
        for torrent in yts_movie.torrents:
            source, created = store.upsert(movie_id, _found(yts_movie, torrent), "yts", now)
            found += 1
            if created:
                new.append(source.infohash)
                if source.seeders:
                    alive.append(source.infohash)
    metadata.request(alive)  # alive by the index's word: their .torrent and files, from their peers
    try:
        found += feeds.search_feeds_for_movie(movie, now)
    except UpstreamError as exc:  # a feed's trouble is its own: YTS's finds stand
        logger.warning("feeds not searched for movie %s: %s", movie_id, exc)
    again = now + (HIT_AGAIN if found else timedelta(seconds=random.uniform(*MISS_AGAIN)))
    movie.update(actions=[Movie.sources_searched_at.set(now), Movie.sources_found.set(found)])
    _set_due(movie, _tier(movie), again)
    return {"movie_id": movie_id, "found": found, "new": len(new), "next_search": again.isoformat()}


@job("sources.search_movie", queue="sources", retry=SEARCH_RETRY, unique=UniqueFor(hours=1, key="{movie_id}"))
def search_movie(ctx: JobContext, movie_id: int) -> dict[str, Any]:
    return search_movie_now(movie_id)
