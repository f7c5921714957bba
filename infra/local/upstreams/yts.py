"""A sample YTS API v2 server: local stand-ins for the YTS mirrors (yts.mx, yts.lt, ...), which cannot be reached here.

Shapes follow the YTS shapes note (/work/shared/upstream-shapes/yts.md, from the official `/api` page and typed
clients): the envelope `status`/`status_message`/`data`/`@meta`, `list_movies.json` (`movie_count`, `limit`,
`page_number`, and `movies` only when the page has any) and `movie_details.json` (by `movie_id` or `imdb_id`), torrents
with a 40-character upper-case hex `hash`.

One SampleYTS serves several mirrors, each on its own port (`mirror_urls`), all sharing the data. A mirror's mode:
"ok"; "down" (connection refused: its port is held by a bound, not listening, socket; requests still arriving on an
open keep-alive connection get the connection closed); "500" (an nginx error page); "html" (200, a Cloudflare-style
challenge page, text/html); "error" (200, `{"status": "error", "status_message": ...}`); "slow" (answers after `delay`
seconds). By default (`make run`) the first mirror is down and the second serves the HTML page, so failover shows.

The data: the sample TMDB's movies (`tmdb_catalog.json`, matched by IMDb id) with 1-4 torrents each, except MISSES.
Info-hashes are `info_hash(imdb_id, quality, type, video_codec)`. Choices where the note is silent: an unknown movie's
details are an "ok" envelope holding an empty movie with id 0; an out-of-range `limit` means 20, a bad `page` 1;
`query_term` is an IMDb code (exact) or words that must all occur in the title or year; the `.jsonp`/`.xml` variants
and `/torrent/download/<HASH>` answer 404 (no torrent library, torf or libtorrent, is installed to build a valid file).

    with SampleYTS(modes={"yts.mx": "down"}) as yts:
        requests.get(yts.mirror_urls["yts.lt"] + "/api/v2/list_movies.json", params={"query_term": "tt0063350"})
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
import traceback
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from email.message import Message
from pathlib import Path
from typing import Any, Literal, get_args

from infra.local.upstreams.base import Reply, SampleServer

CATALOG = Path(__file__).with_name("tmdb_catalog.json")
MIRRORS = ("yts.mx", "yts.lt", "yts.gg", "yts.am", "yts.ag")
MirrorMode = Literal["ok", "down", "500", "html", "error", "slow"]
MIRROR_MODES = get_args(MirrorMode)
FaultKind = Literal["500", "429", "html", "error", "malformed", "timeout", "drop"]
FAULT_KINDS = get_args(FaultKind)
QUALITIES = ("480p", "720p", "1080p", "1080p.x265", "2160p", "3D")
SORTS = ("title", "year", "rating", "peers", "seeds", "download_count", "like_count", "date_added")
JSON_TYPE, HTML_TYPE = "application/json", "text/html; charset=UTF-8"
CET = timezone(timedelta(hours=1))  # YTS reports "CET"; summer time is ignored here
EPOCH = 1_546_300_800  # 2019-01-01: seed torrents are dated within the five years after
YTS_GENRES = {"Science Fiction": "Sci-Fi"}  # TMDB genre name -> IMDb's, which YTS uses
MISSES = frozenset({"tt0807840", "tt1172203", "tt4957236"})  # Elephants Dream, Sita Sings the Blues, Cosmos Laundromat
DEFAULT_TORRENTS = ("720p/bluray/x264", "1080p/bluray/x264")  # a catalog movie not listed below, nor a miss
SEED: dict[str, tuple[str, ...]] = {  # imdb id -> torrents as "quality/type/video_codec"
    "tt0063350": ("720p/bluray/x264", "1080p/bluray/x264", "1080p/web/x265", "2160p/bluray/x265"),  # NOTLD
    "tt0056923": ("720p/bluray/x264", "1080p/bluray/x264"),  # Charade
    "tt0032599": ("720p/bluray/x264", "1080p/bluray/x264"),  # His Girl Friday
    "tt0013442": ("720p/bluray/x264", "1080p/bluray/x264", "1080p/bluray/x265"),  # Nosferatu
    "tt0017136": ("720p/bluray/x264", "1080p/bluray/x264", "2160p/bluray/x265"),  # Metropolis
    "tt0017925": ("1080p/bluray/x264",),  # The General
    "tt0012349": ("720p/bluray/x264", "1080p/bluray/x264"),  # The Kid
    "tt0037638": ("720p/web/x264",),  # Detour
    "tt0052077": ("720p/bluray/x264", "1080p/bluray/x264"),  # Plan 9 from Outer Space
    "tt0054033": ("720p/web/x264", "1080p/web/x264"),  # The Little Shop of Horrors
    "tt1254207": ("720p/bluray/x264", "1080p/bluray/x264", "2160p/web/x265", "3D/bluray/x264"),  # Big Buck Bunny
    "tt1727587": ("1080p/web/x264", "2160p/web/x265"),  # Sintel
    "tt2285752": ("720p/web/x264", "1080p/web/x264", "2160p/web/x265"),  # Tears of Steel
}
MB_PER_MINUTE = {"480p": 4, "720p": 8, "1080p": 16, "2160p": 48, "3D": 18}  # x265: 60 %
CHALLENGE_PAGE = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8"><meta name="robots" content="noindex,nofollow">
</head><body><div class="main-wrapper" role="main"><div class="main-content"><h1 class="zone-name-title h1">{host}</h1>
<h2 class="h2" id="challenge-running">Checking if the site connection is secure</h2><noscript><div class="h2">Enable
JavaScript and cookies to continue</div></noscript><p>{host} needs to review the security of your connection before
proceeding. The site is also under scheduled maintenance.</p></div></div><div class="footer" role="contentinfo">
<div class="footer-inner"><div class="text-center">Performance &amp; security by Cloudflare</div></div></div>
</body></html>
"""
NGINX_PAGE = """<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}\
</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"""
REASONS = {404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
LIST_FIELDS = ("id", "url", "imdb_code", "title", "title_english", "title_long", "slug", "year", "rating", "runtime",
               "genres", "summary", "description_full", "synopsis", "yt_trailer_code", "language", "mpa_rating",
               "background_image", "background_image_original", "small_cover_image", "medium_cover_image",
               "large_cover_image", "state", "torrents", "date_uploaded", "date_uploaded_unix")  # fmt: skip
DETAIL_FIELDS = ("id", "url", "imdb_code", "title", "title_english", "title_long", "slug", "year", "rating", "runtime",
                 "genres", "like_count", "description_intro", "description_full", "yt_trailer_code", "language",
                 "mpa_rating", "background_image", "background_image_original", "small_cover_image",
                 "medium_cover_image", "large_cover_image")  # fmt: skip
TORRENT_FIELDS = ("url", "hash", "quality", "type", "is_repack", "video_codec", "bit_depth", "audio_channels", "seeds",
                  "peers", "size", "size_bytes", "date_uploaded", "date_uploaded_unix")  # fmt: skip


def info_hash(imdb_id: str, quality: str, type: str = "bluray", video_codec: str = "x264") -> str:
    """The seed's (and add_torrent's default) info-hash: 40 upper-case hex digits."""
    return hashlib.sha1(f"{imdb_id}/{quality}/{type}/{video_codec}".encode()).hexdigest().upper()


def human_size(size_bytes: int) -> str:
    gib = size_bytes / 2**30
    return f"{gib:.2f} GB" if gib >= 1 else f"{size_bytes / 2**20:.2f} MB"


def yts_date(unix: int) -> str:
    return datetime.fromtimestamp(unix, CET).strftime("%Y-%m-%d %H:%M:%S")


def make_torrent(imdb_id: str, runtime: int | None, **fields: Any) -> dict[str, Any]:
    """A torrent with every field but `url` (which names the mirror serving it); `fields` override the defaults."""
    quality, kind, codec = fields.get("quality", "1080p"), fields.get("type", "web"), fields.get("video_codec", "x264")
    digest = fields.get("hash") or info_hash(imdb_id, quality, kind, codec)
    n = int(digest[:8], 16)
    size_bytes = int((runtime or 90) * MB_PER_MINUTE.get(quality, 16) * (0.6 if codec == "x265" else 1) * 2**20)
    torrent: dict[str, Any] = {
        "hash": digest, "quality": quality, "type": kind, "is_repack": "0", "video_codec": codec,
        "bit_depth": "10" if quality == "2160p" else "8", "audio_channels": "5.1" if quality == "2160p" else "2.0",
        "seeds": 3 + n % 240, "peers": n // 240 % 50, "size_bytes": size_bytes,
        "date_uploaded_unix": EPOCH + n % (5 * 365 * 86_400), **fields,
    }  # fmt: skip
    torrent["hash"] = str(torrent["hash"]).upper()
    torrent.setdefault("size", human_size(int(torrent["size_bytes"])))
    torrent.setdefault("date_uploaded", yts_date(int(torrent["date_uploaded_unix"])))
    return torrent


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.casefold())


def _int(raw: str | None, low: int, high: int, default: int) -> int:
    return int(raw) if raw and raw.isascii() and raw.isdigit() and low <= int(raw) <= high else default


class SampleYTS(SampleServer):
    server_version = "nginx"
    fault_kinds = FAULT_KINDS

    def __init__(
        self,
        *,
        mirrors: Iterable[str] = MIRRORS,
        modes: Mapping[str, MirrorMode] | None = None,
        port: int = 0,
        slow_delay: float = 2.0,
        seed: bool = True,
    ) -> None:
        """`modes`: each mirror's mode, "ok" if not given; None: the first mirror down, the second "html".
        `port`: 0 for free ports, else the mirrors listen on port, port + 1, ..."""
        super().__init__()
        self.mirrors = tuple(mirrors)
        if modes is None:
            modes = dict(zip(self.mirrors, ("down", "html"), strict=False))
        self._modes: dict[str, tuple[str, float, str]] = {name: ("ok", slow_delay, "") for name in self.mirrors}
        self._base_port, self._slow_delay, self._started = port, slow_delay, False
        for name, mode in modes.items():
            self.set_mirror(name, mode)
        self._catalog: dict[str, dict[str, Any]] = {}
        self._movies: dict[str, dict[str, Any]] = {}  # imdb id -> record, torrents included
        for i, movie in enumerate(json.loads(CATALOG.read_text(encoding="utf-8"))["movies"]):
            imdb_id = movie.get("imdb_id")
            if not imdb_id:
                continue
            self._catalog[imdb_id] = {
                "id": 30_000 + 17 * i, "title": movie["title"], "year": int((movie.get("release_date") or "0")[:4]),
                "rating": float(movie.get("vote_average") or 0), "runtime": movie.get("runtime") or 0,
                "genres": [YTS_GENRES.get(g["name"], g["name"]) for g in movie.get("genres", [])],
                "summary": movie.get("overview") or "", "language": movie.get("original_language") or "en",
                "like_count": movie.get("vote_count", 0) // 10, "download_count": int(movie.get("popularity", 0) * 997),
            }  # fmt: skip
            if seed and imdb_id not in MISSES:
                specs = [s.split("/") for s in SEED.get(imdb_id, DEFAULT_TORRENTS)]
                self._store(imdb_id, [{"quality": q, "type": t, "video_codec": c} for q, t, c in specs])

    def start(self) -> SampleYTS:
        with self._lock:
            self._started = True
            for i, name in enumerate(self.mirrors):
                port = self._base_port + i if self._base_port else 0
                (self._refuse if self._modes[name][0] == "down" else self._listen)(name, port)
        return self

    def stop(self) -> None:
        with self._lock:
            self._started = False
        super().stop()

    @property
    def mirror_urls(self) -> dict[str, str]:
        """Mirror name -> base URL (the API is under `/api/v2/`)."""
        with self._lock:
            return {name: f"http://127.0.0.1:{self._port(name)}" for name in self.mirrors}

    @property
    def url(self) -> str:
        """The base URL of the first mirror in mode "ok"."""
        with self._lock:
            ok = [name for name in self.mirrors if self._modes[name][0] == "ok"]
            if not ok:
                raise LookupError("no mirror is ok")
            return self.mirror_urls[ok[0]]

    @property
    def modes(self) -> dict[str, str]:
        with self._lock:
            return {name: mode for name, (mode, _, _) in self._modes.items()}

    # -- state for tests --

    def set_mirror(self, name: str, mode: MirrorMode, *, delay: float | None = None, message: str = "") -> None:
        """Switch a mirror's mode; "slow" waits `delay` seconds, "error" says `message`. Takes effect at once."""
        if mode not in MIRROR_MODES:
            raise ValueError(f"unknown mirror mode {mode!r}, expected one of {MIRROR_MODES}")
        with self._lock:
            if name not in self._modes:
                raise KeyError(f"unknown mirror {name!r}, expected one of {self.mirrors}")
            self._modes[name] = (mode, self._slow_delay if delay is None else delay, message or "Service unavailable")
            if self._started:
                port = self._port(name)
                (self._refuse if mode == "down" else self._listen)(name, port)

    def add_movie(self, imdb_id: str, *, title: str, year: int, **fields: Any) -> dict[str, Any]:
        """Add (or replace) a movie without torrents; add_torrent gives it some. Catalog movies need no add_movie."""
        with self._lock:
            n = len(self._catalog) + len(self._movies)
            self._catalog[imdb_id] = {
                "id": 90_000 + n, "title": title, "year": year, "rating": 0.0, "runtime": 0, "genres": [],
                "summary": "", "language": "en", "like_count": 0, "download_count": 0, **fields,
            }  # fmt: skip
            return self._store(imdb_id, [])

    def add_torrent(self, imdb_id: str, **fields: Any) -> dict[str, Any]:
        """Add a torrent (defaults: 1080p web x264, hash from info_hash) to a catalog or added movie; returns it."""
        with self._lock:
            if imdb_id not in self._movies:
                self._store(imdb_id, [])
            torrent = make_torrent(imdb_id, self._movies[imdb_id]["runtime"], **fields)
            self._movies[imdb_id]["torrents"].append(torrent)
            return copy.deepcopy(torrent)

    def set_torrents(self, imdb_id: str, torrents: Iterable[Mapping[str, Any]]) -> None:
        """Replace a movie's torrents; each mapping holds the fields to set (see make_torrent)."""
        with self._lock:
            self._store(imdb_id, [dict(t) for t in torrents])

    def remove_movie(self, imdb_id: str) -> None:
        """The movie is a search miss from now on."""
        with self._lock:
            self._movies.pop(imdb_id, None)

    def movie(self, imdb_id: str) -> dict[str, Any] | None:
        """The stored record (a copy), torrents included, or None for a miss."""
        with self._lock:
            return copy.deepcopy(self._movies.get(imdb_id))

    def fail(
        self, path_pattern: str, kind: FaultKind, times: int = 1, *, delay: float = 5.0, retry_after: int = 1,
        mirror: str | None = None,
    ) -> None:  # fmt: skip
        """The next `times` requests (-1: all) to `mirror` (None: any) whose path matches (re.search) fail as `kind`.
        Mirror modes come first: a faulted request is one a working mirror answers."""
        self._add_fault(path_pattern, kind, times, delay, mirror, retry_after=retry_after)

    def _store(self, imdb_id: str, torrents: list[dict[str, Any]]) -> dict[str, Any]:
        if imdb_id not in self._catalog:
            raise KeyError(f"{imdb_id} is not in the catalog: add_movie it first")
        record = {**copy.deepcopy(self._catalog[imdb_id]), "imdb_code": imdb_id}
        record["torrents"] = [make_torrent(imdb_id, record["runtime"], **t) for t in torrents]
        self._movies[imdb_id] = record
        return copy.deepcopy(record)

    # -- serving --

    def _respond(self, server: str, path: str, query: dict[str, str], headers: Message) -> Reply | None:
        with self._lock:
            mode, delay, message = self._modes[server]
            port, started = self._port(server), self._started
        if mode == "down" or not started:  # down, or a keep-alive connection outliving stop()
            return None
        if mode == "slow":
            time.sleep(delay)
        fault = None if mode in ("500", "html", "error") else self._take_fault(server, path)
        kind = fault.kind if fault else mode
        if fault and kind == "timeout":
            time.sleep(fault.delay)  # then answer normally: a client with a shorter read timeout gave up already
        if kind == "drop":
            return None
        if kind in ("500", "429"):
            status, reply = int(kind), self._page(int(kind))
            retry = {"Retry-After": str(fault.extra["retry_after"])} if fault and kind == "429" else {}
            return status, {**reply[1], **retry}, reply[2]
        if kind == "html":
            return 200, {"Content-Type": HTML_TYPE}, CHALLENGE_PAGE.format(host=server).encode()
        if kind == "error":
            body = {"status": "error", "status_message": message if not fault else "Something went wrong, try again"}
            return 200, {"Content-Type": JSON_TYPE}, json.dumps(body, separators=(",", ":")).encode()
        endpoints = {"/api/v2/list_movies.json": self._list_movies, "/api/v2/movie_details.json": self._movie_details}
        if path not in endpoints:  # the .jsonp/.xml variants, the .torrent downloads, anything else
            return self._page(404)
        try:
            data = endpoints[path](query, f"http://127.0.0.1:{port}")
        except Exception:  # a bug here (or a test's odd record): the origin's error page, traceback on stderr
            traceback.print_exc()
            return self._page(500)
        meta = {"server_time": int(time.time()), "server_timezone": "CET", "api_version": 2, "execution_time": "0 ms"}
        envelope = {"status": "ok", "status_message": "Query was successful", "data": data, "@meta": meta}
        raw = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        if kind == "malformed":
            raw = raw[: len(raw) // 2]
        return 200, {"Content-Type": JSON_TYPE}, raw

    @staticmethod
    def _page(status: int) -> Reply:
        return status, {"Content-Type": HTML_TYPE}, NGINX_PAGE.format(status=status, reason=REASONS[status]).encode()

    def _list_movies(self, query: dict[str, str], base: str) -> dict[str, Any]:
        limit, page = _int(query.get("limit"), 1, 50, 20), _int(query.get("page"), 1, 10**9, 1)
        quality = next((q for q in QUALITIES if q.casefold() == query.get("quality", "").casefold()), None)
        minimum_rating = _int(query.get("minimum_rating"), 0, 9, 0)
        term, genre = query.get("query_term", "").strip(), query.get("genre", "").strip().casefold()
        sort_by = query.get("sort_by", "") if query.get("sort_by") in SORTS else "date_added"
        ascending = query.get("order_by", "desc").casefold() == "asc"
        with self._lock:
            movies = [self._full(m, base) for m in self._movies.values()]

        def wanted(m: dict[str, Any]) -> bool:
            if term and term != "0":
                if re.fullmatch(r"tt\d+", term):
                    if m["imdb_code"] != term:
                        return False
                elif not set(_words(term)) <= {*_words(m["title"]), str(m["year"])}:
                    return False
            if quality and not any(quality in (t["quality"], self._quality(t)) for t in m["torrents"]):
                return False
            return m["rating"] >= minimum_rating and (genre in ("", "all") or genre in map(str.casefold, m["genres"]))

        def key(m: dict[str, Any]) -> Any:
            if sort_by in ("peers", "seeds"):
                return max((t[sort_by] for t in m["torrents"]), default=0)
            return {"title": m["title"].casefold(), "date_added": m["date_uploaded_unix"]}.get(sort_by, m.get(sort_by))

        hits = sorted(filter(wanted, movies), key=lambda m: (key(m), m["id"]), reverse=not ascending)
        data: dict[str, Any] = {"movie_count": len(hits), "limit": limit, "page_number": page}
        shown = hits[(page - 1) * limit : page * limit]
        if shown:  # an empty page has no "movies" key
            data["movies"] = [{key: m[key] for key in LIST_FIELDS} for m in shown]
        return data

    def _movie_details(self, query: dict[str, str], base: str) -> dict[str, Any]:
        raw_id, imdb_id = query.get("movie_id", ""), query.get("imdb_id", "")
        if not imdb_id and re.fullmatch(r"tt\d+", raw_id):  # current domains take either id as movie_id
            imdb_id = raw_id
        with self._lock:
            hits = [m for m in self._movies.values() if imdb_id == m["imdb_code"] or raw_id == str(m["id"])]
            movie = self._full(hits[0], base) if hits else None
        if movie is None:  # undocumented; answered as an empty movie
            empty = {key: "" for key in DETAIL_FIELDS} | {"id": 0, "year": 0, "rating": 0, "runtime": 0, "genres": []}
            return {"movie": {**empty, "url": f"{base}/movies/", "title_long": " (0)", "like_count": 0,
                              "torrents": [], "date_uploaded": "", "date_uploaded_unix": 0}}  # fmt: skip
        body = {key: movie[key] for key in DETAIL_FIELDS}
        if query.get("with_images", "").casefold() in ("true", "1"):
            for size in ("medium", "large"):
                for n in (1, 2, 3):
                    body[f"{size}_screenshot_image{n}"] = f"{movie['_images']}/{size}-screenshot{n}.jpg"
        if query.get("with_cast", "").casefold() in ("true", "1"):
            body["cast"] = []  # the sample knows no cast
        body.update({key: movie[key] for key in ("torrents", "date_uploaded", "date_uploaded_unix")})
        return {"movie": body}

    @staticmethod
    def _quality(torrent: dict[str, Any]) -> str:
        quality = str(torrent["quality"])
        return f"{quality}.x265" if quality == "1080p" and torrent["video_codec"] == "x265" else quality

    @staticmethod
    def _full(record: dict[str, Any], base: str) -> dict[str, Any]:
        """Every field either endpoint shows, URLs on the mirror serving the request."""
        movie = copy.deepcopy(record)
        slug = "-".join(_words(f"{movie['title']} {movie['year']}"))
        images = f"{base}/assets/images/movies/{slug}"
        movie["torrents"] = [
            {key: ({"url": f"{base}/torrent/download/{t['hash']}"} | t)[key] for key in TORRENT_FIELDS}
            for t in movie["torrents"]
        ]
        uploaded = min((t["date_uploaded_unix"] for t in movie["torrents"]), default=EPOCH)
        summary = movie["summary"]
        movie.update({
            "url": f"{base}/movies/{slug}", "title_english": movie["title"], "slug": slug, "_images": images,
            "title_long": f"{movie['title']} ({movie['year']})", "description_full": summary, "synopsis": summary,
            "description_intro": summary, "yt_trailer_code": "", "mpa_rating": "", "state": "ok",
            "background_image": f"{images}/background.jpg", "background_image_original": f"{images}/background.jpg",
            "small_cover_image": f"{images}/small-cover.jpg", "medium_cover_image": f"{images}/medium-cover.jpg",
            "large_cover_image": f"{images}/large-cover.jpg", "date_uploaded": yts_date(uploaded),
            "date_uploaded_unix": uploaded,
        })  # fmt: skip
        return movie
