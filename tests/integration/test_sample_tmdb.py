"""The sample TMDB server answers in TMDB's shapes, and its test controls (changes, faults, lists) behave.

Only the standard library's HTTP clients talk to it here, over 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from infra.local.upstreams.tmdb import SampleTMDB

TODAY = date(2025, 6, 1)
NOTLD = 10331  # Night of the Living Dead
RUNNING_SHOW, ENDED_SHOW_WITH_SPECIALS = 207001, 2310

ERROR_KEYS = {"success", "status_code", "status_message"}
PAGE_KEYS = {"page", "results", "total_pages", "total_results"}
MOVIE_KEYS = {
    "adult", "backdrop_path", "belongs_to_collection", "budget", "genres", "homepage", "id", "imdb_id",
    "origin_country", "original_language", "original_title", "overview", "popularity", "poster_path",
    "production_companies", "production_countries", "release_date", "revenue", "runtime", "spoken_languages",
    "status", "tagline", "title", "video", "vote_average", "vote_count",
}  # fmt: skip
SHOW_KEYS = {
    "adult", "backdrop_path", "created_by", "episode_run_time", "first_air_date", "genres", "homepage", "id",
    "in_production", "languages", "last_air_date", "last_episode_to_air", "name", "next_episode_to_air", "networks",
    "number_of_episodes", "number_of_seasons", "origin_country", "original_language", "original_name", "overview",
    "popularity", "poster_path", "production_companies", "production_countries", "seasons", "spoken_languages",
    "status", "tagline", "type", "vote_average", "vote_count",
}  # fmt: skip
SEASON_KEYS = {"_id", "air_date", "episodes", "name", "networks", "overview", "id", "poster_path", "season_number",
               "vote_average"}  # fmt: skip
EPISODE_REF_KEYS = {"id", "name", "overview", "vote_average", "vote_count", "air_date", "episode_number",
                    "production_code", "runtime", "season_number", "show_id", "still_path"}  # fmt: skip
EPISODE_KEYS = EPISODE_REF_KEYS | {"episode_type", "crew", "guest_stars"}
MOVIE_ITEM_KEYS = {"adult", "backdrop_path", "genre_ids", "id", "original_language", "original_title", "overview",
                   "popularity", "poster_path", "release_date", "title", "video", "vote_average",
                   "vote_count"}  # fmt: skip
SHOW_ITEM_KEYS = {"adult", "backdrop_path", "first_air_date", "genre_ids", "id", "name", "origin_country",
                  "original_language", "original_name", "overview", "popularity", "poster_path", "vote_average",
                  "vote_count"}  # fmt: skip
IMAGE_KEYS = {"aspect_ratio", "height", "iso_639_1", "file_path", "vote_average", "vote_count", "width"}


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def get(tmdb: SampleTMDB, path: str, *, auth: str = "key", timeout: float = 5, **params: Any) -> Reply:
    """GET `path`, authenticated with the api_key parameter ("key"), the bearer token ("token") or not at all."""
    headers = {"Authorization": f"Bearer {tmdb.token}"} if auth == "token" else {}
    if auth == "key":
        params["api_key"] = tmdb.api_key
    url = f"{tmdb.url}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


def assert_error(reply: Reply, status: int, code: int) -> None:
    assert reply.status == status
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json == {"success": False, "status_code": code, "status_message": reply.json["status_message"]}
    assert isinstance(reply.json["status_message"], str) and reply.json["status_message"]


@pytest.fixture
def tmdb() -> Iterator[SampleTMDB]:
    with SampleTMDB(today=TODAY) as server:
        yield server


def test_auth_with_the_bearer_token_or_the_api_key_else_401_code_7(tmdb: SampleTMDB) -> None:
    assert get(tmdb, "/3/configuration", auth="token").status == 200
    assert get(tmdb, "/3/configuration", auth="key").status == 200
    assert_error(get(tmdb, "/3/configuration", auth="none"), 401, 7)
    assert_error(get(tmdb, "/3/configuration", auth="none", api_key="wrong"), 401, 7)
    reply = get(tmdb, "/3/configuration", auth="none")
    assert reply.status == 401 and tmdb.served()[-1].status == 401


def test_movie_details_have_every_field_the_appends_and_follow_the_language(tmdb: SampleTMDB) -> None:
    reply = get(tmdb, f"/3/movie/{NOTLD}", append_to_response="translations,external_ids,images,videos")
    movie = reply.json
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    assert set(movie) == MOVIE_KEYS | {"translations", "external_ids", "images"}  # unknown "videos" is ignored
    assert movie["id"] == NOTLD and movie["title"] == "Night of the Living Dead" and movie["imdb_id"].startswith("tt")
    assert movie["external_ids"]["imdb_id"] == movie["imdb_id"]
    assert {"wikidata_id", "facebook_id", "instagram_id", "twitter_id"} <= set(movie["external_ids"])
    translations = movie["translations"]["translations"]
    assert {t["iso_639_1"] for t in translations} >= {"en", "fr", "de"}
    for t in translations:
        assert set(t) == {"iso_3166_1", "iso_639_1", "name", "english_name", "data"}
        assert set(t["data"]) == {"title", "overview", "tagline", "homepage", "runtime"}
    assert set(movie["images"]) == {"backdrops", "logos", "posters"}
    assert all(set(i) == IMAGE_KEYS for group in movie["images"].values() for i in group)
    assert movie["images"]["posters"] and movie["images"]["backdrops"]  # no language: every image
    english = get(tmdb, f"/3/movie/{NOTLD}", append_to_response="images", language="en-US").json["images"]
    assert {i["iso_639_1"] for i in english["posters"]} == {"en"}
    both = get(tmdb, f"/3/movie/{NOTLD}", append_to_response="images", language="en", include_image_language="en,null")
    assert {i["iso_639_1"] for i in both.json["images"]["posters"]} == {"en", None}

    french = get(tmdb, f"/3/movie/{NOTLD}", language="fr-FR").json
    assert french["title"] == "La Nuit des morts-vivants" and french["overview"] != movie["overview"]
    assert {g["id"]: g["name"] for g in french["genres"]}[27] == "Horreur"
    assert get(tmdb, f"/3/movie/{NOTLD}", language="fr").json["title"] == "La Nuit des morts-vivants"
    assert get(tmdb, f"/3/movie/{NOTLD}", language="ja-JP").json["title"] == "Night of the Living Dead"
    assert set(french) == MOVIE_KEYS
    assert_error(get(tmdb, f"/3/movie/{NOTLD}", append_to_response=",".join(f"x{i}" for i in range(21))), 400, 27)


def test_show_details_running_and_ended(tmdb: SampleTMDB) -> None:
    running = get(tmdb, f"/3/tv/{RUNNING_SHOW}", append_to_response="translations,external_ids,images").json
    assert set(running) == SHOW_KEYS | {"translations", "external_ids", "images"}
    assert running["status"] == "Returning Series" and running["in_production"] is True
    last, upcoming = running["last_episode_to_air"], running["next_episode_to_air"]
    assert set(last) == set(upcoming) == EPISODE_REF_KEYS
    assert last["air_date"] <= TODAY.isoformat() < upcoming["air_date"]
    assert last["season_number"] == upcoming["season_number"] == running["number_of_seasons"]  # partly aired
    assert running["last_air_date"] == last["air_date"]
    assert set(running["translations"]["translations"][0]["data"]) == {"name", "overview", "tagline", "homepage"}
    assert "tvdb_id" in running["external_ids"]

    ended = get(tmdb, f"/3/tv/{ENDED_SHOW_WITH_SPECIALS}").json
    assert ended["status"] == "Ended" and ended["in_production"] is False and ended["next_episode_to_air"] is None
    numbers = [s["season_number"] for s in ended["seasons"]]
    assert numbers[0] == 0 and ended["seasons"][0]["name"] == "Specials"
    assert ended["number_of_seasons"] == len(numbers) - 1
    assert ended["number_of_episodes"] == sum(s["episode_count"] for s in ended["seasons"] if s["season_number"])
    assert get(tmdb, f"/3/tv/{ENDED_SHOW_WITH_SPECIALS}", language="de-DE").json["overview"] != ended["overview"]


def test_season_details(tmdb: SampleTMDB) -> None:
    season = get(tmdb, f"/3/tv/{RUNNING_SHOW}/season/1").json
    assert set(season) == SEASON_KEYS and season["season_number"] == 1 and isinstance(season["_id"], str)
    episodes = season["episodes"]
    assert 3 <= len(episodes) <= 12 and [e["episode_number"] for e in episodes] == list(range(1, len(episodes) + 1))
    assert all(set(e) == EPISODE_KEYS and e["show_id"] == RUNNING_SHOW for e in episodes)
    assert episodes[0]["crew"] and episodes[0]["guest_stars"] and episodes[1]["crew"] == []
    latest = get(tmdb, f"/3/tv/{RUNNING_SHOW}/season/3").json["episodes"]
    unaired = [e for e in latest if e["air_date"] > TODAY.isoformat()]
    assert unaired and all(e["runtime"] is None for e in unaired) and len(unaired) < len(latest)
    assert len(get(tmdb, f"/3/tv/{ENDED_SHOW_WITH_SPECIALS}/season/0").json["episodes"]) >= 3
    assert_error(get(tmdb, f"/3/tv/{RUNNING_SHOW}/season/9"), 404, 34)
    assert_error(get(tmdb, "/3/tv/1/season/1"), 404, 34)


def test_lists_page_by_20_in_their_own_orders() -> None:
    with SampleTMDB(today=TODAY, synthetic_movies=45) as tmdb:
        first = get(tmdb, "/3/movie/popular").json
        assert set(first) == PAGE_KEYS and first["page"] == 1 and len(first["results"]) == 20
        assert first["total_results"] == 61 and first["total_pages"] == 4
        assert all(set(item) == MOVIE_ITEM_KEYS for item in first["results"])
        pages = [get(tmdb, "/3/movie/popular", page=p).json["results"] for p in (1, 2, 3, 4)]
        popularity = [item["popularity"] for page in pages for item in page]
        assert len(popularity) == 61 and popularity == sorted(popularity, reverse=True)
        assert get(tmdb, "/3/movie/popular", page=5).json["results"] == []
        for page in (0, 501, "x"):
            assert_error(get(tmdb, "/3/movie/popular", page=page), 400, 22)

        rated = get(tmdb, "/3/movie/top_rated").json
        averages = [item["vote_average"] for item in rated["results"]]
        assert averages == sorted(averages, reverse=True) and all(i["vote_count"] >= 100 for i in rated["results"])
        assert rated["total_results"] < first["total_results"]
        trending = get(tmdb, "/3/trending/movie/week").json["results"]
        assert all(item["media_type"] == "movie" for item in trending)
        assert [i["id"] for i in trending] != [i["id"] for i in first["results"]]
        assert get(tmdb, "/3/trending/movie/day").status == 200

        tmdb.set_list("movie/popular", [NOTLD, 19, 424242])  # unknown ids are skipped
        assert [i["id"] for i in get(tmdb, "/3/movie/popular").json["results"]] == [NOTLD, 19]
        assert get(tmdb, "/3/movie/popular", language="fr").json["results"][0]["title"] == "La Nuit des morts-vivants"

    with SampleTMDB(today=TODAY) as tmdb:
        shows = get(tmdb, "/3/tv/popular").json
        assert shows["total_results"] == 4 and all(set(item) == SHOW_ITEM_KEYS for item in shows["results"])
        assert [i["id"] for i in get(tmdb, "/3/tv/top_rated").json["results"]] != [i["id"] for i in shows["results"]]
        with pytest.raises(ValueError):
            tmdb.set_list("movie/upcoming", [1])


def test_changes_window_is_validated(tmdb: SampleTMDB) -> None:
    assert_error(get(tmdb, "/3/movie/changes", start_date="2025-05-01", end_date="2025-05-16"), 422, 20)
    assert get(tmdb, "/3/movie/changes", start_date="2025-05-01", end_date="2025-05-15").status == 200
    for bad in ("2025-5-1", "yesterday", "2025-02-30"):
        assert_error(get(tmdb, "/3/tv/changes", start_date=bad), 400, 23)
    assert_error(get(tmdb, "/3/movie/changes", page=501), 400, 22)


def test_changes_list_the_day_s_changed_ids_100_a_page() -> None:
    day = TODAY - timedelta(days=3)
    with SampleTMDB(today=TODAY, seed=False, synthetic_movies=250) as tmdb:
        for movie_id in range(900_001, 900_251):
            tmdb.change_movie(movie_id, day=day, popularity=1.0)
        window: dict[str, Any] = {"start_date": day.isoformat(), "end_date": (day + timedelta(days=1)).isoformat()}
        first = get(tmdb, "/3/movie/changes", **window).json
        assert set(first) == PAGE_KEYS and len(first["results"]) == 100
        assert first["total_results"] == 250 and first["total_pages"] == 3
        assert first["results"][0] == {"id": 900_001, "adult": False}
        assert len(get(tmdb, "/3/movie/changes", page=3, **window).json["results"]) == 50
        next_day: dict[str, Any] = {"start_date": window["end_date"], "end_date": (day + timedelta(days=2)).isoformat()}
        assert get(tmdb, "/3/movie/changes", **next_day).json["total_results"] == 0
        assert get(tmdb, "/3/movie/changes").json["total_results"] == 0  # default: yesterday and today

        tmdb.change_movie(900_007, title="Renamed")  # today
        assert [r["id"] for r in get(tmdb, "/3/movie/changes").json["results"]] == [900_007]
        assert get(tmdb, "/3/movie/900007").json["title"] == "Renamed"
        assert get(tmdb, "/3/tv/changes").json["results"] == []


def test_change_season_and_show_mark_the_show_changed(tmdb: SampleTMDB) -> None:
    tmdb.change_season(RUNNING_SHOW, 3, name="The Third")
    tmdb.change_show(ENDED_SHOW_WITH_SPECIALS, day=TODAY, vote_count=700)
    assert get(tmdb, f"/3/tv/{RUNNING_SHOW}/season/3").json["name"] == "The Third"
    assert {r["id"] for r in get(tmdb, "/3/tv/changes").json["results"]} == {RUNNING_SHOW, ENDED_SHOW_WITH_SPECIALS}


def test_deleted_movie_is_404_and_in_the_changes(tmdb: SampleTMDB) -> None:
    tmdb.delete_movie(NOTLD)
    assert_error(get(tmdb, f"/3/movie/{NOTLD}"), 404, 34)
    assert {"id": NOTLD, "adult": None} in get(tmdb, "/3/movie/changes").json["results"]
    assert NOTLD not in [i["id"] for i in get(tmdb, "/3/movie/popular").json["results"]]
    tmdb.delete_show(RUNNING_SHOW)
    assert_error(get(tmdb, f"/3/tv/{RUNNING_SHOW}/season/1"), 404, 34)


def test_added_items_get_every_field(tmdb: SampleTMDB) -> None:
    tmdb.add_movie({"id": 5, "title": "Added", "genre_ids": [18]})
    movie = get(tmdb, "/3/movie/5", append_to_response="translations,external_ids,images").json
    assert set(movie) >= MOVIE_KEYS and movie["genres"] == [{"id": 18, "name": "Drama"}]
    tmdb.add_show({"id": 6, "name": "Added Show"}, [{"season_number": 1, "episodes": [{"air_date": "2025-01-01"}]}])
    show = get(tmdb, "/3/tv/6").json
    assert set(show) == SHOW_KEYS and show["number_of_episodes"] == 1 and show["first_air_date"] == "2025-01-01"
    assert {r["id"] for r in get(tmdb, "/3/tv/changes").json["results"]} == {6}


@pytest.mark.parametrize(("kind", "status", "code"), [("500", 500, 11), ("503", 503, 46), ("404", 404, 34)])
def test_error_faults(tmdb: SampleTMDB, kind: Any, status: int, code: int) -> None:
    tmdb.fail(rf"^/3/movie/{NOTLD}$", kind)
    assert_error(get(tmdb, f"/3/movie/{NOTLD}"), status, code)
    assert get(tmdb, f"/3/movie/{NOTLD}").status == 200


def test_429_carries_retry_after_and_times_is_respected(tmdb: SampleTMDB) -> None:
    tmdb.fail(r"^/3/movie/\d+$", "429", times=2, retry_after=7)
    for _ in range(2):
        reply = get(tmdb, f"/3/movie/{NOTLD}")
        assert_error(reply, 429, 25)
        assert reply.headers["Retry-After"] == "7"
    assert get(tmdb, "/3/configuration").status == 200  # not matching: untouched
    assert get(tmdb, f"/3/movie/{NOTLD}").status == 200
    assert [r.status for r in tmdb.served(r"^/3/movie/")] == [429, 429, 200]


def test_forever_faults_until_cleared(tmdb: SampleTMDB) -> None:
    tmdb.fail("/tv/", "503", times=-1)
    assert all(get(tmdb, f"/3/tv/{RUNNING_SHOW}").status == 503 for _ in range(5))
    tmdb.clear_faults()
    assert get(tmdb, f"/3/tv/{RUNNING_SHOW}").status == 200


def test_malformed_and_html_faults_answer_200(tmdb: SampleTMDB) -> None:
    tmdb.fail(r"^/3/movie/popular$", "malformed")
    reply = get(tmdb, "/3/movie/popular")
    assert reply.status == 200 and reply.body.startswith(b"{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.body)
    tmdb.fail(r"^/3/movie/popular$", "html")
    reply = get(tmdb, "/3/movie/popular")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html") and b"<html" in reply.body
    assert get(tmdb, "/3/movie/popular").json["page"] == 1


def test_a_broken_record_is_an_internal_error_not_a_dropped_connection(tmdb: SampleTMDB) -> None:
    tmdb.change_movie(NOTLD, genres="not a list of genres")
    assert_error(get(tmdb, f"/3/movie/{NOTLD}"), 500, 11)
    with pytest.raises(ValueError):
        tmdb.fail(".", "teapot")  # type: ignore[arg-type]


def test_timeout_fault_delays_the_answer(tmdb: SampleTMDB) -> None:
    tmdb.fail(rf"^/3/movie/{NOTLD}$", "timeout", times=2, delay=0.4)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        get(tmdb, f"/3/movie/{NOTLD}", timeout=0.1)
    started = time.monotonic()
    assert get(tmdb, f"/3/movie/{NOTLD}", timeout=5).status == 200  # a patient client gets the normal answer
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert get(tmdb, f"/3/movie/{NOTLD}").status == 200
    assert time.monotonic() - started < 0.3


def test_synthetic_items() -> None:
    with SampleTMDB(today=TODAY, seed=False, synthetic_movies=3, synthetic_shows=2) as tmdb:
        movies = get(tmdb, "/3/movie/popular").json
        assert sorted(i["id"] for i in movies["results"]) == [900_001, 900_002, 900_003]
        movie = get(tmdb, "/3/movie/900001", append_to_response="translations,external_ids,images").json
        assert movie["title"] == "Sample Movie 900001" and set(movie) >= MOVIE_KEYS
        assert all(movie[k] is not None for k in ("release_date", "runtime", "imdb_id", "poster_path"))
        assert 2 <= len(movie["translations"]["translations"]) <= 3  # English plus one or two
        assert get(tmdb, "/3/movie/900002", language="fr").json["title"] == "Film d'exemple 900002"
        show = get(tmdb, "/3/tv/800002").json
        assert show["name"] == "Sample Show 800002" and show["number_of_seasons"] == 2
        assert [s["episode_count"] for s in show["seasons"]] == [6, 6]
        assert len(get(tmdb, "/3/tv/800001/season/2").json["episodes"]) == 6
        assert get(tmdb, "/3/tv/popular").json["total_results"] == 2


def test_search_genres_and_configuration(tmdb: SampleTMDB) -> None:
    found = get(tmdb, "/3/search/movie", query="NIGHT of").json
    assert set(found) == PAGE_KEYS and [i["id"] for i in found["results"]] == [NOTLD]
    assert [i["id"] for i in get(tmdb, "/3/search/movie", query="symphonie des").json["results"]] == [653]
    assert get(tmdb, "/3/search/movie", query="zzzz").json == {
        "page": 1, "results": [], "total_pages": 0, "total_results": 0,
    }  # fmt: skip
    shows = get(tmdb, "/3/search/tv", query="bonanza").json["results"]
    assert [i["id"] for i in shows] == [ENDED_SHOW_WITH_SPECIALS] and set(shows[0]) == SHOW_ITEM_KEYS

    names = {}
    for language in ("en", "fr", "de-DE", "es", "ja"):
        genres = get(tmdb, "/3/genre/movie/list", language=language).json
        assert set(genres) == {"genres"} and all(set(g) == {"id", "name"} for g in genres["genres"])
        names[language] = {g["id"]: g["name"] for g in genres["genres"]}[35]
    assert names == {"en": "Comedy", "fr": "Comédie", "de-DE": "Komödie", "es": "Comedia", "ja": "Comedy"}
    assert {g["id"] for g in get(tmdb, "/3/genre/tv/list").json["genres"]} >= {10759, 10765, 18, 37}

    configuration = get(tmdb, "/3/configuration").json
    assert set(configuration) == {"images", "change_keys"}
    assert {"base_url", "secure_base_url", "poster_sizes", "backdrop_sizes"} <= set(configuration["images"])


@pytest.mark.parametrize(
    ("path", "params", "keys"),
    [
        ("/3/configuration", {}, {"images", "change_keys"}),
        (f"/3/movie/{NOTLD}", {}, MOVIE_KEYS),
        (f"/3/tv/{RUNNING_SHOW}", {}, SHOW_KEYS),
        (f"/3/tv/{RUNNING_SHOW}/season/2", {}, SEASON_KEYS),
        ("/3/movie/popular", {}, PAGE_KEYS),
        ("/3/movie/top_rated", {"page": 2}, PAGE_KEYS),
        ("/3/trending/movie/week", {}, PAGE_KEYS),
        ("/3/tv/popular", {}, PAGE_KEYS),
        ("/3/tv/top_rated", {}, PAGE_KEYS),
        ("/3/movie/changes", {}, PAGE_KEYS),
        ("/3/tv/changes", {"start_date": "2025-05-01", "end_date": "2025-05-02"}, PAGE_KEYS),
        ("/3/genre/movie/list", {"language": "de"}, {"genres"}),
        ("/3/genre/tv/list", {}, {"genres"}),
        ("/3/search/movie", {"query": "a"}, PAGE_KEYS),
        ("/3/search/tv", {"query": "a"}, PAGE_KEYS),
        (f"/3/movie/{NOTLD}/external_ids", {}, {"id", "imdb_id", "wikidata_id", "facebook_id", "instagram_id",
                                               "twitter_id"}),
        ("/3/movie/1", {}, ERROR_KEYS),
        ("/3/person/1", {}, ERROR_KEYS),
    ],
)  # fmt: skip
def test_every_response_is_json_with_the_documented_keys(
    tmdb: SampleTMDB, path: str, params: dict[str, Any], keys: set[str]
) -> None:
    reply = get(tmdb, path, **params)
    assert reply.headers["Content-Type"].startswith("application/json")
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    assert set(reply.json) == keys


def test_keep_alive_and_the_request_log(tmdb: SampleTMDB) -> None:
    tmdb.reset_requests()
    connection = http.client.HTTPConnection("127.0.0.1", tmdb.port, timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/3/movie/19?language=de", headers={"Authorization": f"Bearer {tmdb.token}"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["id"] == 19
            assert not response.will_close  # HTTP/1.1 with Content-Length: the connection stays open
        sock = connection.sock
        connection.request("GET", "/3/configuration", headers={"Authorization": f"Bearer {tmdb.token}"})
        connection.getresponse().read()
        assert connection.sock is sock
    finally:
        connection.close()
    served = tmdb.served(r"^/3/movie/")
    assert len(served) == 3 and len(tmdb.served()) == 4
    assert served[0].method == "GET" and served[0].query == {"language": "de"} and served[0].status == 200
    assert served[0].at <= served[1].at <= served[2].at and served[0].wall > 0
    tmdb.reset_requests()
    assert tmdb.served() == []
