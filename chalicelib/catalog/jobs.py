"""The catalog's jobs and periodic tasks.

    catalog.refresh_lists      hourly      TMDB's five lists -> MediaLists; new members get a full sync
    catalog.movie_sync         every 1.5 h changed movies that are in the catalog, one UTC day at a time
    catalog.tv_sync            every 1.5 h changed shows, likewise (their changed seasons become due)
    catalog.season_completion  every min   seasons that are missing or stale -> one sync_season job each
    catalog.sync_genres        daily       genre names in the catalog's languages

Chains: a list refresh sends `sync_movie` / `sync_show` for new members, and a new show's sync continues
with `complete_seasons`, which sends its seasons' jobs at once instead of waiting for the next planner tick.
User refreshes run on their own queue (`refresh`, at most 6 at once), deduplicated for 2 hours.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from chalicelib.catalog import store
from chalicelib.clock import utcnow
from chalicelib.errors import NotFoundError
from chalicelib.jobs import enqueue
from chalicelib.jobs.envelope import JobRequest
from chalicelib.jobs.migrations import Migration, migration
from chalicelib.jobs.periodic import periodic
from chalicelib.jobs.registry import JobContext, LockOn, UniqueFor, job
from chalicelib.jobs.retry import Retry, RetryLaterError
from chalicelib.models.base import update_if
from chalicelib.models.catalog import CatalogItem, Genre, MediaList, Movie, Season, Show, SyncState, iso
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.upstreams import tmdb
from chalicelib.upstreams.http import TransientUpstreamError, UpstreamNotFoundError, UpstreamRejectedError

MediaType = Literal["movie", "tv"]

# slug -> (name, TMDB list)
LISTS: dict[str, tuple[str, str]] = {
    "popular-movies": ("Popular movies", "movie/popular"),
    "top-rated-movies": ("Top rated movies", "movie/top_rated"),
    "trending-movies": ("Trending movies this week", "trending/movie/week"),
    "popular-shows": ("Popular shows", "tv/popular"),
    "top-rated-shows": ("Top rated shows", "tv/top_rated"),
}
CHANGES_WINDOW_DAYS = 14  # TMDB's changes go back at most this far
SEASONS_PER_TICK = 600  # a quarter of TMDB's ~2,400 requests a minute
SEASON_CLAIM = timedelta(minutes=15)  # a season sent to its job is not due again for this long
TIME_LEFT = 20.0  # seconds: a job with less left hands its remaining work to its continuation

SYNC_RETRY = Retry(max_attempts=8, base=30, cap=1800)


def languages() -> list[str]:
    return list(get_settings().catalog_languages)


# -- one item ---------------------------------------------------------------------------------------------


def sync_movie_now(
    movie_id: int, *, max_age: float | None = None, now: datetime | None = None, client: tmdb.TMDB | None = None
) -> str:
    """Fetch one movie (one request) and store it; TMDB's 404 flags it removed. Returns what happened."""
    try:
        details = (client or tmdb.get_tmdb()).movie(movie_id, max_age=max_age)
    except UpstreamNotFoundError:
        return "removed" if store.mark_removed(Movie, movie_id, now) else "not_found"
    store.save_movie(details, languages(), now)
    return "synced"


def sync_show_now(
    show_id: int,
    *,
    max_age: float | None = None,
    all_seasons: bool = False,
    now: datetime | None = None,
    client: tmdb.TMDB | None = None,
) -> str:
    try:
        details = (client or tmdb.get_tmdb()).show(show_id, max_age=max_age)
    except UpstreamNotFoundError:
        return "removed" if store.mark_removed(Show, show_id, now) else "not_found"
    show = store.save_show(details, languages(), now)
    if all_seasons:
        store.schedule_seasons(show, {s.season_number: s for s in details.seasons}, now=now or utcnow(), all_now=True)
    return "synced"


@job("catalog.sync_movie", queue="catalog", retry=SYNC_RETRY, unique=UniqueFor(hours=2, key="{movie_id}"))
def sync_movie(ctx: JobContext, movie_id: int) -> dict[str, Any]:
    return {"movie_id": movie_id, "outcome": sync_movie_now(movie_id)}


@job("catalog.sync_show", queue="catalog", retry=SYNC_RETRY, unique=UniqueFor(hours=2, key="{show_id}"))
def sync_show(ctx: JobContext, show_id: int) -> dict[str, Any]:
    return {"show_id": show_id, "outcome": sync_show_now(show_id)}


# -- seasons ----------------------------------------------------------------------------------------------


def _claim_and_send(seasons: list[Season], now: datetime) -> int:
    """Push each due season's due time a little forward (a conditional write, so two planners never send the
    same season twice) and send one sync_season job per season claimed."""
    requests = []
    for season in seasons:
        old = season.due_sk
        season.set_due(store.SEASONS_DUE, now + SEASON_CLAIM)
        actions = [CatalogItem.due_pk.set(season.due_pk), CatalogItem.due_sk.set(season.due_sk)]
        if not update_if(season, actions, CatalogItem.due_sk == old):
            continue  # another planner (or the show's sync) moved it: theirs
        requests.append({"show_id": int(season.show_id), "season_number": int(season.season_number)})
    envelopes = [enqueue.build("catalog.sync_season", args) for args in requests]
    enqueue.enqueue_envelopes(envelopes)
    return len(envelopes)


def plan_seasons(limit: int = SEASONS_PER_TICK, now: datetime | None = None) -> int:
    """Send the seasons that are due, read from the due index (never a scan), at most `limit` a tick."""
    now = now or utcnow()
    due = list(CatalogItem.by_due.query(f"DUE#{store.SEASONS_DUE}", CatalogItem.due_sk <= iso(now) + "~", limit=limit))
    return _claim_and_send([s for s in due if isinstance(s, Season)], now)


@periodic(
    "catalog.season_completion",
    schedule="rate(1 minute)",
    description="Fetch the seasons that are missing or stale (latest season of a running show every 3 h, "
    "its other seasons every 24 h, every season of an ended show every 90 days)",
)
@job("catalog.season_completion", queue="catalog", timeout=60)
def season_completion(ctx: JobContext) -> dict[str, int]:
    return {"sent": plan_seasons()}


@job("catalog.complete_seasons", queue="catalog", retry=SYNC_RETRY)
def complete_seasons(ctx: JobContext, show_id: int) -> dict[str, int]:
    """Send the due seasons of one show now (the chain after a new show's sync)."""
    now = utcnow()
    try:
        show = Show.get(*Show.key(show_id))
    except Show.DoesNotExist:
        raise NotFoundError(f"show {show_id} is not in the catalog") from None
    keys = [Season.key(show_id, int(summary["season_number"])) for summary in show.seasons or []]
    seasons = [
        season
        for season in (Season.batch_get(keys) if keys else [])  # the seasons only, not their episodes
        if season.due_sk is not None and season.due_sk <= iso(now) + "~"
    ]
    return {"sent": _claim_and_send(seasons, now)}


@job(
    "catalog.sync_season",
    queue="catalog",
    retry=SYNC_RETRY,
    lock=LockOn("season:{show_id}:{season_number}", when_held="skip"),
)
def sync_season(ctx: JobContext, show_id: int, season_number: int) -> dict[str, Any]:
    try:
        show = Show.get(*Show.key(show_id))
    except Show.DoesNotExist:
        raise NotFoundError(f"show {show_id} is not in the catalog") from None
    try:
        details = tmdb.get_tmdb().season(show_id, season_number, max_age=600)
    except UpstreamNotFoundError:
        season = Season(*Season.key(show_id, season_number))
        season.update(actions=[CatalogItem.due_pk.remove(), CatalogItem.due_sk.remove()])
        return {"show_id": show_id, "season_number": season_number, "outcome": "removed"}
    store.save_season(show, details)
    return {"show_id": show_id, "season_number": season_number, "episodes": len(details.episodes)}


# -- lists ------------------------------------------------------------------------------------------------


def refresh_list(slug: str, pages: int, now: datetime | None = None) -> list[int]:
    """Replace one MediaList with TMDB's current one (one PutItem: readers see the old or the new list, never
    half of one). Members the catalog lacks are created first, as stubs. Returns the members still waiting
    for their full sync: the new stubs, and any stub an earlier refresh made whose sync never got sent."""
    now = now or utcnow()
    name, source = LISTS[slug]
    media_type = tmdb.LISTS[source]
    client = tmdb.get_tmdb()
    items: dict[int, tmdb.ListItem] = {}
    for page in range(1, pages + 1):
        result = client.list_page(source, page, max_age=tmdb.LIST_TTL / 2)
        for item in result.results:
            items.setdefault(item.id, item)
        if page >= result.total_pages:
            break
    known = store.stored(media_type, items)
    for item_id, item in items.items():
        if item_id not in known:
            store.save_stub(media_type, item, languages())
    MediaList(
        *MediaList.key(slug),
        slug=slug,
        name=name,
        media_type=media_type,
        source=source,
        members=list(items),
        refreshed_at=now,
    ).save()
    return [i for i in items if i not in known or known[i].synced_at is None]


@periodic(
    "catalog.refresh_lists", schedule="rate(1 hour)", description="Mirror TMDB's popular, top rated and trending lists"
)
@job("catalog.refresh_lists", queue="catalog", retry=SYNC_RETRY, timeout=120)
def refresh_lists(ctx: JobContext) -> dict[str, Any]:
    """Each list on its own: one that fails keeps its stored version while the others are refreshed, and the
    syncs of the members waiting for one are sent either way (a sync is unique, so sending again is free)."""
    pages = get_settings().catalog_list_pages
    waiting: dict[str, set[int]] = {"movie": set(), "tv": set()}
    failed: list[str] = []
    retry_after = 0.0
    for slug, (_, source) in LISTS.items():
        try:
            waiting[tmdb.LISTS[source]].update(refresh_list(slug, pages))
        except (TransientUpstreamError, UpstreamRejectedError, RetryLaterError) as exc:
            logger.warning("list %s not refreshed: %s", slug, exc)  # the stored list stays as it was
            failed.append(slug)
            if isinstance(exc, RetryLaterError):
                retry_after = max(retry_after, exc.retry_after)
    envelopes = [enqueue.build("catalog.sync_movie", {"movie_id": i}) for i in sorted(waiting["movie"])]
    envelopes += [
        enqueue.build(
            "catalog.sync_show", {"show_id": i}, then=[JobRequest(name="catalog.complete_seasons", args={"show_id": i})]
        )
        for i in sorted(waiting["tv"])
    ]
    enqueue.enqueue_envelopes(envelopes)
    if retry_after:
        raise RetryLaterError(f"lists not refreshed: {', '.join(failed)} (the others were)", retry_after=retry_after)
    if failed:
        raise TransientUpstreamError(f"lists not refreshed: {', '.join(failed)} (the others were)")
    return {"lists": len(LISTS), "movies_to_sync": len(waiting["movie"]), "shows_to_sync": len(waiting["tv"])}


# -- changes ----------------------------------------------------------------------------------------------


def _state(name: str) -> SyncState:
    try:
        return SyncState.get(*SyncState.key(name), consistent_read=True)
    except SyncState.DoesNotExist:
        return SyncState(*SyncState.key(name), name=name)


def changed_ids(media_type: MediaType, day: date) -> list[int]:
    client = tmdb.get_tmdb()
    ids: list[int] = []
    page, pages = 1, 1
    while page <= pages:
        result = client.changes(media_type, day, page)
        ids += [change.id for change in result.results]
        pages = min(result.total_pages, 500)
        page += 1
    return list(dict.fromkeys(ids))


def sync_changes(media_type: MediaType, *, time_left: Any = None, now: datetime | None = None) -> dict[str, Any]:
    """Refetch the catalog's items that TMDB changed, one whole UTC day at a time from the stored cursor (at
    most 14 days back); the cursor moves past a day only once that day is done. An item already refetched
    after the day ended is skipped, so a run cut short and run again costs nothing twice."""
    now = now or utcnow()
    sync_now = sync_movie_now if media_type == "movie" else sync_show_now
    state = _state(f"{media_type}_changes")
    today = now.date()
    day = date.fromisoformat(state.cursor) if state.cursor else today - timedelta(days=1)
    day = max(day, today - timedelta(days=CHANGES_WINDOW_DAYS))
    summary: dict[str, Any] = {"days": [], "refetched": 0, "removed": 0, "failed": [], "more": False}
    # Items whose refetch failed on an earlier run get one more try (with the first day this run does), then
    # are given up (logged): one item TMDB keeps failing on must not hold the sync back.
    carried = [int(i) for i in state.data.get("failed", [])]
    failed_this_run: list[int] = []
    while day < today:
        day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        stored = store.stored(media_type, changed_ids(media_type, day))
        fresh = [i for i, item in stored.items() if item.synced_at is None or item.synced_at < day_end]
        retries, carried = [i for i in carried if i not in fresh], []
        failures = []
        for item_id in fresh + retries:
            if time_left is not None and time_left() < TIME_LEFT:
                summary["more"] = True
                return summary
            try:
                outcome = sync_now(item_id, max_age=max(0.0, (now - day_end).total_seconds()), now=now)
            except (TransientUpstreamError, UpstreamRejectedError) as exc:
                if item_id in retries:
                    logger.error("%s %s given up: its refetch failed on two runs: %s", media_type, item_id, exc)
                else:
                    logger.warning("%s %s not refetched: %s", media_type, item_id, exc)
                    failures.append(item_id)
                continue
            summary["removed" if outcome == "removed" else "refetched"] += 1
        if fresh and len(failures) == len(fresh):
            raise TransientUpstreamError(f"every refetch of {day} failed; the day will be tried again")
        failed_this_run += failures
        state.cursor = (day + timedelta(days=1)).isoformat()
        state.last_sync_at = now
        state.data = {"failed": failed_this_run}
        state.save()
        summary["days"].append(day.isoformat())
        summary["failed"] += failures
        day += timedelta(days=1)
    return summary


def _run_changes(ctx: JobContext, media_type: MediaType, name: str) -> dict[str, Any]:
    summary = sync_changes(media_type, time_left=ctx.remaining_seconds if ctx.lambda_context else None)
    if summary["more"]:
        enqueue.enqueue(name, delay=1)  # catch up: the lock keeps it from overlapping this run or a tick
    return summary


@periodic("catalog.movie_sync", schedule="rate(90 minutes)", description="Refetch the movies TMDB changed")
@job("catalog.movie_sync", queue="catalog", retry=SYNC_RETRY, lock=LockOn("changes:movie", when_held="skip"))
def movie_sync(ctx: JobContext) -> dict[str, Any]:
    return _run_changes(ctx, "movie", "catalog.movie_sync")


@periodic("catalog.tv_sync", schedule="rate(90 minutes)", description="Refetch the shows TMDB changed")
@job("catalog.tv_sync", queue="catalog", retry=SYNC_RETRY, lock=LockOn("changes:tv", when_held="skip"))
def tv_sync(ctx: JobContext) -> dict[str, Any]:
    return _run_changes(ctx, "tv", "catalog.tv_sync")


# -- genres -----------------------------------------------------------------------------------------------


@periodic("catalog.sync_genres", schedule="rate(1 day)", description="Genre names in the catalog's languages")
@job("catalog.sync_genres", queue="catalog", retry=SYNC_RETRY)
def sync_genres(ctx: JobContext) -> dict[str, int]:
    client = tmdb.get_tmdb()
    count = 0
    for media_type in ("movie", "tv"):
        names: dict[int, dict[str, str]] = {}
        for language in languages():
            for genre in client.genres(media_type, language).genres:
                names.setdefault(genre.id, {})[language] = genre.name
        with Genre.batch_write() as batch:
            for genre_id, by_language in names.items():
                batch.save(
                    Genre(*Genre.key(media_type, genre_id), media_type=media_type, genre_id=genre_id, names=by_language)
                )
                count += 1
    return {"genres": count}


# -- user refreshes ---------------------------------------------------------------------------------------


@job("catalog.refresh_movie", queue="refresh", retry=SYNC_RETRY, unique=UniqueFor(hours=2, key="{movie_id}"))
def refresh_movie(ctx: JobContext, movie_id: int) -> dict[str, Any]:
    return {"movie_id": movie_id, "outcome": sync_movie_now(movie_id, max_age=0)}


@job("catalog.refresh_show", queue="refresh", retry=SYNC_RETRY, unique=UniqueFor(hours=2, key="{show_id}"))
def refresh_show(ctx: JobContext, show_id: int) -> dict[str, Any]:
    outcome = sync_show_now(show_id, max_age=0, all_seasons=True)
    sent = complete_seasons(ctx, show_id)["sent"] if outcome == "synced" else 0
    return {"show_id": show_id, "outcome": outcome, "seasons_sent": sent}


# -- first start ------------------------------------------------------------------------------------------


@migration
class FillCatalog(Migration):
    """A new deployment (or a fresh `make run`) should not wait an hour for its first list refresh."""

    id = "2026-11-23_fill_catalog"
    description = "Fill a new catalog at once: genres, then TMDB's lists and their members"

    def run(self, ctx: JobContext) -> dict[str, str]:
        genres = enqueue.enqueue("catalog.sync_genres")
        lists = enqueue.enqueue("catalog.refresh_lists")
        return {"sync_genres": genres.job_id, "refresh_lists": lists.job_id}
