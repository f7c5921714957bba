"""Catalog sync on the local runtime against the sample TMDB: list refresh and its chains, the changes-based
movie and TV sync, and season completion with its refresh intervals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.catalog import jobs as catalog_jobs
from chalicelib.catalog import store
from chalicelib.clock import utcnow
from chalicelib.health import queue_depth
from chalicelib.jobs import enqueue
from chalicelib.jobs.queues import get_queue
from chalicelib.models.catalog import CatalogItem, Episode, MediaList, Movie, Season, Show, SyncState
from chalicelib.upstreams import tmdb
from infra.local.runtime import LocalRuntime
from infra.local.upstreams.tmdb import SampleTMDB
from tests.integration.platform_fixtures import wait_for

RUNNING_SHOW, ENDED_SHOW = 207001, 2310  # Open Movie Diaries (3 seasons, still airing), Bonanza (ended)


def list_members(slug: str) -> list[int]:
    return [int(m) for m in MediaList.get(*MediaList.key(slug), consistent_read=True).members]


def upstream_list(sample: SampleTMDB, source: str, pages: int) -> list[int]:
    ids: list[int] = []
    for page in range(1, pages + 1):
        ids += [item.id for item in tmdb.get_tmdb().list_page(source, page, max_age=0).results]
    return list(dict.fromkeys(ids))


def seasons_of(show_id: int) -> dict[int, Season]:
    items = CatalogItem.query(f"SHOW#{show_id}", CatalogItem.sk.startswith("SEASON#"), consistent_read=True)
    return {int(i.season_number): i for i in items if isinstance(i, Season)}


def episodes_of(show_id: int, season: int) -> list[int]:
    prefix = Season.key(show_id, season)[1] + "#EP#"
    items = CatalogItem.query(f"SHOW#{show_id}", CatalogItem.sk.startswith(prefix), consistent_read=True)
    return sorted(int(i.episode_number) for i in items if isinstance(i, Episode))


def everything_synced(slugs: list[str]) -> bool:
    for slug in slugs:
        media_list = MediaList.get(*MediaList.key(slug), consistent_read=True)
        model = Movie if media_list.media_type == "movie" else Show
        items = list(model.batch_get([model.key(int(m)) for m in media_list.members]))
        if len(items) != len(media_list.members) or any(i.synced_at is None for i in items):
            return False
        if model is Show and any(s.fetched_at is None for i in items for s in seasons_of(int(i.tmdb_id)).values()):
            return False
    return True


def test_a_list_refresh_creates_the_lists_and_their_members_then_replaces_them(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog()
    slugs = list(catalog_jobs.LISTS)

    # When the hourly list refresh runs (through the queue, with the chains it starts)
    enqueue.enqueue("catalog.refresh_lists")
    wait_for(lambda: everything_synced(slugs) if _lists_exist(slugs) else False, 60, "lists, members and seasons")

    # Then every list mirrors TMDB's, in order, and every member is fully synced, shows with their seasons
    for slug in slugs:
        _, source = catalog_jobs.LISTS[slug]
        assert list_members(slug) == upstream_list(sample_tmdb, source, 2)
    show = Show.get(*Show.key(RUNNING_SHOW))
    assert show.synced_at is not None and {"fr", "de"} <= set(show.translations)
    assert set(seasons_of(RUNNING_SHOW)) == {int(s["season_number"]) for s in show.seasons}
    assert episodes_of(RUNNING_SHOW, 1) == list(range(1, 7))

    # When TMDB's lists change and the next hourly refresh runs
    sample_tmdb.add_movie({"id": 777001, "title": "A Newcomer", "popularity": 999.0, "vote_count": 500})
    popular = [777001, *reversed(list_members("popular-movies"))][:5]
    sample_tmdb.set_list("movie/popular", popular)
    client = tmdb.get_tmdb()
    client.api.clock = lambda: utcnow() + timedelta(hours=1)  # an hour later: the cached pages are old
    enqueue.enqueue("catalog.refresh_lists")

    # Then the list is replaced, whole, and the newcomer is synced
    wait_for(lambda: list_members("popular-movies") == popular, 30, "the new popular list")
    wait_for(lambda: Movie.get(*Movie.key(777001), consistent_read=True).synced_at is not None, 30, "the newcomer")
    assert Movie.get(*Movie.key(777001)).title == "A Newcomer"


def _lists_exist(slugs: list[str]) -> bool:
    return all(_exists(MediaList, MediaList.key(slug)) for slug in slugs)


def _exists(model: type, key: tuple[str, str]) -> bool:
    try:
        model.get(*key, consistent_read=True)  # type: ignore[attr-defined]
        return True
    except model.DoesNotExist:  # type: ignore[attr-defined]
        return False


def test_the_changes_sync_refetches_exactly_the_changed_items_in_the_catalog(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    now = datetime.now(UTC)
    yesterday, before = now.date() - timedelta(days=1), now.date() - timedelta(days=2)
    client = tmdb.get_tmdb()
    client.api.clock = lambda: now - timedelta(days=3)  # the catalog was filled three days ago
    for movie_id in [10331, 4808, 3085, 653, 19]:
        catalog_jobs.sync_movie_now(movie_id, now=now - timedelta(days=3))
    client.api.clock = utcnow
    SyncState(*SyncState.key("movie_changes"), name="movie_changes", cursor=before.isoformat()).save()

    # Given changes on two days: two catalog movies, one movie the catalog does not have
    sample_tmdb.change_movie(10331, day=before, title="Night of the Living Dead (restored)")
    sample_tmdb.change_movie(4808, day=yesterday, overview="A new overview.")
    sample_tmdb.change_movie(961, day=yesterday, title="Not in our catalog")
    sample_tmdb.reset_requests()

    # When the movie sync runs
    summary = catalog_jobs.sync_changes("movie", now=now)

    # Then it read each day's changes and refetched exactly the two changed catalog movies, once each
    details = [r.path for r in sample_tmdb.served(r"^/3/movie/\d+$")]
    assert sorted(details) == ["/3/movie/10331", "/3/movie/4808"]
    assert len(sample_tmdb.served(r"^/3/movie/changes$")) == 2  # one page for each day
    assert summary["days"] == [before.isoformat(), yesterday.isoformat()] and summary["refetched"] == 2
    assert Movie.get(*Movie.key(10331)).title == "Night of the Living Dead (restored)"
    assert Movie.get(*Movie.key(4808)).overview == "A new overview."
    assert not _exists(Movie, Movie.key(961))
    assert SyncState.get(*SyncState.key("movie_changes")).cursor == now.date().isoformat()

    # When it runs again, today not being over: nothing to read, nothing to refetch
    sample_tmdb.reset_requests()
    assert catalog_jobs.sync_changes("movie", now=now)["days"] == []
    assert sample_tmdb.served() == []


def test_the_changes_sync_goes_back_at_most_14_days_and_skips_items_already_fresh(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB
) -> None:
    catalog(run_pollers=False)
    now = datetime.now(UTC)
    old_cursor = now.date() - timedelta(days=30)
    SyncState(*SyncState.key("tv_changes"), name="tv_changes", cursor=old_cursor.isoformat()).save()
    catalog_jobs.sync_show_now(ENDED_SHOW)  # synced just now: newer than any past day's change
    sample_tmdb.change_show(ENDED_SHOW, day=now.date() - timedelta(days=3), name="Bonanza (remastered)")
    sample_tmdb.reset_requests()

    summary = catalog_jobs.sync_changes("tv", now=now)

    changes = sample_tmdb.served(r"^/3/tv/changes$")
    assert changes[0].query["start_date"] == (now.date() - timedelta(days=14)).isoformat()
    assert len(summary["days"]) == 14
    assert sample_tmdb.served(r"^/3/tv/\d+$") == []  # synced after that day ended: nothing to refetch
    assert Show.get(*Show.key(ENDED_SHOW)).title == "Bonanza"


def test_season_completion_fills_missing_seasons_and_respects_the_refresh_intervals(
    catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = catalog(run_pollers=False)
    catalog_jobs.sync_show_now(RUNNING_SHOW)
    catalog_jobs.sync_show_now(ENDED_SHOW)
    running_seasons = set(seasons_of(RUNNING_SHOW))
    ended_seasons = set(seasons_of(ENDED_SHOW))
    assert running_seasons == {1, 2, 3} and ended_seasons == {0, 1, 2}

    def plan_and_run(at: datetime) -> set[tuple[int, int]]:
        """One planner tick at `at`, then the season jobs it sent, run here; returns the seasons fetched."""
        sample_tmdb.reset_requests()
        # The clock moves for the planner, the season jobs and the response cache alike.
        monkeypatch.setattr(store, "utcnow", lambda: utcnow() + (at - now))
        tmdb.get_tmdb().api.clock = store.utcnow
        sent = catalog_jobs.plan_seasons(now=at)
        runtime.start_pollers()
        wait_for(lambda: len(sample_tmdb.served(r"/season/")) >= sent, 30, f"{sent} season fetches")
        wait_for(lambda: _queue_empty(runtime), 30, "the season jobs to finish")
        for poller in runtime.pollers:
            poller.stop()
        runtime.pollers.clear()
        return {(int(r.path.split("/")[3]), int(r.path.split("/")[5])) for r in sample_tmdb.served(r"/season/")}

    now = utcnow()
    # Missing seasons are fetched at once
    assert plan_and_run(now) == {(RUNNING_SHOW, n) for n in running_seasons} | {(ENDED_SHOW, n) for n in ended_seasons}
    assert episodes_of(ENDED_SHOW, 0) == [1, 2, 3]
    # Nothing is due two hours later
    assert plan_and_run(now + timedelta(hours=2)) == set()
    # After 3 hours: only the latest season of the running show
    assert plan_and_run(now + timedelta(hours=3, minutes=1)) == {(RUNNING_SHOW, 3)}
    # After 24 hours: the running show's other seasons too (and the latest again); the ended show waits 90 days
    assert plan_and_run(now + timedelta(hours=24, minutes=1)) == {(RUNNING_SHOW, n) for n in running_seasons}
    assert plan_and_run(now + timedelta(hours=26)) == set()
    assert plan_and_run(now + timedelta(days=89)) == {(RUNNING_SHOW, n) for n in running_seasons}
    assert {s for _, s in plan_and_run(now + timedelta(days=90, minutes=5)) if _ == ENDED_SHOW} == ended_seasons


def _queue_empty(runtime: LocalRuntime) -> bool:
    depth = queue_depth(get_queue("catalog"))
    return depth["visible"] + depth["in_flight"] + depth["delayed"] == 0


def test_season_due_times_follow_the_shows_state() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    running = Show(*Show.key(1), tmdb_id=1, title="r", status="Returning Series", in_production=True)
    running.seasons = [{"season_number": n} for n in (0, 1, 2)]
    ended = Show(*Show.key(2), tmdb_id=2, title="e", status="Ended", in_production=False)
    ended.seasons = [{"season_number": 1}]
    assert store.season_due(running, 2, None, now) == now
    assert store.season_due(running, 2, now, now) == now + timedelta(hours=3)
    assert store.season_due(running, 1, now, now) == now + timedelta(hours=24)
    assert store.season_due(running, 0, now, now) == now + timedelta(hours=24)
    assert store.season_due(ended, 1, now, now) == now + timedelta(days=90)
    running.next_episode = {"season_number": 3, "episode_number": 1}
    assert store.season_due(running, 2, now, now) == now + timedelta(hours=24)  # season 3 is the latest now
