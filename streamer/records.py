"""What the streamer records about a torrent it holds, for the API and the admin to read: one Storage item per
source in the sources table (`STORAGE#<infohash>` / `STORAGE`), written at most every status interval while
the torrent is in the session, and once more when it leaves it (state "removed", "deleted" or "stopped")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute

from chalicelib.clock import utcnow
from chalicelib.models.sources import SourceItem


class Storage(SourceItem, discriminator="storage"):
    infohash = UnicodeAttribute()
    name = UnicodeAttribute(null=True)
    state = UnicodeAttribute()  # metadata, buffering, streaming, seeding; removed, deleted, stopped
    progress = NumberAttribute(default=0)  # of the wanted files, 0..1
    downloaded_bytes = NumberAttribute(default=0)  # of the wanted files, on disk and checked
    wanted_bytes = NumberAttribute(default=0)
    download_rate = NumberAttribute(default=0)  # payload bytes per second
    upload_rate = NumberAttribute(default=0)
    peers = NumberAttribute(default=0)
    seeds = NumberAttribute(default=0)
    readers = NumberAttribute(default=0)
    updated_at = UTCDateTimeAttribute()

    @staticmethod
    def key(infohash: str) -> tuple[str, str]:
        return f"STORAGE#{infohash}", "STORAGE"


def write(snapshot: dict[str, Any], state: str | None = None, now: datetime | None = None) -> Storage:
    """Put the record of one torrent from its status snapshot (see session.Torrent.snapshot)."""
    item = Storage(
        *Storage.key(snapshot["infohash"]),
        infohash=snapshot["infohash"],
        name=snapshot.get("name"),
        state=state or snapshot["state"],
        progress=round(float(snapshot.get("progress", 0.0)), 4),
        downloaded_bytes=int(snapshot.get("downloaded_bytes", 0)),
        wanted_bytes=int(snapshot.get("wanted_bytes", 0)),
        download_rate=int(snapshot.get("download_rate", 0)),
        upload_rate=int(snapshot.get("upload_rate", 0)),
        peers=int(snapshot.get("peers", 0)),
        seeds=int(snapshot.get("seeds", 0)),
        readers=int(snapshot.get("readers", 0)),
        updated_at=now or utcnow(),
    )
    item.save()
    return item


def read(infohash: str) -> Storage | None:
    try:
        return Storage.get(*Storage.key(infohash))
    except Storage.DoesNotExist:
        return None
