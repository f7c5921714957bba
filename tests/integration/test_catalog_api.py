"""The catalog API on the real app (Chalice's test client) against the emulator and the sample TMDB: reads are
database first, in the requested language with English as the fallback, paged, and each at most two DynamoDB
calls; refreshes are deduplicated; bad input is a 400, unknown ids a 404, always with a JSON error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chalicelib import aws
from chalicelib.catalog import jobs as catalog_jobs
from chalicelib.catalog import read, search
from chalicelib.jobs.queues import get_queue
from chalicelib.models.catalog import MediaList, Movie
from infra.local.runtime import LocalRuntime
from infra.local.upstreams.tmdb import SampleTMDB
from tests.integration.catalog_fixtures import signed_in

Api = Callable[..., tuple[int, Any]]
NOTLD, CHARADE, RUNNING_SHOW = 10331, 4808, 207001


@pytest.fixture
def stocked(catalog: Callable[..., LocalRuntime], sample_tmdb: SampleTMDB) -> LocalRuntime:
    """The catalog with its lists, genres and one show with its seasons, as the periodic tasks would leave it."""
    runtime = catalog(run_pollers=False)
    for slug in catalog_jobs.LISTS:
        catalog_jobs.refresh_list(slug, 2)
    for movie_id in (NOTLD, CHARADE):
        catalog_jobs.sync_movie_now(movie_id)
    catalog_jobs.sync_show_now(RUNNING_SHOW)
    from chalicelib.catalog.store import save_season
    from chalicelib.models.catalog import Show
    from chalicelib.upstreams import tmdb

    show = Show.get(*Show.key(RUNNING_SHOW))
    for number in (1, 2, 3):
        save_season(show, tmdb.get_tmdb().season(RUNNING_SHOW, number))
    catalog_jobs.sync_genres(None)  # type: ignore[arg-type]
    read._genres["at"] = 0.0  # the process-wide genre cache starts cold in every test
    sample_tmdb.reset_requests()
    return runtime


def test_a_stored_movie_is_served_in_the_requested_language_with_english_as_fallback(
    stocked: LocalRuntime, api: Api
) -> None:
    status, movie = api("GET", f"/movies/{NOTLD}")
    assert status == 200
    assert movie["id"] == NOTLD and movie["type"] == "movie" and movie["complete"] and not movie["removed"]
    assert movie["title"] == "Night of the Living Dead" and movie["language"] == "en"
    assert movie["year"] == 1968 and movie["imdb_id"] and movie["runtime"]
    assert all(g["name"] for g in movie["genres"])  # names from the stored genres

    status, french = api("GET", f"/movies/{NOTLD}?language=fr")
    stored = Movie.get(*Movie.key(NOTLD))
    assert french["title"] == stored.translations["fr"]["title"] != movie["title"] and french["language"] == "fr"
    status, canadian = api("GET", f"/movies/{NOTLD}?language=fr-CA")  # no fr-CA translation: French
    assert canadian["title"] == french["title"]
    status, japanese = api("GET", f"/movies/{NOTLD}?language=ja")  # none at all: English
    assert (japanese["title"], japanese["language"]) == (movie["title"], "en")
    status, french_genres = api("GET", "/genres?language=fr&type=movie")
    assert status == 200 and {g["name"] for g in french_genres["genres"]} != {g["name"] for g in movie["genres"]}


def test_reads_are_database_first(stocked: LocalRuntime, api: Api, sample_tmdb: SampleTMDB) -> None:
    # A stored movie costs TMDB nothing
    assert api("GET", f"/movies/{NOTLD}")[0] == 200
    assert sample_tmdb.served() == []
    # A movie the catalog lacks is fetched once (one request), stored, and then served from the table
    sample_tmdb.add_movie({"id": 777123, "title": "A Film Nobody Listed", "release_date": "1950-05-05"})
    assert not Movie.count(Movie.key(777123)[0])
    status, movie = api("GET", "/movies/777123")
    assert status == 200 and movie["title"] == "A Film Nobody Listed" and movie["complete"]
    assert [r.path for r in sample_tmdb.served()] == ["/3/movie/777123"]
    assert api("GET", "/movies/777123")[0] == 200
    assert len(sample_tmdb.served()) == 1


def test_shows_seasons_lists_genres_and_search(stocked: LocalRuntime, api: Api, sample_tmdb: SampleTMDB) -> None:
    status, show = api("GET", f"/shows/{RUNNING_SHOW}")
    assert status == 200 and show["type"] == "show" and show["in_production"]
    assert [s["season_number"] for s in show["seasons"]] == [1, 2, 3]

    status, season = api("GET", f"/shows/{RUNNING_SHOW}/seasons/1")
    assert status == 200 and season["complete"] and season["episode_count"] == 6
    assert [e["episode_number"] for e in season["episodes"]] == list(range(1, 7))

    status, lists = api("GET", "/lists")
    assert [item["slug"] for item in lists["lists"]] == list(catalog_jobs.LISTS)
    assert all(item["count"] > 0 for item in lists["lists"])

    # A list, a page at a time, in the list's order
    pages, cursor, seen = 0, None, []
    while True:
        status, page = api("GET", "/lists/popular-movies?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200
        seen += [item["id"] for item in page["items"]]
        pages, cursor = pages + 1, page["next_cursor"]
        if not cursor:
            break
    members = [int(m) for m in MediaList.get(*MediaList.key("popular-movies")).members]
    assert seen == members and pages == -(-len(members) // 3)

    status, genres = api("GET", "/genres")
    assert status == 200 and {g["type"] for g in genres["genres"]} == {"movie", "tv"}

    # Search: by a word's prefix, accents and case ignored, every word typed must match, most popular first
    status, found = api("GET", "/search?q=night%20LIVING")
    assert status == 200 and [r["id"] for r in found["results"]][:1] == [NOTLD]
    status, found = api("GET", "/search?q=charad")
    assert [r["id"] for r in found["results"]] == [CHARADE]
    status, none = api("GET", "/search?q=charade%20zebra")
    assert none["results"] == [] and none["total"] == 0
    # ... in the catalog's other languages too, and served in the language asked for
    fr_title = Movie.get(*Movie.key(NOTLD)).translations["fr"]["title"]
    word = max(search.normalize(fr_title).split(), key=len)
    status, french = api("GET", f"/search?q={word}&language=fr")
    assert {"id": NOTLD, "title": fr_title} in [{"id": r["id"], "title": r["title"]} for r in french["results"]]
    assert sample_tmdb.served() == []  # all of it from the table


@pytest.mark.parametrize(
    "path, status, code, field",
    [
        ("/movies/abc", 400, "invalid_request", "id"),
        ("/movies/0", 400, "invalid_request", "id"),
        ("/movies/10331?language=french", 400, "invalid_request", "language"),
        ("/shows/207001/seasons/x", 400, "invalid_request", "number"),
        ("/lists/popular-movies?limit=0", 400, "invalid_request", "limit"),
        ("/lists/popular-movies?limit=many", 400, "invalid_request", "limit"),
        ("/lists/popular-movies?cursor=not-a-cursor", 400, "invalid_request", "cursor"),
        ("/search?q=a", 400, "invalid_request", "q"),
        ("/search", 400, "invalid_request", "q"),
        ("/genres?type=books", 400, "invalid_request", "type"),
        ("/lists/no-such-list", 404, "not_found", None),
        ("/movies/123456789", 404, "not_found", None),
        ("/shows/207001/seasons/42", 404, "not_found", None),
    ],
)
def test_bad_input_is_a_400_and_unknown_ids_a_404_in_json(
    catalog: Callable[..., LocalRuntime], api: Api, path: str, status: int, code: str, field: str | None
) -> None:
    catalog(run_pollers=False)
    got_status, body = api("GET", path)
    assert (got_status, body["error"]["code"]) == (status, code)
    assert body["error"]["message"]
    if field:
        assert body["error"]["details"]["field"] == field


def test_a_refresh_asked_five_times_sends_one_job(stocked: LocalRuntime, api: Api) -> None:
    answers = [api("POST", f"/shows/{RUNNING_SHOW}/refresh") for _ in range(5)]

    assert {status for status, _ in answers} == {202}
    assert len({body["job_id"] for _, body in answers}) == 1
    assert [body["already_pending"] for _, body in answers] == [False, True, True, True, True]
    url = aws.queue_url(get_queue("refresh").queue_name())
    attributes = aws.sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "1"
    # a movie's refresh is its own job; an id the catalog does not hold is a 404
    status, body = api("POST", f"/movies/{NOTLD}/refresh")
    assert status == 202 and body["job_id"] != answers[0][1]["job_id"]
    assert api("POST", "/movies/777124/refresh")[0] == 404


def test_a_refresh_runs_on_its_queue_and_refetches(stocked: LocalRuntime, api: Api, sample_tmdb: SampleTMDB) -> None:
    from tests.integration.platform_fixtures import wait_for

    sample_tmdb.change_movie(NOTLD, title="Night of the Living Dead (4K)")
    status, body = api("POST", f"/movies/{NOTLD}/refresh")
    assert status == 202
    stocked.start_pollers()
    wait_for(lambda: Movie.get(*Movie.key(NOTLD), consistent_read=True).title.endswith("(4K)"), 20, "the refresh")
    assert body["status_url"] == f"/admin/jobs/{body['job_id']}"


READ_ROUTES = [
    "/lists",
    "/lists/popular-movies",
    f"/movies/{NOTLD}",
    f"/shows/{RUNNING_SHOW}",
    f"/shows/{RUNNING_SHOW}/seasons/2",
    "/genres",
    "/search?q=night",
]


def test_every_read_route_costs_at_most_two_dynamodb_calls(stocked: LocalRuntime, api: Api) -> None:
    assert stocked.emulator is not None
    calls: dict[str, int] = {}
    headers = signed_in()  # made before counting: only what serving a request costs is counted
    for path in READ_ROUTES:
        read._genres["at"] = 0.0  # measured cold: a movie's genre names cost a Query of their own
        before = stocked.emulator.requests.copy()
        status, _ = api("GET", path, headers=headers)
        assert status == 200, path
        calls[path] = sum(
            n for (service, _), n in (stocked.emulator.requests - before).items() if service == "DynamoDB"
        )
    # One GetItem is the guard's (the signed-in user, read on every request so a disabled account stops at once);
    # the data itself costs one or two.
    assert {path: n for path, n in calls.items() if not 1 <= n - 1 <= 2} == {}, calls


def test_search_finds_a_rare_match_behind_hundreds_of_common_ones_most_popular_first(
    catalog: Callable[..., LocalRuntime], api: Api
) -> None:
    from chalicelib.catalog import store
    from chalicelib.upstreams.tmdb import ListItem

    catalog(run_pollers=False)
    # Given 400 titles sharing the word "common", and one more, the least popular, with a rare second word
    for n in range(400):
        store.save_stub("movie", ListItem(id=500000 + n, title=f"Common Title {n}", popularity=10 + n), ["en"])
    store.save_stub("movie", ListItem(id=600000, title="Common Zebra", popularity=1.0), ["en"])

    # When both words are typed, the rare match is found although its entry sorts after 400 others
    status, found = api("GET", "/search?q=common%20zebra")
    assert status == 200 and [r["id"] for r in found["results"]] == [600000]
    assert found["total_is_exact"]

    # And a common word alone lists the most popular first, a page at a time, saying the total is a floor
    status, common = api("GET", "/search?q=common&limit=5")
    assert [r["id"] for r in common["results"]] == [500399, 500398, 500397, 500396, 500395]
    assert common["next_cursor"] and not common["total_is_exact"] and common["total"] >= 300
    status, second = api("GET", f"/search?q=common&limit=5&cursor={common['next_cursor']}")
    assert [r["id"] for r in second["results"]] == [500394, 500393, 500392, 500391, 500390]
