"""How sources are ranked, so that pressing play takes the first one of an indexed read.

A source's score (higher is better; None means it is never chosen) adds up:

    quality   500 at the preferred quality; 100 less per step below it (worse picture), 60 less per step above
              (a better picture than asked for costs bandwidth and may not play on the user's device).
              Unknown quality: 200. 3D: not rankable unless ALLOW_3D.
    codec     150 for the first of PREFERRED_CODECS, 100 for the second, 50 for the third; 0 for any other.
    health    up to 250: 60 * log2(1 + seeders per GB of the download), so a small file with few seeders can
              beat a huge one with a few more; a torrent of unknown size counts as 2 GB.
    balance   50 when seeders >= leechers (the swarm keeps up with its downloaders).
    freshness health and balance count in full when a tracker was scraped in the last 24 hours, half within
              7 days, a quarter when older or when only an index's figures are known.
    dead      a source with no seeder on its last checks, or none at all, is not rankable.

The score is stored on the source when it is written, and its index key orders a movie's sources best
first, so "best source of movie X" is one Query with Limit=1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

QUALITIES = ("480p", "720p", "1080p", "2160p")
GB = 1024**3
MAX_SCORE = 10_000


@dataclass(frozen=True)
class Preferences:
    quality: str = "1080p"
    codecs: Sequence[str] = ("x264", "x265", "AV1")
    allow_3d: bool = False


@dataclass(frozen=True)
class Facts:
    quality: str | None
    codec: str | None
    size_bytes: int | None
    seeders: int
    leechers: int
    stats_checked_at: datetime | None
    dead: bool = False


def quality_points(quality: str | None, preferred: str) -> int | None:
    if quality is None or quality.lower() not in QUALITIES:
        return None if quality is not None and quality.upper() == "3D" else 200
    steps = QUALITIES.index(quality.lower()) - QUALITIES.index(preferred)
    return 500 - (100 * -steps if steps < 0 else 60 * steps)


def codec_points(codec: str | None, preferred: Sequence[str]) -> int:
    wanted = [c.lower() for c in preferred]
    if codec is None or codec.lower() not in wanted:
        return 0
    return max(0, 150 - 50 * wanted.index(codec.lower()))


def freshness(checked_at: datetime | None, now: datetime) -> float:
    if checked_at is None:
        return 0.25
    age = now - checked_at
    if age <= timedelta(hours=24):
        return 1.0
    if age <= timedelta(days=7):
        return 0.5
    return 0.25


def score(facts: Facts, prefs: Preferences, now: datetime) -> int | None:
    """The source's score, or None when it must not be chosen."""
    if facts.dead or facts.seeders <= 0:
        return None
    quality = quality_points(facts.quality, prefs.quality)
    if quality is None:
        if not prefs.allow_3d:
            return None
        quality = 0  # 3D allowed: chosen only when nothing else is there
    size_gb = (facts.size_bytes or 2 * GB) / GB
    health = min(250.0, 60 * math.log2(1 + facts.seeders / max(size_gb, 0.1)))
    balance = 50 if facts.seeders >= facts.leechers else 0
    fresh = freshness(facts.stats_checked_at, now)
    return int(quality + codec_points(facts.codec, prefs.codecs) + fresh * (health + balance))


def index_key(value: int, infohash: str) -> str:
    """The ranking index's sort key: best (highest score) first when read in ascending order."""
    return f"{MAX_SCORE - max(0, min(value, MAX_SCORE)):05d}#{infohash}"
