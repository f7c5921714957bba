"""A sample Torznab indexer (Prowlarr/Jackett-compatible): a local stand-in for torrent indexers unreachable from here.

Shapes follow the Torznab shapes note (/work/shared/upstream-shapes/torznab.md), which draws on the Torznab 1.3 draft
specification (and revisions 1.0-1.2, the 1.4 draft), the Newznab API doc embedded in it, Jackett's `ResultPage.cs`,
`TorznabCapabilities.cs` and `ResultsController.cs`, Prowlarr's `NewznabResults.cs`, and Sonarr's
`TorznabRssParser.cs` / Sonarr's and Radarr's `NewznabRequestGenerator.cs`:
`t=caps` (no API key needed), `t=search&q=`, `t=movie&imdbid=` (with or without `tt`), `t=tvsearch&q=&season=&ep=`
(`season=S01`/`ep=E02` too, plus `tvdbid`/`imdbid`), `cat`, `offset`/`limit` (max 100, default 50), parameter names
case-insensitive; RSS 2.0 with `torznab:attr` elements (every attr always, as Jackett and Prowlarr do), RFC 822
`pubDate`, newest first; errors as `<error code=".." description=".."/>` on HTTP 200 as the spec says (or, with
`jackett_statuses=True`, Jackett's 401/400). Several feeds, each at `/feeds/<name>/api` with its own API key.

Choices where the note is silent: `imdbid`/`tvdbid` match only items carrying that attr (items without ids are found by
`q`, whose words must all occur in the title); ids are ORed, then `q`, `season`, `ep` and `cat` narrow; without `cat`,
`t=movie` searches the 2000s and `t=tvsearch` the 5000s; a `limit` above 100 means 100; no `newznab:response` element
(as Jackett and Prowlarr). The `.torrent` links answer 404 (no torrent library, torf or libtorrent, is installed to
build a valid file); the magnet-only items (enclosure is the magnet URI) need no download.

    with SampleTorznab() as indexer:
        requests.get(indexer.feed_url("alpha"), params={"t": "movie", "imdbid": "0063350", "apikey": "alpha-key"})
"""

from __future__ import annotations

import copy
import hashlib
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import format_datetime
from typing import Any, Literal, get_args
from urllib.parse import quote, quote_plus

from infra.local.upstreams.base import Reply, SampleServer
from infra.local.upstreams.yts import info_hash

TORZNAB_NS, ATOM_NS = "http://torznab.com/schemas/2015/feed", "http://www.w3.org/2005/Atom"
ET.register_namespace("torznab", TORZNAB_NS)
ET.register_namespace("atom", ATOM_NS)
ATTR = f"{{{TORZNAB_NS}}}attr"
FaultKind = Literal["500", "malformed", "html", "timeout"]
FAULT_KINDS = get_args(FaultKind)
RSS_TYPE, XML_TYPE, HTML_TYPE = "application/rss+xml; charset=utf-8", "application/xml; charset=utf-8", "text/html"
MAX_LIMIT, DEFAULT_LIMIT = 100, 50
CATEGORIES = {
    2000: ("Movies", {2030: "Movies/SD", 2040: "Movies/HD", 2045: "Movies/UHD"}),
    5000: ("TV", {5030: "TV/SD", 5040: "TV/HD", 5045: "TV/UHD"}),
}
ERRORS = {100: "Incorrect user credentials", 200: "Missing parameter", 201: "Incorrect parameter",
          202: "No such function", 203: "Function not available"}  # fmt: skip
JACKETT_STATUSES = {100: 401, 200: 400, 201: 400, 202: 400, 203: 400}
TRACKERS = ("udp://tracker.opentrackr.org:1337/announce", "udp://open.demonii.com:1337/announce")
PUBLISHED = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)  # the newest seed item; older ones go back 37 h each
MAINTENANCE_PAGE = b"""<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head><body>
<h1>Checking if the site connection is secure</h1><p>The indexer is under maintenance. Please try again later.</p>
<div class="footer">Performance &amp; security by Cloudflare</div></body></html>
"""
ERROR_PAGE = (
    b"<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1></body></html>"
)
# The seed: title, imdb id or None (found by title only), tvdbid or None, and extra fields.
NOTLD, BONANZA, BBB = "tt0063350", ("tt0052451", 70762), "tt1254207"
SEED: dict[str, list[tuple[str, str | None, int | None, dict[str, Any]]]] = {
    "alpha": [
        ("Night.of.the.Living.Dead.1968.1080p.BluRay.x264-GROUP", NOTLD, None, {}),
        ("Night.of.the.Living.Dead.1968.720p.BluRay.x264-[YTS.MX]", NOTLD, None,
         {"infohash": info_hash(NOTLD, "720p", "bluray", "x264")}),  # the same torrent as SampleYTS's
        ("Night.of.the.Living.Dead.1968.REMASTERED.2160p.UHD.BluRay.x265.10bit-GROUP", NOTLD, None, {}),
        ("Charade.1963.1080p.BluRay.x264-AMIABLE", None, None, {}),
        ("His.Girl.Friday.1940.720p.BluRay.x264-CiNEFiLE", "tt0032599", None, {}),
        ("Nosferatu.1922.RESTORED.1080p.BluRay.x264-GROUP", "tt0013442", None, {}),
        ("Metropolis.1927.Complete.Restored.1080p.BluRay.x264-GROUP", None, None, {}),
        ("The.General.1926.1080p.BluRay.x264-GROUP", "tt0017925", None, {}),
        ("Detour.1945.720p.BluRay.x264-GROUP", None, None, {"seeders": 0, "leechers": 2}),
        ("Plan.9.from.Outer.Space.1957.720p.WEB.h264-GRP", None, None, {}),
        ("Sita.Sings.the.Blues.2008.1080p.WEB.h264-GRP", "tt1172203", None, {}),
        ("Cosmos.Laundromat.2015.2160p.WEB.x265-BLENDER", None, None, {"magnet_only": True}),
        ("Tears.of.Steel.2012.1080p.WEB.h264-GRP", "tt2285752", None, {"magnet_only": True}),
        ("Bonanza.S01E01.720p.WEB.h264-GRP", *BONANZA, {}),
        ("Bonanza.S01E02.720p.WEB.h264-GRP", *BONANZA, {}),
        ("Bonanza.S02.1080p.BluRay.x264-OLDTV", None, BONANZA[1], {}),  # a season pack
        ("The.Beverly.Hillbillies.S01E03.480p.DVDRip.x264-RETRO", None, None, {}),
        ("Flash.Gordon.1954.S01E01.720p.WEB.h264-GRP", None, 77588, {}),
        ("Open.Movie.Diaries.S03E01.1080p.WEB.h264-BLENDER", "tt9900001", 421337, {}),
    ],
    "beta": [
        ("Night.of.the.Living.Dead.1968.1080p.BluRay.x264-GROUP", NOTLD, None, {}),  # also on alpha: same infohash
        ("Big.Buck.Bunny.2008.1080p.BluRay.x264-[YTS.MX]", None, None,
         {"infohash": info_hash(BBB, "1080p", "bluray", "x264")}),  # SampleYTS's, found by title only
        ("Sintel.2010.1080p.WEB.h264-GRP", "tt1727587", None, {}),
        ("Elephants.Dream.2006.1080p.WEB.h264-GRP", None, None, {}),
        ("The.Kid.1921.720p.BluRay.x264-GROUP", None, None, {}),
        ("Bonanza.S01E02.1080p.BluRay.x264-OLDTV", None, None, {}),
    ],
}  # fmt: skip


class TorznabError(Exception):
    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(f"{ERRORS[code]}{f' ({detail})' if detail else ''}")
        self.code = code


def release_hash(title: str) -> str:
    """A seed (or add_item) release's default info-hash: 40 lower-case hex digits, the same on every feed."""
    return hashlib.sha1(f"torznab/{title}".encode()).hexdigest()


def magnet(infohash: str, title: str) -> str:
    return f"magnet:?xt=urn:btih:{infohash}&dn={quote_plus(title)}" + "".join(
        f"&tr={quote(t, safe='')}" for t in TRACKERS
    )


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.casefold())


def _number(raw: str, prefix: str = "") -> int:
    digits = raw[len(prefix) :] if prefix and raw.upper().startswith(prefix) else raw
    if not (digits.isascii() and digits.isdigit()):
        raise TorznabError(201, raw)
    return int(digits)


def _xml(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode()


class SampleTorznab(SampleServer):
    server_version = "SampleTorznab/1.0"
    fault_kinds = FAULT_KINDS

    def __init__(
        self,
        *,
        feeds: Mapping[str, str] | None = None,
        port: int = 0,
        seed: bool = True,
        jackett_statuses: bool = False,
    ) -> None:
        """`feeds`: name -> API key (default alpha/alpha-key, beta/beta-key); the seed fills feeds named like SEED's.
        `jackett_statuses`: errors carry Jackett's HTTP statuses (401 for a bad key, 400 else) instead of 200."""
        super().__init__()
        self._keys = dict(feeds if feeds is not None else {"alpha": "alpha-key", "beta": "beta-key"})
        self._items: dict[str, list[dict[str, Any]]] = {name: [] for name in self._keys}
        self._port_wanted, self._jackett, self._next_id = port, jackett_statuses, 1
        for feed, releases in SEED.items() if seed else ():
            for n, (title, imdb, tvdbid, extra) in enumerate(releases if feed in self._keys else ()):
                self.add_item(feed, title=title, imdb=imdb, tvdbid=tvdbid, pubdate=PUBLISHED - timedelta(hours=37 * n),
                              **extra)  # fmt: skip

    def start(self) -> SampleTorznab:
        self._listen("torznab", self._port_wanted)
        return self

    @property
    def port(self) -> int:
        return self._port("torznab")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def feed_url(self, feed: str) -> str:
        """The feed's Torznab endpoint: add `?t=...&apikey=...`."""
        return f"{self.url}/feeds/{feed}/api"

    def api_key(self, feed: str) -> str:
        return self._keys[feed]

    # -- state for tests --

    def add_item(self, feed: str, *, title: str, **fields: Any) -> dict[str, Any]:
        """Add a release; returns it. Fields: imdb ("tt..." or None), tvdbid, season/episode (else read from the
        title), category (else from the title), size, seeders, leechers, infohash, pubdate (aware datetime),
        magnet_only, downloadvolumefactor, uploadvolumefactor."""
        resolution = next((r for r in ("2160p", "1080p", "720p") if r in title), "480p")
        numbers = re.search(r"\bS(\d{1,3})(?:E(\d{1,3}))?\b", title, re.IGNORECASE)
        tv = numbers is not None or fields.get("tvdbid") is not None
        group = 5000 if tv else 2000
        sub = group + {"2160p": 45, "1080p": 40, "720p": 40}.get(resolution, 30)
        gib = {"2160p": 14, "1080p": 2.2, "720p": 1.1, "480p": 0.7}[resolution] / (3 if tv else 1)
        digest = str(fields.get("infohash") or release_hash(title)).lower()
        n = int(digest[:8], 16)
        item: dict[str, Any] = {
            "title": title, "imdb": None, "tvdbid": None, "category": sub, "seeders": 1 + n % 150,
            "leechers": n // 150 % 40, "infohash": digest, "pubdate": PUBLISHED, "magnet_only": False,
            "season": int(numbers[1]) if numbers else None,
            "episode": int(numbers[2]) if numbers and numbers[2] else None,
            "size": int(gib * 2**30 * (6 if numbers and not numbers[2] else 1)),
            "downloadvolumefactor": 1, "uploadvolumefactor": 1, **fields,
        }  # fmt: skip
        item["infohash"] = digest
        if item["imdb"]:  # "tt0063350", "0063350" or 63350
            item["imdb"] = f"tt{int(str(item['imdb']).removeprefix('tt')):07d}"
        with self._lock:
            item["id"], self._next_id = self._next_id, self._next_id + 1
            self._items[feed].append(item)
            return copy.deepcopy(item)

    def items(self, feed: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._items[feed])

    def clear_items(self, feed: str) -> None:
        with self._lock:
            self._items[feed].clear()

    def fail(self, path_pattern: str, kind: FaultKind, times: int = 1, *, delay: float = 5.0) -> None:
        """The next `times` requests (-1: all) whose path matches `path_pattern` (re.search) fail as `kind`:
        "500", "malformed" (200, the XML cut in half), "html" (200, a maintenance page), "timeout" (late by `delay`)."""
        self._add_fault(path_pattern, kind, times, delay, None)

    # -- serving --

    def _respond(self, server: str, path: str, query: dict[str, str], headers: Message) -> Reply | None:
        fault = self._take_fault(server, path)
        kind = fault.kind if fault else None
        if fault and kind == "timeout":
            time.sleep(fault.delay)  # then answer normally: a client with a shorter read timeout gave up already
        if kind == "500":
            return 500, {"Content-Type": HTML_TYPE}, ERROR_PAGE
        if kind == "html":
            return 200, {"Content-Type": HTML_TYPE}, MAINTENANCE_PAGE
        match = re.fullmatch(r"/feeds/([^/]+)/api/?", path)
        if match is None or match[1] not in self._keys:  # unknown feeds, and the .torrent links
            return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"Not Found"
        params = {key.lower(): value for key, value in query.items()}
        try:
            content_type, body = self._answer(match[1], params)
            status = 200
        except TorznabError as exc:
            error = ET.Element("error", code=str(exc.code), description=str(exc))
            content_type, body = XML_TYPE, _xml(error)
            status = JACKETT_STATUSES.get(exc.code, 400) if self._jackett else 200
        if kind == "malformed":
            status, body = 200, body[: len(body) // 2]
        return status, {"Content-Type": content_type}, body

    def _answer(self, feed: str, params: dict[str, str]) -> tuple[str, bytes]:
        function = params.get("t", "")
        if not function:
            raise TorznabError(200, "t")
        if function == "caps":
            return XML_TYPE, _xml(self._caps())
        if params.get("apikey") != self._keys[feed]:
            raise TorznabError(100)
        if function in ("music", "book"):
            raise TorznabError(203)
        if function not in ("search", "movie", "tvsearch"):
            raise TorznabError(202)
        cats = params.get("cat", "")
        if cats and not re.fullmatch(r"\d+(,\d+)*", cats):
            raise TorznabError(201, "cat")
        offset = _number(params.get("offset") or "0")
        limit = min(_number(params.get("limit") or str(DEFAULT_LIMIT)), MAX_LIMIT)
        if limit < 1:
            raise TorznabError(201, "limit")
        wanted = {int(c) for c in cats.split(",")} if cats else {"movie": {2000}, "tvsearch": {5000}}.get(function)
        imdb = params.get("imdbid", "") if function != "search" else ""
        imdb = f"tt{_number(imdb, 'TT'):07d}" if imdb else ""
        tvdbid = _number(params["tvdbid"]) if function == "tvsearch" and params.get("tvdbid") else None
        season = _number(params["season"], "S") if function == "tvsearch" and params.get("season") else None
        episode = _number(params["ep"], "E") if function == "tvsearch" and params.get("ep") else None
        words = set(_words(params.get("q", "")))
        with self._lock:
            items = copy.deepcopy(self._items[feed])

        def found(item: dict[str, Any]) -> bool:
            if (imdb or tvdbid) and not ((imdb and item["imdb"] == imdb) or (tvdbid and item["tvdbid"] == tvdbid)):
                return False
            if wanted is not None and not wanted & {item["category"], item["category"] // 1000 * 1000}:
                return False
            if season is not None and item["season"] != season:
                return False
            return (episode is None or item["episode"] == episode) and words <= set(_words(item["title"]))

        hits = sorted(filter(found, items), key=lambda i: (i["pubdate"], i["id"]), reverse=True)
        return RSS_TYPE, _xml(self._rss(feed, hits[offset : offset + limit]))

    def _caps(self) -> ET.Element:
        caps = ET.Element("caps")
        ET.SubElement(caps, "server", version="1.3", title="Sample Torznab", strapline="A local sample indexer",
                      url=f"{self.url}/")  # fmt: skip
        ET.SubElement(caps, "limits", max=str(MAX_LIMIT), default=str(DEFAULT_LIMIT))
        searching = ET.SubElement(caps, "searching")
        for name, available, supported in [
            ("search", "yes", "q"), ("tv-search", "yes", "q,season,ep,imdbid,tvdbid"),
            ("movie-search", "yes", "q,imdbid"), ("music-search", "no", "q"), ("audio-search", "no", "q"),
            ("book-search", "no", "q"),
        ]:  # fmt: skip
            ET.SubElement(searching, name, available=available, supportedParams=supported)
        categories = ET.SubElement(caps, "categories")
        for parent, (name, subcats) in CATEGORIES.items():
            category = ET.SubElement(categories, "category", id=str(parent), name=name)
            for sub, sub_name in subcats.items():
                ET.SubElement(category, "subcat", id=str(sub), name=sub_name)
        return caps

    def _rss(self, feed: str, items: list[dict[str, Any]]) -> ET.Element:
        rss = ET.Element("rss", version="2.0")
        if not items:  # ElementTree declares a namespace only where it is used; the empty feed declares it anyway
            rss.set("xmlns:torznab", TORZNAB_NS)
        channel = ET.SubElement(rss, "channel")
        ET.SubElement(channel, f"{{{ATOM_NS}}}link", href=self.feed_url(feed), rel="self", type="application/rss+xml")
        for tag, text in [("title", f"Sample Torznab ({feed})"), ("description", f"The sample indexer's {feed} feed"),
                          ("link", f"{self.url}/"), ("language", "en-US"), ("category", "search")]:  # fmt: skip
            ET.SubElement(channel, tag).text = text
        for item in items:
            channel.append(self._item(feed, item))
        return rss

    def _item(self, feed: str, item: dict[str, Any]) -> ET.Element:
        details = f"{self.url}/feeds/{feed}/details/{item['id']}"
        uri = magnet(item["infohash"], item["title"])
        link = uri if item["magnet_only"] else f"{self.url}/feeds/{feed}/download/{item['id']}.torrent"
        element = ET.Element("item")
        for tag, text in [("title", item["title"]), ("guid", details), ("comments", details),
                          ("pubDate", format_datetime(item["pubdate"])), ("size", str(item["size"])),
                          ("description", None), ("link", link), ("category", str(item["category"]))]:  # fmt: skip
            ET.SubElement(element, tag).text = text
        kind = "application/x-bittorrent" + (";x-scheme-handler/magnet" if item["magnet_only"] else "")
        ET.SubElement(element, "enclosure", url=link, length=str(item["size"]), type=kind)
        attrs: list[tuple[str, Any]] = [
            ("category", item["category"] // 1000 * 1000), ("category", item["category"]), ("size", item["size"]),
            ("seeders", item["seeders"]), ("leechers", item["leechers"]), ("peers", item["seeders"] + item["leechers"]),
            ("infohash", item["infohash"]), ("magneturl", uri),
        ]  # fmt: skip
        if item["imdb"]:  # Jackett's pair: the 7-digit number, and the tt form
            attrs += [("imdb", f"{int(item['imdb'][2:]):07d}"), ("imdbid", item["imdb"])]
        attrs += [(key, item[key]) for key in ("tvdbid", "season", "episode") if item[key] is not None]
        attrs += [
            ("downloadvolumefactor", item["downloadvolumefactor"]),
            ("uploadvolumefactor", item["uploadvolumefactor"]),
        ]
        for name, value in attrs:
            ET.SubElement(element, ATTR, name=name, value=str(value))
        return element
