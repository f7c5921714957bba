"""Torrent sources: one item per torrent (its v1 info-hash), owned by a movie (episodes later), with its
release facts, its health (seeders, leechers, when checked, when to check next) and its ranking score.

    best sources of movie X        Query  by_media  MOVIE#<id>, ranked best first (dead ones are not there)
    sources whose stats are due    Query  due       DUE#STATS, due_sk <= now
    a source by info-hash          GetItem SOURCE#<infohash>

Feeds (Torznab/RSS indexers people register) live in the same table: FEED#<id>.
"""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    DiscriminatorAttribute,
    JSONAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import Model

from chalicelib.models.base import TableMeta


class ByMedia(GlobalSecondaryIndex["SourceItem"]):
    class Meta:
        index_name = "by_media"
        projection = AllProjection()

    media_pk = UnicodeAttribute(hash_key=True)
    media_sk = UnicodeAttribute(range_key=True)


class DueIndex(GlobalSecondaryIndex["SourceItem"]):
    class Meta:
        index_name = "due"
        projection = IncludeProjection(["cls", "infohash", "next_stats_at", "version"])  # what the planner reads

    due_pk = UnicodeAttribute(hash_key=True)
    due_sk = UnicodeAttribute(range_key=True)


class SourceItem(Model):
    class Meta(TableMeta):
        logical_name = "sources"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    cls = DiscriminatorAttribute()
    media_pk = UnicodeAttribute(null=True)
    media_sk = UnicodeAttribute(null=True)
    due_pk = UnicodeAttribute(null=True)
    due_sk = UnicodeAttribute(null=True)

    by_media = ByMedia()
    by_due = DueIndex()


class Source(SourceItem, discriminator="source"):
    infohash = UnicodeAttribute()  # v1, 40 lower-case hex digits
    magnet = UnicodeAttribute()
    owner = UnicodeAttribute()  # "MOVIE#<tmdb id>", whatever the ranking index says
    title = UnicodeAttribute()  # the release's name
    quality = UnicodeAttribute(null=True)  # 2160p, 1080p, 720p, 480p, 3D
    codec = UnicodeAttribute(null=True)  # x264, x265, AV1
    source_type = UnicodeAttribute(null=True)  # bluray, web, ...
    bit_depth = NumberAttribute(null=True)
    audio_channels = UnicodeAttribute(null=True)
    size_bytes = NumberAttribute(null=True)
    seeders = NumberAttribute(default=0)
    leechers = NumberAttribute(default=0)
    completed = NumberAttribute(default=0)
    stats_checked_at = UTCDateTimeAttribute(null=True)  # by a tracker scrape; None: only an index's figures
    next_stats_at = UTCDateTimeAttribute(null=True)
    discovered_via = UnicodeSetAttribute(default=set)  # {"yts", "feed:<id>"}
    first_seen = UTCDateTimeAttribute()
    last_seen_alive = UTCDateTimeAttribute(null=True)
    dead_checks = NumberAttribute(default=0)  # consecutive scrapes with no seeder
    dead = BooleanAttribute(default=False)
    torrent_key = UnicodeAttribute(null=True)  # the .torrent in S3, once fetched
    files = JSONAttribute(null=True)  # [{"path", "size"}], once known
    score = NumberAttribute(null=True)  # None: not rankable (3D when not allowed, dead)
    version = VersionAttribute()

    @staticmethod
    def key(infohash: str) -> tuple[str, str]:
        return f"SOURCE#{infohash}", "SOURCE"


class Feed(SourceItem, discriminator="feed"):
    """A Torznab indexer (Prowlarr, Jackett, ...) someone registered; its API key is stored encrypted."""

    feed_id = UnicodeAttribute()
    owner = UnicodeAttribute(null=True)  # the user who registered it; None: the system's (e.g. make run's sample)
    name = UnicodeAttribute()
    url = UnicodeAttribute()
    api_key_encrypted = UnicodeAttribute(null=True)
    enabled = BooleanAttribute(default=True)
    created_at = UTCDateTimeAttribute()
    last_fetch = JSONAttribute(null=True)  # {"at", "status", "items", "matched", "error"}

    @staticmethod
    def key(feed_id: str) -> tuple[str, str]:
        return "FEEDS", f"FEED#{feed_id}"
