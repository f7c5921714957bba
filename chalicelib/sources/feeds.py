"""Torznab feeds: registered by people (URL + API key, the key stored encrypted), fetched hourly, one job
per feed, their items matched to the catalog and upserted as sources.

Matching, most certain first: the item's IMDb id (through the catalog's id aliases), its TMDB id, else its
release name parsed with guessit (title, year, season, episode) and looked up in the title search index: a
match needs the same normalized title and, when both are known, a year at most one apart; an ambiguous
title matches nothing. Matching and upserting are idempotent: fetching a feed twice changes nothing more.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from guessit import guessit

from chalicelib.catalog import search as title_search
from chalicelib.clock import utcnow
from chalicelib.errors import NotFoundError, ValidationError
from chalicelib.jobs import enqueue
from chalicelib.jobs.periodic import periodic
from chalicelib.jobs.registry import JobContext, job
from chalicelib.jobs.retry import Retry
from chalicelib.models.catalog import CatalogItem, ExternalId, Movie, SearchEntry, Show
from chalicelib.models.sources import Feed
from chalicelib.secrets import decrypt, encrypt, mask
from chalicelib.sources import metadata, store
from chalicelib.upstreams import torznab
from chalicelib.upstreams.http import JsonApi

MOVIE_CATEGORIES = range(2000, 3000)
TV_CATEGORIES = range(5000, 6000)
FEED_LIMIT = 100  # items a fetch asks for
CODECS = {"H.264": "x264", "H.265": "x265", "AV1": "AV1", "Xvid": "xvid"}
QUALITIES = {"480p", "720p", "1080p", "2160p"}


# -- registry ---------------------------------------------------------------------------------------------


def register(name: str, url: str, api_key: str | None, now: datetime | None = None, owner: str | None = None) -> Feed:
    if not 1 <= len(name) <= 80:
        raise ValidationError("name must be 1..80 characters", details={"field": "name"})
    if not url.startswith(("http://", "https://")) or len(url) > 500:
        raise ValidationError("url must be an http(s) URL of the feed's Torznab API", details={"field": "url"})
    if api_key is not None and not 1 <= len(api_key) <= 200:
        raise ValidationError("api_key must be 1..200 characters", details={"field": "api_key"})
    feed_id = uuid.uuid4().hex[:12]
    feed = Feed(
        *Feed.key(feed_id),
        feed_id=feed_id,
        owner=owner,
        name=name,
        url=url.rstrip("/"),
        api_key_encrypted=encrypt(api_key) if api_key else None,
        created_at=now or utcnow(),
    )
    feed.save()
    return feed


def get(feed_id: str) -> Feed:
    try:
        return Feed.get(*Feed.key(feed_id), consistent_read=True)
    except Feed.DoesNotExist:
        raise NotFoundError(f"no feed {feed_id!r}") from None


def all_feeds() -> list[Feed]:
    return [f for f in Feed.query("FEEDS") if isinstance(f, Feed)]


def visible_to(feed: Feed, username: str, is_admin: bool) -> bool:
    """A feed is its owner's; the system's own feeds (no owner) are the admins'."""
    return feed.owner == username if feed.owner is not None else is_admin


def get_for(feed_id: str, username: str, is_admin: bool) -> Feed:
    """`feed_id` if `username` may see it; else the same 404 as a feed that does not exist."""
    feed = get(feed_id) if 1 <= len(feed_id) <= 64 else None
    if feed is None or not visible_to(feed, username, is_admin):
        raise NotFoundError(f"no feed {feed_id!r}")
    return feed


def delete(feed_id: str) -> None:
    get(feed_id).delete()


def view(feed: Feed) -> dict[str, Any]:
    """A feed as the API shows it: the key masked, never in clear."""
    key = decrypt(feed.api_key_encrypted) if feed.api_key_encrypted else None
    return {
        "id": feed.feed_id,
        "owner": feed.owner,
        "name": feed.name,
        "url": feed.url,
        "api_key": mask(key),
        "enabled": feed.enabled,
        "created_at": feed.created_at.isoformat(),
        "last_fetch": feed.last_fetch,
    }


def _api(feed: Feed) -> JsonApi:
    params = {"apikey": decrypt(feed.api_key_encrypted)} if feed.api_key_encrypted else {}
    return JsonApi(name=f"feed {feed.name}", base_url=feed.url, params=params, timeout=(3.05, 20.0))


# -- matching ---------------------------------------------------------------------------------------------


def _by_alias(imdb_id: str) -> tuple[str, int] | None:
    try:
        alias = ExternalId.get(*ExternalId.key("imdb", imdb_id))
    except ExternalId.DoesNotExist:
        return None
    return str(alias.media_type), int(alias.media_id)


def _by_title(title: str, year: int | None, media_type: str) -> int | None:
    """The one catalog item of `media_type` with this exact (normalized) title and a year close enough."""
    words = title_search.query_words(title)
    wanted = title_search.normalize(title)
    if not words or not wanted:
        return None
    candidates = CatalogItem.query(
        f"SEARCH#{words[0][:2]}", CatalogItem.sk.startswith(words[0] + "#"), limit=300
    )  # one exact word's entries, most popular first
    ids = {
        int(entry.media_id)
        for entry in candidates
        if isinstance(entry, SearchEntry)
        and entry.media_type == media_type
        and wanted in [t.strip() for t in entry.titles.split("|")]
    }
    if year is not None and ids:
        model: Any = Movie if media_type == "movie" else Show
        dated = {
            int(item.tmdb_id): (item.release_date if media_type == "movie" else item.first_air_date)
            for item in model.batch_get([model.key(i) for i in ids])
        }
        years = {i: int(d[:4]) if d and d[:4].isascii() and d[:4].isdigit() else None for i, d in dated.items()}
        ids = {i for i, y in years.items() if y is None or abs(y - year) <= 1}
    return next(iter(ids)) if len(ids) == 1 else None


def match(item: torznab.Item) -> tuple[str, Any] | None:
    """("movie", tmdb id) or ("episode", (show id, season, episode)), or None when nothing matches for sure."""
    guess = dict(guessit(item.title))
    is_tv = (
        any(c in TV_CATEGORIES for c in item.categories) or guess.get("type") == "episode" or item.season is not None
    )
    season = item.season if item.season is not None else guess.get("season")
    episode = item.episode if item.episode is not None else guess.get("episode")
    target: tuple[str, int] | None = None
    if item.imdb_id:
        target = _by_alias(item.imdb_id)
    if target is None and item.tmdb_id and not is_tv:
        target = ("movie", item.tmdb_id)
    if target is None and guess.get("title"):
        year = guess.get("year") if isinstance(guess.get("year"), int) else None
        media_type = "tv" if is_tv else "movie"
        found = _by_title(str(guess["title"]), year, media_type)
        target = (media_type, found) if found is not None else None
    if target is None:
        return None
    media_type, media_id = target
    if media_type == "movie":
        return "movie", media_id
    if isinstance(season, int) and isinstance(episode, int):
        return "episode", (media_id, season, episode)
    return None  # a season pack or an unknown episode: not a playable source of one episode


def found(item: torznab.Item) -> store.Found | None:
    if item.infohash is None:
        return None
    guess = dict(guessit(item.title))
    screen = str(guess.get("screen_size", "")).lower()
    source = str(guess.get("source", "")).lower()
    quality = "3D" if "3D" in str(guess.get("other", "")) else screen if screen in QUALITIES else None
    return store.Found(
        infohash=item.infohash,
        title=item.title,
        quality=quality,
        codec=CODECS.get(str(guess.get("video_codec"))),
        source_type="bluray" if "blu-ray" in source else "web" if "web" in source else source or None,
        audio_channels=str(guess["audio_channels"]) if guess.get("audio_channels") else None,
        size_bytes=item.size,
        seeders=item.seeders or 0,
        leechers=item.leechers or 0,
        magnet=item.magnet if item.magnet and item.magnet.startswith("magnet:") else None,
    )


# -- fetching ---------------------------------------------------------------------------------------------


def ingest(items: list[torznab.Item], via: str, now: datetime) -> dict[str, int]:
    counts = {"items": len(items), "matched": 0, "new_sources": 0}
    alive: list[str] = []
    for item in items:
        target = match(item)
        release = found(item)
        if target is None or release is None:
            continue
        counts["matched"] += 1
        kind, ident = target
        owner = store.owner_key(ident) if kind == "movie" else store.episode_key(*ident)
        source, created = store.upsert_owned(owner, release, via, now)
        counts["new_sources"] += created
        if created and source.seeders:
            alive.append(source.infohash)
    metadata.request(alive)  # their .torrent and files, from their peers
    return counts


def fetch_feed_now(feed_id: str, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    feed = get(feed_id)
    api = _api(feed)
    try:
        items = torznab.search(api, {"t": "search", "limit": FEED_LIMIT})  # the feed's newest releases
        counts = ingest(items, f"feed:{feed_id}", now)
    except Exception as exc:
        feed.update(actions=[Feed.last_fetch.set({"at": now.isoformat(), "status": "failed", "error": str(exc)[:300]})])
        raise
    feed.update(actions=[Feed.last_fetch.set({"at": now.isoformat(), "status": "ok", **counts})])
    return {"feed_id": feed_id, **counts}


def search_feeds_for_movie(movie: Movie, now: datetime) -> int:
    """Ask every enabled feed for one movie by IMDb id (the movie search does this besides YTS)."""
    found_count = 0
    for feed in all_feeds():
        if not feed.enabled or not movie.imdb_id:
            continue
        params = {"t": "movie", "imdbid": movie.imdb_id.removeprefix("tt"), "limit": FEED_LIMIT}
        items = torznab.search(_api(feed), params)
        found_count += ingest(items, f"feed:{feed.feed_id}", now)["matched"]
    return found_count


@job("sources.fetch_feed", queue="sources", retry=Retry(max_attempts=5, base=60, cap=1800))
def fetch_feed(ctx: JobContext, feed_id: str) -> dict[str, Any]:
    return fetch_feed_now(feed_id)


@periodic("sources.fetch_feeds", schedule="rate(1 hour)", description="Fetch every enabled Torznab feed")
@job("sources.fetch_feeds", queue="sources")
def fetch_feeds(ctx: JobContext) -> dict[str, int]:
    feeds = [f for f in all_feeds() if f.enabled]
    enqueue.enqueue_envelopes([enqueue.build("sources.fetch_feed", {"feed_id": f.feed_id}) for f in feeds])
    return {"feeds": len(feeds)}
