"""The sample Torznab indexer answers in the Torznab 1.3 shapes (caps, RSS with torznab attrs, error XML) per feed.

Only the standard library's HTTP clients talk to it here, over 127.0.0.1; answers are parsed with ElementTree.
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from infra.local.upstreams.torznab import SEED, SampleTorznab, release_hash
from infra.local.upstreams.yts import SampleYTS, info_hash

NS = {"torznab": "http://torznab.com/schemas/2015/feed", "atom": "http://www.w3.org/2005/Atom"}
NOTLD, CHARADE, BONANZA_IMDB, BONANZA_TVDB = "tt0063350", "tt0056923", "tt0052451", 70762
ITEM_TAGS = ["title", "guid", "comments", "pubDate", "size", "description", "link", "category", "enclosure"]


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)

    @property
    def items(self) -> list[dict[str, Any]]:
        """The RSS items: their elements' text, plus `attrs` (name -> list of values) and the enclosure."""
        root = self.xml
        assert self.status == 200 and root.tag == "rss", self.body[:200]
        found = []
        for element in root.findall("./channel/item"):
            item: dict[str, Any] = {child.tag: child.text for child in element if not child.tag.startswith("{")}
            item["tags"] = [child.tag for child in element if not child.tag.startswith("{")]
            item["enclosure"] = element.find("enclosure").attrib  # type: ignore[union-attr]
            item["attrs"] = {}
            for attr in element.findall("torznab:attr", NS):
                item["attrs"].setdefault(attr.get("name"), []).append(attr.get("value"))
            found.append(item)
        return found


def get(
    indexer: SampleTorznab, feed: str = "alpha", *, key: str | None = "feed", timeout: float = 5, **params: Any
) -> Reply:
    if key is not None:
        params["apikey"] = indexer.api_key(feed) if key == "feed" else key
    url = f"{indexer.feed_url(feed)}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


def titles(reply: Reply) -> list[str]:
    return [item["title"] for item in reply.items]


def assert_error(reply: Reply, code: int, status: int = 200) -> None:
    root = reply.xml
    assert reply.status == status and reply.headers["Content-Type"].startswith("application/xml")
    assert root.tag == "error" and root.get("code") == str(code) and root.get("description")


@pytest.fixture
def indexer() -> Iterator[SampleTorznab]:
    with SampleTorznab() as server:
        yield server


def test_caps_need_no_key(indexer: SampleTorznab) -> None:
    reply = get(indexer, key=None, t="caps")
    caps = reply.xml
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/xml") and caps.tag == "caps"
    assert caps.find("server").get("version") == "1.3"  # type: ignore[union-attr]
    assert caps.find("limits").attrib == {"max": "100", "default": "50"}  # type: ignore[union-attr]
    searching = {s.tag: (s.get("available"), s.get("supportedParams")) for s in caps.find("searching")}  # type: ignore[union-attr]
    assert searching["search"] == ("yes", "q") and searching["movie-search"] == ("yes", "q,imdbid")
    assert searching["tv-search"] == ("yes", "q,season,ep,imdbid,tvdbid") and searching["music-search"][0] == "no"
    categories = {int(c.get("id", 0)): {int(s.get("id", 0)) for s in c} for c in caps.iter("category")}
    assert categories == {2000: {2030, 2040, 2045}, 5000: {5030, 5040, 5045}}
    assert get(indexer, key="wrong", t="caps").xml.tag == "caps"


def test_movie_search_by_imdbid_with_or_without_tt(indexer: SampleTorznab) -> None:
    reply = get(indexer, t="movie", imdbid="0063350")
    assert reply.headers["Content-Type"].startswith("application/rss+xml")
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    root = reply.xml
    assert root.get("version") == "2.0" and b'xmlns:torznab="http://torznab.com/schemas/2015/feed"' in reply.body
    channel = root.find("channel")
    assert channel is not None and channel.find("atom:link", NS).get("href") == indexer.feed_url("alpha")  # type: ignore[union-attr]
    items = reply.items
    assert [i["title"] for i in items] == [t for t, imdb, _, _ in SEED["alpha"] if imdb == NOTLD]
    assert (
        titles(get(indexer, t="movie", imdbid=NOTLD))
        == titles(reply)
        == titles(get(indexer, T="movie", IMDBID="63350"))
    )
    dates = [parsedate_to_datetime(i["pubDate"]) for i in items]
    assert dates == sorted(dates, reverse=True) and all(isinstance(d, datetime) and d.tzinfo for d in dates)
    assert all(re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000", i["pubDate"]) for i in items)
    for item in items:
        attrs = item["attrs"]
        assert item["tags"] == ITEM_TAGS and item["guid"].startswith(indexer.url)
        assert attrs["imdb"] == ["0063350"] and attrs["imdbid"] == [NOTLD]
        assert attrs["category"][0] == "2000" and attrs["category"][1] == item["category"]
        assert attrs["size"] == [item["size"]] == [item["enclosure"]["length"]]
        assert int(attrs["peers"][0]) == int(attrs["seeders"][0]) + int(attrs["leechers"][0])
        assert re.fullmatch(r"[0-9a-f]{40}", attrs["infohash"][0])
        assert attrs["magneturl"][0].startswith(f"magnet:?xt=urn:btih:{attrs['infohash'][0]}&dn=")
        assert item["enclosure"] == {"url": item["link"], "length": item["size"], "type": "application/x-bittorrent"}
        assert "tvdbid" not in attrs and "season" not in attrs


def test_items_without_ids_are_found_by_title_only(indexer: SampleTorznab) -> None:
    assert get(indexer, t="movie", imdbid=CHARADE).items == []
    items = get(indexer, t="movie", q="Charade 1963").items
    assert [i["title"] for i in items] == ["Charade.1963.1080p.BluRay.x264-AMIABLE"] and "imdb" not in items[0]["attrs"]
    assert titles(get(indexer, t="movie", q="metropolis 2001")) == []
    magnet_only = get(indexer, t="movie", q="cosmos laundromat").items[0]
    assert magnet_only["link"].startswith("magnet:") and magnet_only["enclosure"]["url"] == magnet_only["link"]
    assert magnet_only["enclosure"]["type"] == "application/x-bittorrent;x-scheme-handler/magnet"
    assert get(indexer, t="movie", q="detour").items[0]["attrs"]["seeders"] == ["0"]


def test_duplicates_across_yts_and_feeds(indexer: SampleTorznab) -> None:
    yts_hashes = {t["hash"] for t in (SampleYTS(modes={}).movie(NOTLD) or {})["torrents"]}
    alpha = {i["title"]: i["attrs"]["infohash"][0] for i in get(indexer, t="movie", imdbid=NOTLD).items}
    duplicate = alpha["Night.of.the.Living.Dead.1968.720p.BluRay.x264-[YTS.MX]"]
    assert duplicate == info_hash(NOTLD, "720p", "bluray", "x264").lower() and duplicate.upper() in yts_hashes
    beta = {i["title"]: i["attrs"]["infohash"][0] for i in get(indexer, "beta", t="search", q="1968").items}
    title = "Night.of.the.Living.Dead.1968.1080p.BluRay.x264-GROUP"
    assert beta[title] == alpha[title] == release_hash(title)
    bunny = get(indexer, "beta", t="movie", q="big buck bunny").items[0]["attrs"]
    assert bunny["infohash"] == [info_hash("tt1254207", "1080p", "bluray", "x264").lower()] and "imdb" not in bunny


def test_tvsearch(indexer: SampleTorznab) -> None:
    episode = get(indexer, t="tvsearch", q="bonanza", season="1", ep="2").items
    assert [i["title"] for i in episode] == ["Bonanza.S01E02.720p.WEB.h264-GRP"]
    attrs = episode[0]["attrs"]
    assert attrs["tvdbid"] == [str(BONANZA_TVDB)] and attrs["season"] == ["1"] and attrs["episode"] == ["2"]
    assert attrs["category"] == ["5000", "5040"] and attrs["imdb"] == ["0052451"]
    assert titles(get(indexer, t="tvsearch", q="Bonanza", season="S01", ep="E02")) == titles(
        get(indexer, t="tvsearch", tvdbid=BONANZA_TVDB, season=1, ep=2)
    ) == [episode[0]["title"]]  # fmt: skip
    pack = get(indexer, t="tvsearch", tvdbid=BONANZA_TVDB, season=2).items
    assert [i["title"] for i in pack] == ["Bonanza.S02.1080p.BluRay.x264-OLDTV"] and "episode" not in pack[0]["attrs"]
    assert set(titles(get(indexer, t="tvsearch", imdbid=BONANZA_IMDB))) == {
        "Bonanza.S01E01.720p.WEB.h264-GRP", "Bonanza.S01E02.720p.WEB.h264-GRP",
    }  # fmt: skip
    assert titles(get(indexer, t="tvsearch", q="beverly hillbillies", season=1, ep=3)) == [
        "The.Beverly.Hillbillies.S01E03.480p.DVDRip.x264-RETRO"
    ]
    beta = get(indexer, "beta", t="tvsearch", q="bonanza", season=1, ep=2).items
    assert [i["title"] for i in beta] == ["Bonanza.S01E02.1080p.BluRay.x264-OLDTV"] and "tvdbid" not in beta[0]["attrs"]
    assert titles(get(indexer, t="tvsearch", q="night of the living dead")) == []  # movies are not TV


def test_search_categories_and_paging(indexer: SampleTorznab) -> None:
    everything = titles(get(indexer, t="search"))
    assert len(everything) == len(SEED["alpha"])
    assert set(titles(get(indexer, t="search", cat="5000"))) == {t for t in everything if re.search(r"\.S\d\d", t)}
    assert all("2160p" in t for t in titles(get(indexer, t="search", cat="2045"))) and titles(
        get(indexer, t="search", cat="2045,9999")
    )  # fmt: skip
    assert titles(get(indexer, t="search", cat="9999")) == []
    pages = [titles(get(indexer, t="search", limit=5, offset=offset)) for offset in range(0, 25, 5)]
    assert [len(p) for p in pages] == [5, 5, 5, 4, 0] and [t for p in pages for t in p] == everything
    assert len(titles(get(indexer, t="search", limit=500))) == len(everything)  # above the max: the max
    assert titles(get(indexer, t="search", q="night")) == titles(get(indexer, t="movie", q="NIGHT of"))


def test_errors(indexer: SampleTorznab) -> None:
    assert_error(get(indexer, key="wrong", t="search", q="night"), 100)
    assert_error(get(indexer, key=None, t="movie", imdbid=NOTLD), 100)
    assert_error(get(indexer, "beta", key=indexer.api_key("alpha"), t="search"), 100)  # each feed has its own key
    assert_error(get(indexer), 200)
    assert_error(get(indexer, t="music"), 203)
    assert_error(get(indexer, t="nonsense"), 202)
    bad: list[dict[str, Any]] = [{"cat": "20x0"}, {"offset": "-1"}, {"limit": "ten"}, {"limit": "0"}]
    for params in bad:
        assert_error(get(indexer, t="search", **params), 201)
    assert_error(get(indexer, t="tvsearch", season="one"), 201)
    for path in ("/feeds/gamma/api?t=caps", "/feeds/alpha/download/1.torrent", "/api?t=caps"):
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(indexer.url + path, timeout=5)
        assert raised.value.code == 404
    with SampleTorznab(jackett_statuses=True) as jackett:
        assert_error(get(jackett, key="wrong", t="search"), 100, status=401)
        assert_error(get(jackett, t="search", cat="x"), 201, status=400)


def test_add_item_escaping_and_an_empty_feed() -> None:
    with SampleTorznab(feeds={"solo": "solo-key"}, seed=False) as indexer:
        empty = get(indexer, "solo", t="search")
        assert empty.items == [] and empty.xml.find("channel/title") is not None
        assert b'xmlns:torznab="http://torznab.com/schemas/2015/feed"' in empty.body
        added = indexer.add_item("solo", title='Tom & Jerry <Uncut> "1940" 720p', imdb="0032599", seeders=5)
        assert added["imdb"] == "tt0032599" and added["infohash"] == release_hash(added["title"])
        item = get(indexer, "solo", t="movie", imdbid="tt0032599").items[0]
        assert item["title"] == added["title"] and item["attrs"]["seeders"] == ["5"]
        assert "dn=Tom+%26+Jerry+%3CUncut%3E" in item["attrs"]["magneturl"][0]
        assert indexer.items("solo")[0]["id"] == added["id"]
        indexer.clear_items("solo")
        assert get(indexer, "solo", t="search").items == []


def test_faults_and_the_request_log(indexer: SampleTorznab) -> None:
    indexer.fail(r"^/feeds/alpha/", "500", times=2)
    assert get(indexer, "beta", t="search").status == 200  # another feed: untouched
    assert [get(indexer, t="search").status for _ in range(3)] == [500, 500, 200]
    assert [r.status for r in indexer.served("/feeds/alpha/")] == [500, 500, 200]
    indexer.fail("alpha", "malformed")
    reply = get(indexer, t="search")
    assert reply.status == 200 and reply.body.startswith(b"<?xml")
    with pytest.raises(ET.ParseError):
        reply.xml  # noqa: B018
    indexer.fail("alpha", "html")
    reply = get(indexer, t="search")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html") and b"<html" in reply.body
    indexer.fail("alpha", "timeout", delay=0.3)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        get(indexer, t="search", timeout=0.1)
    started = time.monotonic()
    assert get(indexer, t="search").status == 200 and time.monotonic() - started < 0.3
    indexer.fail("alpha", "500", times=-1)
    assert get(indexer, t="caps").status == 500
    indexer.clear_faults()
    with pytest.raises(ValueError):
        indexer.fail(".", "teapot")  # type: ignore[arg-type]
    served = indexer.served()[-1]
    assert served.path == "/feeds/alpha/api" and served.query == {"t": "caps", "apikey": "alpha-key"}

    connection = http.client.HTTPConnection("127.0.0.1", indexer.port, timeout=5)
    try:
        for _ in range(2):
            connection.request("GET", "/feeds/beta/api?t=caps")
            response = connection.getresponse()
            assert response.status == 200 and ET.fromstring(response.read()).tag == "caps" and not response.will_close
    finally:
        connection.close()
    indexer.reset_requests()
    assert indexer.served() == []
