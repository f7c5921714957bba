"""The sample YTS server answers in the YTS API v2 shapes, on several mirrors whose modes and faults tests control.

Only the standard library's HTTP clients and requests talk to it here, over 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from infra.local.upstreams.base import DROPPED
from infra.local.upstreams.yts import CATALOG, MIRRORS, MISSES, SampleYTS, info_hash

NOTLD, BBB, NOSFERATU, CHARADE = "tt0063350", "tt1254207", "tt0013442", "tt0056923"
LIST, DETAILS = "/api/v2/list_movies.json", "/api/v2/movie_details.json"
ENVELOPE_KEYS = {"status", "status_message", "data", "@meta"}
META_TYPES = {"server_time": int, "server_timezone": str, "api_version": int, "execution_time": str}
MOVIE_KEYS = {
    "id", "url", "imdb_code", "title", "title_english", "title_long", "slug", "year", "rating", "runtime", "genres",
    "summary", "description_full", "synopsis", "yt_trailer_code", "language", "mpa_rating", "background_image",
    "background_image_original", "small_cover_image", "medium_cover_image", "large_cover_image", "state", "torrents",
    "date_uploaded", "date_uploaded_unix",
}  # fmt: skip
DETAIL_KEYS = (MOVIE_KEYS - {"summary", "synopsis", "state"}) | {"like_count", "description_intro"}
SCREENSHOT_KEYS = {f"{size}_screenshot_image{n}" for size in ("medium", "large") for n in (1, 2, 3)}
TORRENT_TYPES = {
    "url": str, "hash": str, "quality": str, "type": str, "is_repack": str, "video_codec": str, "bit_depth": str,
    "audio_channels": str, "seeds": int, "peers": int, "size": str, "size_bytes": int, "date_uploaded": str,
    "date_uploaded_unix": int,
}  # fmt: skip
CATALOG_IMDB_IDS = {m["imdb_id"] for m in json.loads(CATALOG.read_text(encoding="utf-8"))["movies"]}


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def data(self) -> Any:
        body = self.json
        assert self.status == 200 and body["status"] == "ok", body
        return body["data"]


def get(base: str, path: str, *, timeout: float = 5, **params: Any) -> Reply:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


@pytest.fixture
def yts() -> Iterator[SampleYTS]:
    with SampleYTS(modes={}) as server:  # every mirror ok
        yield server


def everything(yts: SampleYTS, **params: Any) -> list[dict[str, Any]]:
    return get(yts.url, LIST, limit=50, **params).data.get("movies", [])


def test_list_movies_envelope_movie_and_torrent_shapes(yts: SampleYTS) -> None:
    reply = get(yts.url, LIST)
    body = reply.json
    assert reply.headers["Content-Type"].startswith("application/json")
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    assert set(body) == ENVELOPE_KEYS and body["status"] == "ok" and body["status_message"] == "Query was successful"
    assert {key: type(value) for key, value in body["@meta"].items()} == META_TYPES and body["@meta"][
        "api_version"
    ] == 2
    data = body["data"]
    assert set(data) == {"movie_count", "limit", "page_number", "movies"}
    assert data["limit"] == 20 and data["page_number"] == 1 and data["movie_count"] == len(data["movies"])
    for movie in data["movies"]:
        assert set(movie) == MOVIE_KEYS and isinstance(movie["rating"], float) and isinstance(movie["year"], int)
        assert movie["title_long"] == f"{movie['title']} ({movie['year']})" and movie["url"].startswith(yts.url)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", movie["date_uploaded"])
        assert 1 <= len(movie["torrents"]) <= 4
        for torrent in movie["torrents"]:
            assert {key: type(value) for key, value in torrent.items()} == TORRENT_TYPES
            assert re.fullmatch(r"[0-9A-F]{40}", torrent["hash"])
            assert torrent["url"] == f"{yts.url}/torrent/download/{torrent['hash']}"
            assert torrent["hash"] == info_hash(movie["imdb_code"], torrent["quality"], torrent["type"],
                                                torrent["video_codec"])  # fmt: skip
            assert torrent["quality"] in {"720p", "1080p", "2160p", "3D"} and torrent["bit_depth"] in {"8", "10"}
            assert re.fullmatch(r"\d+\.\d\d [MG]B", torrent["size"]) and torrent["size_bytes"] > 0


def test_the_seed_is_the_tmdb_catalog_less_the_misses(yts: SampleYTS) -> None:
    movies = everything(yts)
    assert {m["imdb_code"] for m in movies} == CATALOG_IMDB_IDS - MISSES and 2 <= len(MISSES) <= 3
    torrents = [t for m in movies for t in m["torrents"]]
    assert sum(t["quality"] == "3D" for t in torrents) == 1
    assert any(t["video_codec"] == "x265" for t in torrents) and any(t["quality"] == "2160p" for t in torrents)
    for imdb_id in MISSES:
        data = get(yts.url, LIST, query_term=imdb_id).data
        assert data == {"movie_count": 0, "limit": 20, "page_number": 1}  # no "movies" key
    assert [m["imdb_code"] for m in get(yts.url, LIST, query_term=NOTLD).data["movies"]] == [NOTLD]


def test_paging(yts: SampleYTS) -> None:
    total = get(yts.url, LIST).data["movie_count"]
    pages = [get(yts.url, LIST, limit=5, page=p).data for p in (1, 2, 3)]
    assert [len(p["movies"]) for p in pages] == [5, 5, total - 10] and all(p["movie_count"] == total for p in pages)
    assert [p["page_number"] for p in pages] == [1, 2, 3] and all(p["limit"] == 5 for p in pages)
    ids = [m["id"] for p in pages for m in p["movies"]]
    assert len(set(ids)) == total
    beyond = get(yts.url, LIST, limit=5, page=4).data
    assert beyond == {"movie_count": total, "limit": 5, "page_number": 4}
    assert get(yts.url, LIST, limit=51).data["limit"] == 20  # out of range: the default
    dates = [m["date_uploaded_unix"] for p in pages for m in p["movies"]]
    assert dates == sorted(dates, reverse=True)  # date_added, desc


def test_filters_and_sorting(yts: SampleYTS) -> None:
    def imdb_ids(**params: Any) -> set[str]:
        return {m["imdb_code"] for m in everything(yts, **params)}

    assert imdb_ids(quality="3D") == {BBB}
    assert imdb_ids(quality="1080p.x265") == {NOTLD, NOSFERATU}
    assert NOTLD in imdb_ids(quality="2160p") and CHARADE not in imdb_ids(quality="2160p")
    assert all(m["rating"] >= 8 for m in everything(yts, minimum_rating=8)) and imdb_ids(minimum_rating=8)
    assert imdb_ids(query_term="night of the LIVING") == {NOTLD} == imdb_ids(query_term="Night of the Living Dead 1968")
    assert imdb_ids(query_term="tt0000001") == set()
    assert "Sci-Fi" in everything(yts, genre="sci-fi")[0]["genres"]
    titles = [m["title"].casefold() for m in everything(yts, sort_by="title", order_by="asc")]
    assert titles == sorted(titles)
    years = [m["year"] for m in everything(yts, sort_by="year")]
    assert years == sorted(years, reverse=True)
    seeds = [max(t["seeds"] for t in m["torrents"]) for m in everything(yts, sort_by="seeds", order_by="asc")]
    assert seeds == sorted(seeds)


def test_movie_details_by_imdb_id_or_movie_id(yts: SampleYTS) -> None:
    movie = get(yts.url, DETAILS, imdb_id=NOTLD).data["movie"]
    assert set(movie) == DETAIL_KEYS and movie["imdb_code"] == NOTLD and movie["title"] == "Night of the Living Dead"
    assert [t["quality"] for t in movie["torrents"]] == ["720p", "1080p", "1080p", "2160p"]
    assert get(yts.url, DETAILS, movie_id=movie["id"]).data["movie"] == movie
    rich = get(yts.url, DETAILS, movie_id=movie["id"], with_images="true", with_cast="true").data["movie"]
    assert set(rich) == DETAIL_KEYS | SCREENSHOT_KEYS | {"cast"}
    unknown = get(yts.url, DETAILS, imdb_id=next(iter(MISSES))).data["movie"]  # undocumented: an empty movie
    assert unknown["id"] == 0 and unknown["torrents"] == []


def test_test_controls_change_the_data(yts: SampleYTS) -> None:
    added = yts.add_torrent(CHARADE, quality="2160p", video_codec="x265", seeds=999)
    assert added["hash"] == info_hash(CHARADE, "2160p", "web", "x265") and added["seeds"] == 999
    assert CHARADE in {m["imdb_code"] for m in everything(yts, quality="2160p")}
    assert everything(yts, sort_by="seeds")[0]["imdb_code"] == CHARADE

    yts.set_torrents(NOTLD, [{"quality": "720p", "hash": "ab" * 20}])
    assert [t["hash"] for t in get(yts.url, DETAILS, imdb_id=NOTLD).data["movie"]["torrents"]] == ["AB" * 20]
    yts.remove_movie(NOTLD)
    assert "movies" not in get(yts.url, LIST, query_term=NOTLD).data
    miss = next(iter(MISSES))
    yts.add_torrent(miss, quality="1080p")  # a catalog movie: no add_movie needed
    assert get(yts.url, LIST, query_term=miss).data["movie_count"] == 1

    with pytest.raises(KeyError):
        yts.add_torrent("tt7654321")
    yts.add_movie("tt7654321", title="A New One", year=2024, rating=6.1)
    yts.add_torrent("tt7654321", quality="720p")
    found = get(yts.url, LIST, query_term="new one").data["movies"]
    assert [(m["imdb_code"], m["rating"], len(m["torrents"])) for m in found] == [("tt7654321", 6.1, 1)]
    assert yts.movie("tt7654321") is not None and yts.movie(NOTLD) is None


def test_default_modes_first_mirror_refused_second_html() -> None:
    with SampleYTS() as yts:
        urls = yts.mirror_urls
        assert list(urls) == list(MIRRORS) and len(set(urls.values())) == len(MIRRORS)
        assert yts.modes == {"yts.mx": "down", "yts.lt": "html", "yts.gg": "ok", "yts.am": "ok", "yts.ag": "ok"}
        with pytest.raises(OSError):
            get(urls["yts.mx"], LIST, timeout=2)
        with pytest.raises(requests.ConnectionError):
            requests.get(urls["yts.mx"] + LIST, timeout=2)
        html = get(urls["yts.lt"], LIST)
        assert html.status == 200 and html.headers["Content-Type"].startswith("text/html") and b"<html" in html.body
        assert yts.url == urls["yts.gg"] and get(yts.url, LIST).data["movie_count"] > 0
        assert [r.server for r in yts.served()] == ["yts.lt", "yts.gg"]  # refused connections never arrive


def test_each_mirror_mode_and_back(yts: SampleYTS) -> None:
    urls = yts.mirror_urls
    yts.set_mirror("yts.lt", "500")
    yts.set_mirror("yts.gg", "error", message="Database error")
    yts.set_mirror("yts.am", "slow", delay=0.3)
    assert get(urls["yts.lt"], LIST).status == 500
    assert get(urls["yts.gg"], LIST).json == {"status": "error", "status_message": "Database error"}
    started = time.monotonic()
    assert get(urls["yts.am"], LIST).data["movie_count"] > 0 and time.monotonic() - started >= 0.3
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        get(urls["yts.am"], LIST, timeout=0.1)
    assert yts.url == urls["yts.mx"]

    connection = http.client.HTTPConnection("127.0.0.1", int(urls["yts.mx"].rsplit(":", 1)[1]), timeout=5)
    try:
        connection.request("GET", LIST)
        assert connection.getresponse().read()
        yts.set_mirror("yts.mx", "down")
        connection.request("GET", LIST)  # an open keep-alive connection: closed without an answer
        with pytest.raises(http.client.RemoteDisconnected):
            connection.getresponse()
    finally:
        connection.close()
    assert yts.served(server="yts.mx")[-1].status == DROPPED
    with pytest.raises(requests.ConnectionError):
        requests.get(urls["yts.mx"] + LIST, timeout=2)
    yts.set_mirror("yts.mx", "ok")  # back, on the same port
    assert yts.mirror_urls == urls and get(urls["yts.mx"], LIST).data["movie_count"] > 0
    yts.set_mirror("yts.lt", "down")
    yts.stop()
    yts.start()  # a restart keeps every mirror's port and mode
    assert yts.mirror_urls == urls and get(urls["yts.mx"], LIST).status == 200
    with pytest.raises(OSError):
        get(urls["yts.lt"], LIST, timeout=2)
    with pytest.raises(ValueError):
        yts.set_mirror("yts.mx", "flaky")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        yts.set_mirror("yts.example", "ok")


def test_faults_per_mirror_and_the_request_log(yts: SampleYTS) -> None:
    lt, gg = yts.mirror_urls["yts.lt"], yts.mirror_urls["yts.gg"]
    yts.fail(r"^/api/v2/list_movies", "429", times=2, retry_after=7, mirror="yts.lt")
    assert get(gg, LIST).status == 200  # another mirror: untouched
    for _ in range(2):
        reply = get(lt, LIST)
        assert reply.status == 429 and reply.headers["Retry-After"] == "7"
    assert get(lt, LIST).status == 200
    assert [r.status for r in yts.served(r"list_movies", server="yts.lt")] == [429, 429, 200]

    yts.fail("movie_details", "error")
    assert get(lt, DETAILS, imdb_id=NOTLD).json["status"] == "error"
    yts.fail("list_movies", "malformed")
    with pytest.raises(json.JSONDecodeError):
        get(lt, LIST).json  # noqa: B018
    yts.fail("list_movies", "drop")
    with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
        get(lt, LIST)
    yts.fail("list_movies", "html")
    assert get(lt, LIST).headers["Content-Type"].startswith("text/html")
    yts.fail("list_movies", "500", times=-1)
    assert get(lt, LIST).status == get(gg, LIST).status == 500
    yts.clear_faults()
    yts.fail("list_movies", "timeout", delay=0.3)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        get(lt, LIST, timeout=0.1)
    assert get(lt, LIST).status == 200
    with pytest.raises(ValueError):
        yts.fail(".", "teapot")  # type: ignore[arg-type]
    yts.reset_requests()
    assert yts.served() == []


@pytest.mark.parametrize("path", [f"/torrent/download/{info_hash(NOTLD, '720p')}", "/api/v2/list_movies.xml", "/"])
def test_other_paths_are_404_pages(yts: SampleYTS, path: str) -> None:
    reply = get(yts.url, path)
    assert reply.status == 404 and reply.headers["Content-Type"].startswith("text/html")
