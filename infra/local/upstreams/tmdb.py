"""A sample TMDB API v3 server: a local stand-in for https://api.themoviedb.org, which cannot be reached from here.

Tests, and `make run` when no TMDB credentials are configured, point the TMDB client at `SampleTMDB().url`.
Responses follow the TMDB shapes note: field names, types and nullability, the paging envelope, and the error body
`{"success": false, "status_code": <code>, "status_message": <text>}` with its HTTP status (429 with Retry-After).

The data: a seed catalog of public-domain and openly licensed films and series (`tmdb_catalog.json`; titles and
years are real, the rest, overviews included, is written for this sample; `today±N` air dates keep the running
show's latest season partly aired), plus generated items for scale tests. The changes feed is kept by day: a window
runs from `start_date`'s day up to, not including, `end_date`'s (equal dates: that day); by default yesterday and
today (UTC, or the `today` given).

    with SampleTMDB(synthetic_movies=50) as tmdb:
        tmdb.fail(r"^/3/movie/10331$", "429", times=2)
        requests.get(tmdb.url + "/3/movie/10331", params={"api_key": tmdb.api_key})
        assert [r.status for r in tmdb.served(r"^/3/movie/10331$")] == [429]
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

CATALOG = Path(__file__).with_name("tmdb_catalog.json")
PER_PAGE, MAX_PAGE, MAX_APPENDS, MAX_CHANGES_DAYS = 20, 500, 20, 14  # changes pages hold 100 ids
TOP_RATED_MIN_VOTES = {"movie": 100, "tv": 50}
LISTS = ("movie/popular", "movie/top_rated", "trending/movie/week", "trending/movie/day", "tv/popular", "tv/top_rated")
FaultKind = Literal["500", "503", "timeout", "429", "malformed", "404", "html"]
FAULT_KINDS = get_args(FaultKind)
FAULT_CODES = {"500": 11, "503": 46, "404": 34, "429": 25}
JSON_TYPE = "application/json;charset=utf-8"
MAINTENANCE_PAGE = b"<!DOCTYPE html>\n<html><head><title>Maintenance</title></head><body><h1>TMDB is down for \
maintenance</h1><p>We will be back shortly.</p></body></html>\n"
ERRORS: dict[int, tuple[int, str]] = {
    7: (401, "Invalid API key: You must be granted a valid key."),
    11: (500, "Internal error: Something went wrong, contact TMDB."),
    20: (422, "Invalid date range: Should be a range no longer than 14 days."),
    22: (400, "Invalid page: Pages start at 1 and max at 500. They are expected to be an integer."),
    23: (400, "Invalid date: Format needs to be YYYY-MM-DD."),
    25: (429, "Your request count is over the allowed limit."),
    27: (400, "Too many append to response objects: The maximum number of remote calls is 20."),
    34: (404, "The resource you requested could not be found."),
    46: (503, "The API is undergoing maintenance. Try again later."),
}

# What a stored record holds besides its details: the appendable sub-resources and the trending score.
NO_IMAGES: dict[str, list[Any]] = {"backdrops": [], "logos": [], "posters": []}
EXTRAS: dict[str, Any] = {"translations": [], "external_ids": {}, "images": NO_IMAGES}
DEFAULTS: dict[str, dict[str, Any]] = {  # fields a record may leave out (id and title/name are required)
    "movie": {
        "adult": False, "backdrop_path": None, "belongs_to_collection": None, "budget": 0, "genres": [],
        "homepage": "", "imdb_id": None, "origin_country": [], "original_language": "en", "overview": "",
        "popularity": 0.0, "poster_path": None, "production_companies": [], "production_countries": [],
        "release_date": "", "revenue": 0, "runtime": None, "spoken_languages": [], "status": "Released",
        "tagline": "", "video": False, "vote_average": 0.0, "vote_count": 0, "trending": 0.0, **EXTRAS,
    },
    "tv": {
        "adult": False, "backdrop_path": None, "created_by": [], "episode_run_time": [], "first_air_date": None,
        "genres": [], "homepage": "", "in_production": False, "languages": [], "networks": [], "origin_country": [],
        "original_language": "en", "overview": "", "popularity": 0.0, "poster_path": None,
        "production_companies": [], "production_countries": [], "spoken_languages": [], "status": "Ended",
        "tagline": "", "type": "Scripted", "vote_average": 0.0, "vote_count": 0, **EXTRAS,
    },
}  # fmt: skip
COMPUTED_SHOW_FIELDS = ("last_air_date", "last_episode_to_air", "next_episode_to_air", "number_of_episodes",
                        "number_of_seasons", "seasons")  # fmt: skip
DETAIL_FIELDS = {  # TMDB lists them alphabetically
    "movie": sorted({*DEFAULTS["movie"], "id", "original_title", "title"} - {*EXTRAS, "trending"}),
    "tv": sorted({*DEFAULTS["tv"], "id", "name", "original_name", *COMPUTED_SHOW_FIELDS} - {*EXTRAS}),
}
ITEM_FIELDS = {
    "movie": ("adult", "backdrop_path", "genre_ids", "id", "original_language", "original_title", "overview",
              "popularity", "poster_path", "release_date", "title", "video", "vote_average", "vote_count"),
    "tv": ("adult", "backdrop_path", "first_air_date", "genre_ids", "id", "name", "origin_country",
           "original_language", "original_name", "overview", "popularity", "poster_path", "vote_average", "vote_count"),
}  # fmt: skip
EPISODE_REF_FIELDS = ("id", "name", "overview", "vote_average", "vote_count", "air_date", "episode_number",
                      "production_code", "runtime", "season_number", "show_id", "still_path")  # fmt: skip
EXTERNAL_ID_KEYS = {
    "movie": ("imdb_id", "wikidata_id", "facebook_id", "instagram_id", "twitter_id"),
    "tv": ("imdb_id", "freebase_mid", "freebase_id", "tvdb_id", "tvrage_id", "wikidata_id", "facebook_id",
           "instagram_id", "twitter_id"),
}  # fmt: skip
TRANSLATED = {"movie": ("homepage", "overview", "runtime", "tagline", "title"),
              "tv": ("homepage", "name", "overview", "tagline")}  # fmt: skip
SYNTHETIC_COMMON: dict[str, Any] = {
    "origin_country": ["US"], "production_countries": [{"iso_3166_1": "US", "name": "United States of America"}],
    "spoken_languages": [{"english_name": "English", "iso_639_1": "en", "name": "English"}],
}  # fmt: skip
LANGUAGES = {"en": ("US", "English", "English"), "fr": ("FR", "Français", "French"),
             "de": ("DE", "Deutsch", "German"), "es": ("ES", "Español", "Spanish")}  # fmt: skip

# The route table: a path without its query string -> the SampleTMDB method answering it (called with the query
# and the pattern's groups, under the lock; it returns the body or raises TMDBError).
ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), method)
    for pattern, method in [
        (r"/3/configuration", "_get_configuration"),
        (r"/3/((?:movie|tv)/(?:popular|top_rated)|trending/movie/(?:day|week))", "_get_list"),
        (r"/3/(movie|tv)/changes", "_get_changes"),
        (r"/3/genre/(movie|tv)/list", "_get_genre_list"),
        (r"/3/search/(movie|tv)", "_get_search"),
        (r"/3/(movie|tv)/(\d+)", "_get_details"),
        (r"/3/(movie|tv)/(\d+)/(translations|external_ids|images)", "_get_sub_resource"),
        (r"/3/tv/(\d+)/season/(\d+)", "_get_season"),
    ]
]


@dataclass
class Served:
    """One request the server answered, faulted ones included."""

    at: float  # time.monotonic() when it arrived
    wall: float  # time.time() when it arrived
    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class _Fault:
    pattern: re.Pattern[str]
    kind: str
    times: int  # -1: forever
    retry_after: int
    delay: float


class TMDBError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(ERRORS[code][1])
        self.code = code


def error_body(code: int) -> tuple[int, dict[str, Any]]:
    status, message = ERRORS[code]
    return status, {"success": False, "status_code": code, "status_message": message}


def _language(query: dict[str, str]) -> tuple[str, str]:
    """`fr-FR` -> ("fr", "FR"); TMDB's default is en-US."""
    lang, _, region = (query.get("language") or "en-US").partition("-")
    return lang.lower(), region.upper()


def _paged(query: dict[str, str], items: list[Any], build: Callable[[Any], Any], per_page: int) -> dict[str, Any]:
    raw = query.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise TMDBError(22)
    page = int(raw)
    return {
        "page": page,
        "results": [build(item) for item in items[(page - 1) * per_page : page * per_page]],
        "total_pages": math.ceil(len(items) / per_page),
        "total_results": len(items),
    }


def _date(raw: str | None) -> date | None:
    if raw is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise TMDBError(23)


def _translation(lang: str, data: dict[str, Any]) -> dict[str, Any]:
    country, name, english = LANGUAGES[lang]
    return {"iso_3166_1": country, "iso_639_1": lang, "name": name, "english_name": english, "data": data}


def _sample_images(slug: str) -> dict[str, Any]:
    def image(path: str, width: int, height: int, lang: str | None) -> dict[str, Any]:
        return {"aspect_ratio": round(width / height, 3), "height": height, "iso_639_1": lang, "file_path": path,
                "vote_average": 5.2, "vote_count": 1, "width": width}  # fmt: skip

    return {
        "backdrops": [image(f"/{slug}-backdrop.jpg", 1920, 1080, None)],
        "logos": [image(f"/{slug}-logo-en.png", 600, 200, "en")],
        "posters": [image(f"/{slug}-poster-en.jpg", 1000, 1500, "en"), image(f"/{slug}-poster.jpg", 1000, 1500, None)],
    }  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    # Headers and body go out in two sends: with Nagle on, the body waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "SampleTMDB/1.0"
    timeout = 60  # idle keep-alive connections are closed after a minute
    sample: SampleTMDB

    def do_GET(self) -> None:
        status, headers, body = self.sample._serve("GET", self.path, self.headers.get("Authorization"))
        try:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, e.g. on a read timeout
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # no line per request on stderr
        pass


class SampleTMDB:
    def __init__(
        self,
        *,
        port: int = 0,
        api_key: str = "sample-api-key",
        token: str = "sample-read-token",
        seed: bool = True,
        synthetic_movies: int = 0,
        synthetic_shows: int = 0,
        today: date | None = None,
    ) -> None:
        self.api_key, self.token = api_key, token
        self.today = today or datetime.now(UTC).date()  # TMDB's days are UTC days
        self.requests: list[Served] = []
        self._port = port
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._faults: list[_Fault] = []
        self._lists: dict[str, list[int]] = {}
        self._changes: dict[str, dict[date, list[int]]] = {"movie": {}, "tv": {}}
        self._items: dict[str, dict[int, dict[str, Any]]] = {"movie": {}, "tv": {}}  # kind -> id -> record
        self._seasons: dict[int, dict[int, dict[str, Any]]] = {}  # show id -> season number -> season
        catalog = json.loads(CATALOG.read_text(encoding="utf-8"))
        self._configuration: dict[str, Any] = catalog["configuration"]
        self._genres: dict[str, dict[int, dict[str, str]]] = {
            kind: {g["id"]: g["names"] for g in genres} for kind, genres in catalog["genres"].items()
        }
        for movie in catalog["movies"] if seed else []:
            self._store_movie(movie)
        for entry in catalog["shows"] if seed else []:
            self._store_show(entry["show"], entry["seasons"])
        for i in range(synthetic_movies):
            self._store_movie(self._synthetic_movie(i))
        for i in range(synthetic_shows):
            self._store_show(*self._synthetic_show(i))

    def start(self) -> SampleTMDB:
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), type("Handler", (_Handler,), {"sample": self}))
        self._server.block_on_close = False
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True, name="tmdb")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> SampleTMDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # -- state for tests --

    def change_movie(self, movie_id: int, day: date | None = None, **fields: Any) -> None:
        """Update the stored movie's fields and list it in `day`'s changes (default `today`)."""
        with self._lock:
            self._items["movie"][movie_id].update(fields)
            self._record_change("movie", movie_id, day)

    def change_show(self, show_id: int, day: date | None = None, **fields: Any) -> None:
        with self._lock:
            self._items["tv"][show_id].update(fields)
            self._record_change("tv", show_id, day)

    def change_season(self, show_id: int, n: int, day: date | None = None, **fields: Any) -> None:
        with self._lock:
            season = self._seasons[show_id][n]
            season.update(fields)
            self._complete_season(self._items["tv"][show_id], season)
            self._record_change("tv", show_id, day)

    def delete_movie(self, movie_id: int, day: date | None = None) -> None:
        """Details answer 404 (code 34) from now on; the id is listed in `day`'s changes."""
        with self._lock:
            del self._items["movie"][movie_id]
            self._record_change("movie", movie_id, day)

    def delete_show(self, show_id: int, day: date | None = None) -> None:
        with self._lock:
            del self._items["tv"][show_id], self._seasons[show_id]
            self._record_change("tv", show_id, day)

    def add_movie(self, record: dict[str, Any]) -> None:
        """Add or replace a movie (fields left out get defaults; `genre_ids` may stand for `genres`)."""
        with self._lock:
            self._record_change("movie", self._store_movie(record), None)

    def add_show(self, record: dict[str, Any], seasons: Iterable[dict[str, Any]]) -> None:
        """Add or replace a show with its seasons, each a dict with `season_number` and `episodes`."""
        with self._lock:
            self._record_change("tv", self._store_show(record, seasons), None)

    def set_list(self, name: str, ids: Iterable[int]) -> None:
        """Replace a list's order; ids not (or no longer) in the catalog are skipped when serving."""
        if name not in LISTS:
            raise ValueError(f"unknown list {name!r}, expected one of {LISTS}")
        with self._lock:
            self._lists[name] = list(ids)

    def fail(
        self, path_pattern: str, kind: FaultKind, times: int = 1, retry_after: int = 1, delay: float = 5.0
    ) -> None:
        """The next `times` requests (-1: all) whose path matches `path_pattern` (re.search) fail as `kind`."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}, expected one of {FAULT_KINDS}")
        if times != 0:
            with self._lock:
                self._faults.append(_Fault(re.compile(path_pattern), kind, times, retry_after, delay))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def served(self, path_pattern: str | None = None) -> list[Served]:
        with self._lock:
            return [r for r in self.requests if path_pattern is None or re.search(path_pattern, r.path)]

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- the catalog --

    def _record_change(self, kind: str, item_id: int, day: date | None) -> None:
        ids = self._changes[kind].setdefault(day or self.today, [])
        if item_id not in ids:
            ids.append(item_id)

    def _complete(self, kind: str, record: dict[str, Any]) -> dict[str, Any]:
        item = {**copy.deepcopy(DEFAULTS[kind]), **copy.deepcopy(record)}
        title = "title" if kind == "movie" else "name"
        item.setdefault(f"original_{title}", item[title])
        if "genre_ids" in item:  # named by id only, as list items do
            item["genres"] = [{"id": i, "name": self._genres[kind].get(i, {}).get("en", "")} for i in item["genre_ids"]]
            del item["genre_ids"]
        return item

    def _store_movie(self, record: dict[str, Any]) -> int:
        movie = self._complete("movie", record)
        self._items["movie"][movie["id"]] = movie
        return int(movie["id"])

    def _store_show(self, record: dict[str, Any], seasons: Iterable[dict[str, Any]]) -> int:
        show = self._complete("tv", record)
        stored = {int(s["season_number"]): copy.deepcopy(s) for s in seasons}
        for season in stored.values():
            self._complete_season(show, season)
        if not show["first_air_date"]:
            dates = [e["air_date"] for n, s in stored.items() if n > 0 for e in s["episodes"] if e["air_date"]]
            show["first_air_date"] = min(dates, default=None)
        self._items["tv"][show["id"]], self._seasons[show["id"]] = show, stored
        return int(show["id"])

    def _complete_season(self, show: dict[str, Any], season: dict[str, Any]) -> None:
        """Fill in what a season and its episodes leave out; `today±N` air dates become dates."""
        n, show_id, run_times = int(season["season_number"]), show["id"], show["episode_run_time"]
        episodes = season.setdefault("episodes", [])
        for i, episode in enumerate(episodes, 1):
            relative = re.fullmatch(r"today([+-]\d+)", str(episode.get("air_date")))
            if relative:
                episode["air_date"] = (self.today + timedelta(days=int(relative[1]))).isoformat()
            air_date, number = episode.setdefault("air_date", None), episode.setdefault("episode_number", i)
            aired = air_date is not None and air_date <= self.today.isoformat()
            defaults = {
                "episode_type": "finale" if i == len(episodes) and n > 0 else "standard",
                "id": show_id * 10_000 + n * 100 + number, "name": f"Episode {number}", "overview": "",
                "production_code": "", "runtime": run_times[0] if aired and run_times else None, "still_path": None,
                "vote_average": 0.0, "vote_count": 0, "crew": [], "guest_stars": [],
            }  # fmt: skip
            episode.update({**defaults, **episode, "season_number": n, "show_id": show_id})
        first_aired = episodes[0]["air_date"] if episodes else None
        defaults = {"air_date": first_aired, "id": show_id * 100 + n, "name": "Specials" if n == 0 else f"Season {n}",
                    "overview": "", "poster_path": None, "vote_average": 0.0}  # fmt: skip
        season.update({**defaults, **season})

    def _synthetic_movie(self, i: int) -> dict[str, Any]:
        movie_id, runtime, genres = 900_001 + i, 80 + i % 60, list(self._genres["movie"])
        slug, texts = f"sample-movie-{movie_id}", {"homepage": "", "runtime": runtime, "tagline": ""}
        fr = {**texts, "title": f"Film d'exemple {movie_id}", "overview": f"Un film généré pour les tests, n° {i + 1}."}
        de = {**texts, "title": f"Beispielfilm {movie_id}", "overview": f"Ein generierter Film für Tests, Nr. {i + 1}."}
        return {
            **SYNTHETIC_COMMON, "id": movie_id, "imdb_id": f"tt{9_000_000 + i:07d}", "tagline": "Made for tests.",
            "title": f"Sample Movie {movie_id}", "overview": f"A generated film for scale tests, number {i + 1}.",
            "runtime": runtime, "release_date": (date(1980, 1, 1) + timedelta(days=i * 97 % 16_000)).isoformat(),
            "genre_ids": [genres[i % len(genres)], genres[(i * 7 + 3) % len(genres)]],
            "popularity": round(1 + i * 7919 % 997 / 10, 3), "vote_average": round(4 + i * 31 % 60 / 10, 1),
            "vote_count": i * 53 % 3000, "trending": round(i * 613 % 1009 / 10, 2),
            "budget": 1_000_000 * (i % 50), "revenue": 2_500_000 * (i % 37), "video": False,
            "production_companies": [{"id": 99_001, "logo_path": None, "name": "Sample Films", "origin_country": "US"}],
            "poster_path": f"/{slug}-poster-en.jpg", "backdrop_path": f"/{slug}-backdrop.jpg",
            "translations": [_translation("fr", fr)] + ([_translation("de", de)] if i % 2 == 0 else []),
            "external_ids": {"wikidata_id": f"Q{90_000_000 + i}"}, "images": _sample_images(slug),
        }  # fmt: skip

    def _synthetic_show(self, i: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        show_id, genres, first = 800_001 + i, list(self._genres["tv"]), date(2000, 1, 3) + timedelta(days=i * 13 % 7000)
        slug, fr = f"sample-show-{show_id}", {"homepage": "", "name": f"Série d'exemple {show_id}", "overview": ""}
        show = {
            **SYNTHETIC_COMMON, "id": show_id, "name": f"Sample Show {show_id}", "episode_run_time": [30],
            "overview": f"A generated series for scale tests, number {i + 1}.", "genre_ids": [genres[i % len(genres)]],
            "networks": [{"id": 99_002, "logo_path": None, "name": "Sample Network", "origin_country": "US"}],
            "popularity": round(1 + i * 4099 % 991 / 10, 3), "vote_average": round(4 + i * 29 % 60 / 10, 1),
            "vote_count": i * 47 % 2000, "languages": ["en"], "poster_path": f"/{slug}-poster-en.jpg",
            "backdrop_path": f"/{slug}-backdrop.jpg", "translations": [_translation("fr", {**fr, "tagline": ""})],
            "images": _sample_images(slug), "external_ids": {"imdb_id": f"tt{8_000_000 + i:07d}", "tvdb_id": 7000 + i},
        }  # fmt: skip
        aired = [[(first + timedelta(days=365 * (n - 1) + 7 * e)).isoformat() for e in range(6)] for n in (1, 2)]
        return show, [{"season_number": n, "episodes": [{"air_date": d} for d in aired[n - 1]]} for n in (1, 2)]

    # -- serving --

    def _serve(self, method: str, target: str, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        at, wall = time.monotonic(), time.time()
        split = urlsplit(target)
        path, query = split.path, dict(parse_qsl(split.query, keep_blank_values=True))
        status, headers, body = self._respond(path, query, authorization)
        with self._lock:
            self.requests.append(Served(at, wall, method, path, query, status))
        return status, headers, body

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            fault = next((f for f in self._faults if f.pattern.search(path)), None)
            if fault is not None and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
            return fault

    def _respond(self, path: str, query: dict[str, str], auth: str | None) -> tuple[int, dict[str, str], bytes]:
        fault = self._take_fault(path)
        kind = fault.kind if fault else None
        if fault and kind == "timeout":
            time.sleep(fault.delay)  # then answer normally: a client with a shorter read timeout gave up already
        if fault and kind in FAULT_CODES:
            status, body = error_body(FAULT_CODES[kind])
            retry_after = {"Retry-After": str(fault.retry_after)} if kind == "429" else {}
            return status, {"Content-Type": JSON_TYPE, **retry_after}, json.dumps(body).encode()
        if kind == "html":
            return 200, {"Content-Type": "text/html; charset=utf-8"}, MAINTENANCE_PAGE
        status, answer = self._answer(path, query, auth)
        raw = json.dumps(answer, ensure_ascii=False).encode()
        if kind == "malformed":
            status, raw = 200, raw[: len(raw) // 2]
        return status, {"Content-Type": JSON_TYPE}, raw

    def _answer(self, path: str, query: dict[str, str], auth: str | None) -> tuple[int, dict[str, Any]]:
        if query.get("api_key") != self.api_key and auth != f"Bearer {self.token}":
            return error_body(7)
        for pattern, method in ROUTES:
            match = pattern.fullmatch(path)
            if match:
                try:
                    with self._lock:
                        return 200, getattr(self, method)(query, *match.groups())
                except TMDBError as exc:
                    return error_body(exc.code)
                except Exception:  # a bug here (or a test's odd record): TMDB's internal error, traceback on stderr
                    traceback.print_exc()
                    return error_body(11)
        return error_body(34)

    # -- endpoints --

    def _get_configuration(self, query: dict[str, str]) -> dict[str, Any]:
        return copy.deepcopy(self._configuration)

    def _get_genre_list(self, query: dict[str, str], kind: str) -> dict[str, Any]:
        lang, _ = _language(query)
        return {"genres": [{"id": i, "name": n.get(lang) or n["en"]} for i, n in self._genres[kind].items()]}

    def _record(self, kind: str, item_id: str) -> dict[str, Any]:
        record = self._items[kind].get(int(item_id))
        if record is None:
            raise TMDBError(34)
        return record

    def _localized(self, kind: str, record: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        """The texts in the request's language (`fr-CA`: an fr-CA translation, else any fr), else English."""
        lang, region = _language(query)
        found = [t for t in record["translations"] if t["iso_639_1"] == lang] if lang != "en" else []
        best = next((t for t in found if t["iso_3166_1"] == region), found[0] if found else None)
        data = best["data"] if best else {}
        texts = {key: data.get(key) or record[key] for key in ("title" if kind == "movie" else "name", "overview")}
        texts["tagline"] = data.get("tagline") or record["tagline"]
        names = self._genres[kind]
        texts["genres"] = [
            {"id": g["id"], "name": names.get(g["id"], {}).get(lang) or names.get(g["id"], {}).get("en") or g["name"]}
            for g in record["genres"]
        ]
        return texts

    def _get_details(self, query: dict[str, str], kind: str, item_id: str) -> dict[str, Any]:
        appends = {a.strip() for a in query.get("append_to_response", "").split(",") if a.strip()}
        if len(appends) > MAX_APPENDS:
            raise TMDBError(27)
        record = self._record(kind, item_id)
        body = self._show_details(record) if kind == "tv" else {key: record[key] for key in DETAIL_FIELDS[kind]}
        body.update(self._localized(kind, record, query))
        for name in ("translations", "external_ids", "images"):
            if name in appends:  # other sub-requests are ignored here, as TMDB ignores unknown ones
                body[name] = self._appended(kind, record, name, query)
        return copy.deepcopy(body)

    def _get_sub_resource(self, query: dict[str, str], kind: str, item_id: str, name: str) -> dict[str, Any]:
        return copy.deepcopy({"id": int(item_id), **self._appended(kind, self._record(kind, item_id), name, query)})

    def _appended(self, kind: str, record: dict[str, Any], name: str, query: dict[str, str]) -> dict[str, Any]:
        if name == "external_ids":
            ids = {key: record["external_ids"].get(key) for key in EXTERNAL_ID_KEYS[kind]}
            return {**ids, "imdb_id": record["imdb_id"]} if kind == "movie" else ids
        if name == "images":  # filtered by `language` plus `include_image_language` ("null": untagged images)
            wanted: set[str | None] | None = None
            if "language" in query or "include_image_language" in query:
                wanted = {_language(query)[0]} if "language" in query else set()
                also = [code.strip() for code in query.get("include_image_language", "").split(",") if code.strip()]
                wanted |= {None if code == "null" else code for code in also}
            images = record["images"]
            return {
                group: [i for i in images.get(group, []) if wanted is None or i["iso_639_1"] in wanted]
                for group in ("backdrops", "logos", "posters")
            }
        english = _translation("en", {key: record.get(key) for key in TRANSLATED[kind]})
        translations = [english, *(t for t in record["translations"] if t["iso_639_1"] != "en")]

        def data(t: dict[str, Any]) -> dict[str, Any]:  # every key, never null: "" for texts, 0 for the runtime
            values = {key: t["data"].get(key) for key in TRANSLATED[kind]}
            return {key: (0 if key == "runtime" else "") if value is None else value for key, value in values.items()}

        return {"translations": [{**t, "data": data(t)} for t in translations]}

    def _show_details(self, record: dict[str, Any]) -> dict[str, Any]:
        seasons, today = self._seasons[record["id"]], self.today.isoformat()
        regular = [e for n, s in seasons.items() if n > 0 for e in s["episodes"]]

        def order(e: dict[str, Any]) -> tuple[str, int, int]:
            return e["air_date"], e["season_number"], e["episode_number"]

        last = max((e for e in regular if e["air_date"] and e["air_date"] <= today), key=order, default=None)
        upcoming = min((e for e in regular if e["air_date"] and e["air_date"] > today), key=order, default=None)
        computed = {
            "last_air_date": last["air_date"] if last else None,
            "last_episode_to_air": {k: last[k] for k in EPISODE_REF_FIELDS} if last else None,
            "next_episode_to_air": {k: upcoming[k] for k in EPISODE_REF_FIELDS} if upcoming else None,
            "number_of_episodes": len(regular),
            "number_of_seasons": sum(1 for n in seasons if n > 0),
            "seasons": [
                {"air_date": s["air_date"], "episode_count": len(s["episodes"]), "id": s["id"], "name": s["name"],
                 "overview": s["overview"], "poster_path": s["poster_path"], "season_number": n,
                 "vote_average": s["vote_average"]}
                for n, s in sorted(seasons.items())
            ],
        }  # fmt: skip
        return {key: computed[key] if key in computed else record[key] for key in DETAIL_FIELDS["tv"]}

    def _get_season(self, query: dict[str, str], show_id: str, number: str) -> dict[str, Any]:
        show = self._record("tv", show_id)
        season = self._seasons[show["id"]].get(int(number))
        if season is None:
            raise TMDBError(34)
        return copy.deepcopy({
            "_id": f"{season['id']:024x}", "air_date": season["air_date"], "episodes": season["episodes"],
            "name": season["name"], "networks": show["networks"], "overview": season["overview"], "id": season["id"],
            "poster_path": season["poster_path"], "season_number": season["season_number"],
            "vote_average": season["vote_average"],
        })  # fmt: skip

    def _item(self, kind: str, record: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        item = {**record, **self._localized(kind, record, query), "genre_ids": [g["id"] for g in record["genres"]]}
        return copy.deepcopy({key: item[key] for key in ITEM_FIELDS[kind]})

    def _get_list(self, query: dict[str, str], name: str) -> dict[str, Any]:
        kind = "tv" if name.startswith("tv/") else "movie"
        store = self._items[kind]
        if name in self._lists:
            records = [store[i] for i in self._lists[name] if i in store]
        elif name.endswith("top_rated"):
            rated = [r for r in store.values() if r["vote_count"] >= TOP_RATED_MIN_VOTES[kind]]
            records = sorted(rated, key=lambda r: (-r["vote_average"], -r["vote_count"], r["id"]))
        else:
            score = "trending" if name.startswith("trending/") else "popularity"
            records = sorted(store.values(), key=lambda r: (-r[score], r["id"]))
        extra = {"media_type": "movie"} if name.startswith("trending/") else {}
        return _paged(query, records, lambda r: {**self._item(kind, r, query), **extra}, PER_PAGE)

    def _get_search(self, query: dict[str, str], kind: str) -> dict[str, Any]:
        """Case-insensitive substring of the title or original title; `year` / `first_air_date_year` narrow it."""
        text = query.get("query", "").strip().casefold()
        year = query.get("primary_release_year") or query.get("year") or query.get("first_air_date_year") or ""
        names, released = (("title", "original_title"), "release_date") if kind == "movie" else (
            ("name", "original_name"), "first_air_date")  # fmt: skip
        hits = [
            r for r in self._items[kind].values()
            if text and any(text in (r[k] or "").casefold() for k in names) and (r[released] or "").startswith(year)
        ]  # fmt: skip
        hits.sort(key=lambda r: (-r["popularity"], r["id"]))
        return _paged(query, hits, lambda r: self._item(kind, r, query), PER_PAGE)

    def _get_changes(self, query: dict[str, str], kind: str) -> dict[str, Any]:
        start, end = _date(query.get("start_date")), _date(query.get("end_date"))
        if start is None:  # the day before end_date, or yesterday and today
            start = end - timedelta(days=1) if end else self.today - timedelta(days=1)
        end = end or self.today + timedelta(days=1)
        if (end - start).days > MAX_CHANGES_DAYS:
            raise TMDBError(20)
        days = [start] if start == end else [start + timedelta(days=d) for d in range((end - start).days)]
        store = self._items[kind]
        ids = list(dict.fromkeys(i for day in days for i in self._changes[kind].get(day, [])))
        return _paged(query, ids, lambda i: {"id": i, "adult": store[i]["adult"] if i in store else None}, 100)
