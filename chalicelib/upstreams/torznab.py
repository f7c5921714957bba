"""Torznab (Prowlarr / Jackett and the indexers behind them): search requests and their RSS answers, read
with a real XML parser (defusedxml, so a hostile feed cannot expand entities or reach the network).

Items keep what matching and ranking need: the release title, the info-hash (from the `infohash` attr, else
the magnet), the magnet, size, seeders/peers and the ids the indexer knows (imdb, tmdb, tvdb, season,
episode). An `<error code description>` answer raises a typed error: codes 100-102 (bad API key, account
problems) are permanent, the rest transient.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import Element

import requests
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from chalicelib.errors import UpstreamError
from chalicelib.upstreams.http import JsonApi, TransientUpstreamError

NS = {"torznab": "http://torznab.com/schemas/2015/feed", "newznab": "http://www.newznab.com/DTD/2010/feeds/attributes/"}
INFOHASH = re.compile(r"^[0-9a-fA-F]{40}$")
BTIH = re.compile(r"urn:btih:([0-9a-fA-F]{40})", re.IGNORECASE)


class TorznabError(UpstreamError):
    code = "torznab_error"


class TorznabAuthError(TorznabError):
    """The indexer refused our API key or account: asking again will not help."""

    code = "torznab_rejected"
    permanent = True


@dataclass
class Item:
    title: str
    infohash: str | None
    magnet: str | None = None
    link: str | None = None
    size: int | None = None
    seeders: int | None = None
    leechers: int | None = None
    imdb_id: str | None = None  # "tt0063350"
    tmdb_id: int | None = None
    tvdb_id: int | None = None
    season: int | None = None
    episode: int | None = None
    categories: list[int] = field(default_factory=list)


def _int(value: str | None) -> int | None:
    """A whole number from an attribute, or None for anything else (text, NaN, infinity, a negative count)."""
    try:
        number = int(float(value)) if value not in (None, "") else None
    except (ValueError, OverflowError):
        return None
    return number if number is not None and 0 <= number < 2**63 else None


def _imdb(value: str | None) -> str | None:
    digits = (value or "").strip().lower().removeprefix("tt")
    return f"tt{int(digits):07d}" if digits.isascii() and digits.isdigit() and int(digits) > 0 else None


def infohash_of_magnet(magnet: str | None) -> str | None:
    """The v1 info-hash of a magnet URI (lower case), or None when it has none."""
    if not magnet:
        return None
    try:
        query = parse_qs(urlsplit(magnet).query)
    except ValueError:
        return None
    for xt in query.get("xt", []):
        found = BTIH.search(xt)
        if found:
            return found.group(1).lower()
    return None


def _item(node: Element) -> Item | None:
    title = (node.findtext("title") or "").strip()
    if not title:
        return None
    attrs: dict[str, list[str]] = {}
    for attr in [*node.findall("torznab:attr", NS), *node.findall("newznab:attr", NS)]:
        name, value = attr.get("name"), attr.get("value")
        if name and value is not None:
            attrs.setdefault(name.lower(), []).append(value)

    def one(name: str) -> str | None:
        return attrs.get(name, [None])[0]

    enclosure = node.find("enclosure")
    link = (enclosure.get("url") if enclosure is not None else None) or node.findtext("link")
    magnet = one("magneturl") or (link if link and link.startswith("magnet:") else None)
    infohash = one("infohash")
    infohash = infohash.lower() if infohash and INFOHASH.match(infohash) else infohash_of_magnet(magnet)
    seeders = _int(one("seeders"))
    peers = _int(one("peers"))
    leechers = _int(one("leechers"))
    if leechers is None and peers is not None and seeders is not None:
        leechers = max(0, peers - seeders)  # torznab's `peers` counts seeders too
    size = _int(one("size")) or _int(node.findtext("size"))
    if size is None and enclosure is not None:
        size = _int(enclosure.get("length"))
    return Item(
        title=title,
        infohash=infohash,
        magnet=magnet,
        link=link,
        size=size if size and size > 0 else None,
        seeders=seeders,
        leechers=leechers,
        imdb_id=_imdb(one("imdbid") or one("imdb")),
        tmdb_id=_int(one("tmdbid")),
        tvdb_id=_int(one("tvdbid")),
        season=_int(one("season")),
        episode=_int(one("episode")),
        categories=[c for c in (_int(v) for v in attrs.get("category", [])) if c is not None],
    )


def parse(body: bytes) -> list[Item]:
    """The items of a Torznab answer. Raises TorznabError (or TorznabAuthError) for an error answer and
    TransientUpstreamError for anything that is not a Torznab RSS document; never anything else."""
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
        raise TransientUpstreamError(f"torznab: the answer is not well-formed XML ({exc})") from None
    if root.tag == "error":
        code, description = root.get("code", "?"), root.get("description", "")
        error = TorznabAuthError if code in ("100", "101", "102") else TorznabError
        raise error(f"torznab error {code}: {description}"[:300])
    channel = root.find("channel") if root.tag == "rss" else None
    if channel is None:
        raise TransientUpstreamError(f"torznab: expected an RSS document, got <{root.tag[:40]}>")
    return [item for item in (_item(node) for node in channel.findall("item")) if item is not None]


def _read(response: requests.Response) -> list[Item]:
    return parse(response.content)


def search(api: JsonApi, params: Mapping[str, Any]) -> list[Item]:
    """One Torznab request against `api`: its base URL is the feed's API URL (e.g. .../api), its `params`
    carry the API key (sent, never cached or logged)."""
    return api.get_parsed("", params, _read)
