"""Catalog cost, each number next to a naive baseline measured in the same run against the same data:

1. TMDB requests per changed item of the changes-based movie sync. The catalog (every movie of the sample TMDB:
   --catalog synthetic ones plus its seed) is filled days before the first run (setup, not measured). Each run
   marks --changed catalog movies changed on its own past day, then runs `sync_changes("movie")` for that day
   with the clocks (the sync's and the response cache's) at the next morning; the sample's request log gives
   the requests (changes pages + details). Naive: a system without the changes feed refetches every catalog
   movie (`sync_movie_now(id, max_age=0)` for each); that count is the catalog size by construction, so it
   runs once, after the runs. Seconds are for context: the emulator is much slower than DynamoDB.
2. DynamoDB calls per catalog read route, through Chalice's test client on the real app, over stored data
   (lists refreshed, shows and their seasons synced, genre names cached), counted by the emulator; naive: the
   same reads done without the key design (a Scan with a filter; one GetItem per list member, episode, genre).

Everything runs in this process: the sample TMDB and the local runtime's AWS emulator (moto).

    python benchmarks/catalog.py [--runs 3] [--catalog 1500] [--changed 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")

from chalice.test import Client

from chalicelib.catalog import jobs, store
from chalicelib.models.catalog import CatalogItem, Episode, Genre, Media, MediaList, Movie, Season, Show, SyncState
from chalicelib.upstreams import tmdb
from infra.local.emulator import Emulator
from infra.local.runtime import ROOT, LocalRuntime, RuntimeOptions
from infra.local.upstreams import tmdb as sample_tmdb

SHOWS = (207001, 2310, 1913, 35862)  # the sample's seed shows
PAGE = 20  # GET /lists/{slug}'s default page size


def dynamodb(emulator: Emulator, before: Counter[tuple[str, str]]) -> int:
    return sum(n for (service, _), n in (emulator.requests - before).items() if service == "DynamoDB")


def calls(emulator: Emulator, read: Callable[[], Any]) -> int:
    before = emulator.requests.copy()
    read()
    return dynamodb(emulator, before)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# -- 1. sync ----------------------------------------------------------------------------------------------


def fill(ids: list[int], at: datetime) -> None:
    """Setup: every movie fetched once, days ago, by a client without rate limiter and response cache (faster;
    the cache would only hold answers older than every change, which the sync must not use anyway)."""
    client = tmdb.get_tmdb()
    setup = tmdb.TMDB(replace(client.api, limiter=None, cache=None), details_ttl=client.details_ttl)
    started = time.perf_counter()
    for movie_id in ids:
        jobs.sync_movie_now(movie_id, now=at, client=setup)
    print(f"(setup: {len(ids)} movies stored in {time.perf_counter() - started:.0f}s)")


def timed(emulator: Emulator, sample: sample_tmdb.SampleTMDB, work: Callable[[], Any]) -> tuple[Any, tuple[int, ...]]:
    """`work`'s result, and its TMDB requests, DynamoDB calls and milliseconds."""
    sample.reset_requests()
    before, started = emulator.requests.copy(), time.perf_counter()
    result = work()
    elapsed = round((time.perf_counter() - started) * 1000)
    return result, (len(sample.served()), dynamodb(emulator, before), elapsed)


def sync_bench(emulator: Emulator, sample: sample_tmdb.SampleTMDB, ids: list[int], args: Any) -> list[str]:
    client = tmdb.get_tmdb()
    changes, today, now = [], datetime.now(UTC).date(), datetime.now(UTC)
    for run in range(args.runs):
        day = today - timedelta(days=args.runs - run)
        now = midnight(day) + timedelta(days=1, hours=1)  # the next morning: the day is over
        client.api.clock = partial(lambda at: at, now)
        start = run * args.changed % len(ids)
        for movie_id in (ids + ids)[start : start + args.changed]:
            sample.change_movie(movie_id, day=day, title=f"Changed {movie_id} on {day}")
        SyncState(*SyncState.key("movie_changes"), name="movie_changes", cursor=day.isoformat()).save()
        summary, counts = timed(emulator, sample, partial(jobs.sync_changes, "movie", now=now))
        if summary["refetched"] != args.changed or summary["days"] != [day.isoformat()]:
            raise RuntimeError(f"run {run}: expected {args.changed} refetched on {day}, got {summary}")
        changes.append(counts)
    pages = len(sample.served(r"^/3/movie/changes$"))  # the last run's
    _, naive = timed(emulator, sample, lambda: [jobs.sync_movie_now(i, max_age=0, now=now) for i in ids])

    n = args.changed
    lines = [
        f"catalog sync: {len(ids)} movies stored, {n} changed a day; medians of {args.runs} runs (naive: 1 run)",
        f"{'':36}{'TMDB req':>9}{'per changed':>12}{'ratio':>7}{'DynamoDB/item':>14}{'seconds':>9}{'items/s':>9}",
    ]
    per_changed = []
    for label, runs, items in [
        ("changes sync: sync_changes, 1 day", changes, n),
        ("naive: refetch every catalog movie", [naive], len(ids)),
    ]:
        requests, ddb, ms = (statistics.median(r[k] for r in runs) for k in range(3))
        per_changed.append(requests / n)
        lines.append(
            f"{label:36}{requests:>9.0f}{requests / n:>12.3f}{per_changed[-1] / per_changed[0]:>7.2f}"
            f"{ddb / items:>14.2f}{ms / 1000:>9.1f}{items / ms * 1000:>9.1f}"
        )
    verdict = "PASS" if per_changed[0] <= 1.05 else "FAIL"
    lines.append(
        f"TMDB requests per changed item: {per_changed[0]:.3f} (target <= 1.05) {verdict}  ({pages} changes pages "
        f"+ {n} details); naive: {per_changed[1]:.3f}, the catalog's size over the changed items ({len(ids)} / {n})"
    )
    return lines


# -- 2. reads ---------------------------------------------------------------------------------------------


def reads_setup(client: tmdb.TMDB) -> list[tuple[int, int]]:
    """Lists, genres, shows with every season: stored, so each read below is of stored data."""
    for slug in jobs.LISTS:
        jobs.refresh_list(slug, pages=2)
    jobs.sync_genres(None)  # the job's context is not used
    seasons = []
    for show_id in SHOWS:
        jobs.sync_show_now(show_id)
        show = Show.get(*Show.key(show_id), consistent_read=True)
        for summary in show.seasons:
            store.save_season(show, client.season(show_id, int(summary["season_number"])))
            seasons.append((show_id, int(summary["season_number"])))
    return seasons


def get_or_none(model: Any, key: tuple[str, str]) -> Any:
    try:
        return model.get(*key)
    except model.DoesNotExist:
        return None


def naive_detail(model: Any, media_type: str, item_id: int) -> None:
    item = model.get(*model.key(item_id))
    for genre_id in item.genre_ids or []:  # the genre names, one GetItem each (no cache)
        get_or_none(Genre, Genre.key(media_type, int(genre_id)))


def naive_list(slug: str) -> None:
    media_list = MediaList.get(*MediaList.key(slug))
    model: Any = Movie if media_list.media_type == "movie" else Show
    members: list[Any] = list(media_list.members)
    for member in members[:PAGE]:
        get_or_none(model, model.key(int(member)))


def naive_season(show_id: int, number: int) -> None:
    season = Season.get(*Season.key(show_id, number))
    for episode in range(1, int(season.episode_count or 0) + 1):
        get_or_none(Episode, Episode.key(show_id, number, episode))


def reads_bench(emulator: Emulator, sample: sample_tmdb.SampleTMDB, app: Any, ids: list[int], runs: int) -> list[str]:
    seasons = reads_setup(tmdb.get_tmdb())
    movies = [ids[0], ids[1], ids[len(ids) // 3], ids[2 * len(ids) // 3], ids[-1]]
    searches = ["Living Dead", "Bonanza", "Open Movie Diaries", f"Movie {ids[-1]}", "Sample Movie"]  # each finds some
    routes: list[tuple[str, str, list[tuple[str, Callable[[], Any]]]]] = [
        ("GET /lists", "Scan, filter on the type", [("/lists", lambda: list(MediaList.scan()))] * runs),
        ("GET /lists/{slug}", f"GetItem + {PAGE} GetItem (members)",
         [(f"/lists/{s}", partial(naive_list, s)) for s in jobs.LISTS]),
        ("GET /movies/{id}", "GetItem + GetItem per genre",
         [(f"/movies/{i}", partial(naive_detail, Movie, "movie", i)) for i in movies]),
        ("GET /shows/{id}", "GetItem + GetItem per genre",
         [(f"/shows/{i}", partial(naive_detail, Show, "tv", i)) for i in SHOWS]),
        ("GET /shows/{id}/seasons/{n}", "GetItem + GetItem per episode",
         [(f"/shows/{s}/seasons/{n}", partial(naive_season, s, n)) for s, n in seasons]),
        ("GET /genres", "Scan, filter on the type", [("/genres", lambda: list(Genre.scan()))] * runs),
        ("GET /search?q=", "Scan, filter contains(title, q)",
         [(f"/search?q={q.replace(' ', '+')}", partial(lambda q: list(Media.scan(Media.title.contains(q))), q))
          for q in searches]),
    ]  # fmt: skip
    http = Client(app, stage_name="bench", project_dir=str(ROOT)).http

    def read(path: str) -> None:
        response = http.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.body[:300]!r}")

    cold = calls(emulator, partial(read, "/genres"))  # and now read.py holds the genre names for 5 minutes
    sample.reset_requests()
    lines = [
        f"catalog reads: DynamoDB calls per request (median, max of {runs}+ calls a route), of stored data, genre "
        f"names cached; naive reads of the same table ({CatalogItem.count()} items)",
        f"{'route':30}{'calls':>6}{'max':>5}{'naive':>7}{'ratio':>7}  naive read",
    ]
    worst = 0
    for route, naive_label, pairs in routes:
        ours = [calls(emulator, partial(read, path)) for path, _ in pairs]
        naive = [calls(emulator, naive_read) for _, naive_read in pairs]
        worst = max(worst, *ours)
        mine, theirs = statistics.median(ours), statistics.median(naive)
        ratio = f"{theirs / mine:.1f}" if mine else "-"
        lines.append(f"{route:30}{mine:>6.0f}{max(ours):>5}{theirs:>7.0f}{ratio:>7}  {naive_label}")
    fetched = len(sample.served())
    return [
        *lines,
        f"(GET /genres before the names were cached, once a process every 5 minutes: {cold} call)",
        f"TMDB requests during these reads: {fetched}" + (" (all of stored data)" if not fetched else " (MISSES)"),
        f"DynamoDB calls per read route: max {worst} (target <= 2) {'PASS' if worst <= 2 else 'FAIL'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--catalog", type=int, default=1500, help="synthetic movies (the seed's 16 are added)")
    parser.add_argument("--changed", type=int, default=1000)
    args = parser.parse_args()
    sample = sample_tmdb.SampleTMDB(port=0, synthetic_movies=args.catalog).start()
    os.environ.update(TMDB_BASE_URL=sample.url, TMDB_API_KEY=sample.api_key, TMDB_RATE_LIMIT="1000")
    os.environ.pop("TMDB_TOKEN", None)
    seed = [int(m["id"]) for m in json.loads(sample_tmdb.CATALOG.read_text(encoding="utf-8"))["movies"]]
    ids = seed + list(range(900_001, 900_001 + args.catalog))
    if args.runs < 1 or not 0 < args.changed <= len(ids):
        parser.error(f"--runs must be 1 or more, --changed 1..{len(ids)} (the catalog's movies)")
    runtime = LocalRuntime(
        RuntimeOptions(
            data_dir=None, emulator_port=0, serve_api=False, run_ticker=False, run_pollers=False,
            run_migrations=False, stage="bench",
        )
    )  # fmt: skip
    started = time.perf_counter()
    runtime.start()
    assert runtime.emulator is not None
    try:
        fill(ids, midnight(datetime.now(UTC).date() - timedelta(days=args.runs + 3)))
        reads = reads_bench(runtime.emulator, sample, runtime.app, ids, args.runs)  # first: the sync edits titles
        print("\n".join([*sync_bench(runtime.emulator, sample, ids, args), "", *reads]))
    finally:
        runtime.stop()
        sample.stop()
    print(f"(whole benchmark: {time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
