"""Writing sources: one item per info-hash, whoever found it (YTS, a feed), merged, ranked on every write.

A source is read, merged and written back under its version (optimistic locking), so a discovery and a
stats update racing each other both land. Its score and its place in the movie's ranking index are
recomputed from the merged facts each time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from pynamodb.exceptions import PutError

from chalicelib.clock import utcnow
from chalicelib.errors import ValidationError
from chalicelib.models.catalog import iso
from chalicelib.models.sources import Source
from chalicelib.settings import get_settings
from chalicelib.sources import ranking

INFOHASH = re.compile(r"^[0-9a-fA-F]{40}$")
STATS_DUE = "STATS"


def normalize_infohash(value: str) -> str:
    if not INFOHASH.match(value or ""):
        raise ValidationError(f"{value!r} is not a v1 info-hash (40 hex digits)")
    return value.lower()


def magnet(infohash: str, name: str, trackers: Iterable[str]) -> str:
    params = [("xt", f"urn:btih:{infohash}"), ("dn", name), *(("tr", t) for t in trackers)]
    return "magnet:?" + urlencode(params, safe=":/")


def owner_key(movie_id: int) -> str:
    return f"MOVIE#{movie_id}"


def episode_key(show_id: int, season: int, episode: int) -> str:
    return f"EPISODE#{show_id}#{season}#{episode}"


def preferences() -> ranking.Preferences:
    settings = get_settings()
    return ranking.Preferences(
        quality=settings.preferred_quality, codecs=tuple(settings.preferred_codecs), allow_3d=settings.allow_3d
    )


@dataclass
class Found:
    """A release as an index reports it."""

    infohash: str
    title: str
    quality: str | None = None
    codec: str | None = None
    source_type: str | None = None
    bit_depth: int | None = None
    audio_channels: str | None = None
    size_bytes: int | None = None
    seeders: int = 0
    leechers: int = 0
    magnet: str | None = None
    extra_trackers: list[str] = field(default_factory=list)


def rank(source: Source, now: datetime) -> None:
    """Recompute the score and the ranking index keys from the source's facts."""
    facts = ranking.Facts(
        quality=source.quality,
        codec=source.codec,
        size_bytes=int(source.size_bytes) if source.size_bytes is not None else None,
        seeders=int(source.seeders or 0),
        leechers=int(source.leechers or 0),
        stats_checked_at=source.stats_checked_at,
        dead=bool(source.dead),
    )
    value = ranking.score(facts, preferences(), now)
    source.score = value
    if value is None:
        source.media_pk = source.media_sk = None  # out of the ranking: never picked
    else:
        source.media_pk, source.media_sk = source.owner, ranking.index_key(value, source.infohash)


def set_stats_due(source: Source, at: datetime) -> None:
    source.next_stats_at = at
    source.due_pk, source.due_sk = f"DUE#{STATS_DUE}", f"{iso(at)}#{source.infohash}"


def _load(infohash: str) -> Source | None:
    try:
        return Source.get(*Source.key(infohash), consistent_read=True)
    except Source.DoesNotExist:
        return None


def upsert(movie_id: int, found: Found, via: str, now: datetime | None = None) -> tuple[Source, bool]:
    return upsert_owned(owner_key(movie_id), found, via, now)


def upsert_owned(owner: str, found: Found, via: str, now: datetime | None = None) -> tuple[Source, bool]:
    """Create or merge a source of `owner` (a movie or an episode); returns it and whether it is new. An
    index's seeders stand until a tracker scrape replaces them; a new source is due for its first scrape."""
    now = now or utcnow()
    infohash = normalize_infohash(found.infohash)
    for _ in range(5):
        source = _load(infohash)
        created = source is None
        if source is None:
            trackers = [*get_settings().trackers, *found.extra_trackers]
            source = Source(
                *Source.key(infohash),
                infohash=infohash,
                magnet=found.magnet or magnet(infohash, found.title, trackers),
                owner=owner,
                title=found.title,
                first_seen=now,
            )
            set_stats_due(source, now)
        source.discovered_via = set(source.discovered_via or set()) | {via}
        for name in ("quality", "codec", "source_type", "bit_depth", "audio_channels", "size_bytes"):
            value = getattr(found, name)
            if value is not None and getattr(source, name) is None:
                setattr(source, name, value)
        if source.stats_checked_at is None:  # no scrape yet: the best an index has said
            source.seeders = max(int(source.seeders or 0), found.seeders)
            source.leechers = max(int(source.leechers or 0), found.leechers)
        if source.seeders and not source.dead:
            source.last_seen_alive = source.last_seen_alive or now
        rank(source, now)
        try:
            source.save()  # conditional on the version read (a new one: on not existing yet)
            return source, created
        except PutError as exc:
            if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
    raise ValidationError(f"source {infohash} kept changing while being written")


def best(movie_id: int, limit: int = 20) -> list[Source]:
    """A movie's live sources, best first (one Query on the ranking index)."""
    return [s for s in Source.by_media.query(owner_key(movie_id), limit=limit) if isinstance(s, Source)]


def view(source: Source, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    checked = source.stats_checked_at
    return {
        "infohash": source.infohash,
        "title": source.title,
        "quality": source.quality,
        "codec": source.codec,
        "type": source.source_type,
        "size_bytes": int(source.size_bytes) if source.size_bytes is not None else None,
        "seeders": int(source.seeders or 0),
        "leechers": int(source.leechers or 0),
        "score": source.score,
        "stats_checked_at": checked.isoformat() if checked else None,
        "stats_age_seconds": int((now - checked).total_seconds()) if checked else None,
        "discovered_via": sorted(source.discovered_via or []),
        "magnet": source.magnet,
        "files": source.files,
    }
