"""The metadata job: a source's .torrent resolved from its peers, kept in S3, and its files recorded.

    torrent.fetch_metadata   torrent queue   the magnet's metadata from peers (ut_metadata, BEP 9) through the
                                             streamer's libtorrent session, its info-hash checked, the .torrent
                                             stored at torrents/<infohash>.torrent, files and sizes on the source

It runs where the `torrent` queue is consumed: the streamer's process (the container on AWS, `make run`'s
in-process streamer locally), behind the VPN gate, since it talks to peers. The streamer is imported only when
the job runs: the Lambdas that enqueue it have no libtorrent.

New sources found alive (an index reports seeders) get one as they are discovered; a source whose magnet
nobody answers is tried again with a long backoff and then left alone (no dead letter: an unanswered magnet
is an everyday fact, not a fault). A stream of a source without a .torrent still works: the streamer resolves
the magnet itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pynamodb.exceptions import PutError

from chalicelib import aws
from chalicelib.jobs import enqueue
from chalicelib.jobs.registry import JobContext, UniqueFor, job
from chalicelib.jobs.retry import Retry
from chalicelib.models.sources import Source
from chalicelib.observability import logger
from chalicelib.settings import get_settings
from chalicelib.sources import store

JOB = "torrent.fetch_metadata"
RETRY = Retry(max_attempts=4, base=900, cap=6 * 3600)


def torrent_key(infohash: str) -> str:
    return f"torrents/{infohash}.torrent"


def request(infohashes: Iterable[str]) -> int:
    """Enqueue a metadata fetch for each source (a unique job per info-hash); returns how many were sent."""
    envelopes = [enqueue.build(JOB, {"infohash": infohash}) for infohash in dict.fromkeys(infohashes)]
    if not envelopes:
        return 0
    return sum(e.sent for e in enqueue.enqueue_envelopes(envelopes))


def record(infohash: str, key: str, files: list[dict[str, Any]]) -> bool:
    """Note the stored .torrent and the files on the source (under its version; False: the source is gone)."""
    for _ in range(5):
        try:
            source = Source.get(*Source.key(infohash), consistent_read=True)
        except Source.DoesNotExist:
            return False
        source.torrent_key = key
        source.files = files
        if source.size_bytes is None:
            source.size_bytes = sum(int(f["size"]) for f in files)
        try:
            source.save()
            return True
        except PutError as exc:
            if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
    raise RuntimeError(f"source {infohash} kept changing while its files were recorded")


@job(JOB, queue="torrent", timeout=60, retry=RETRY, unique=UniqueFor(hours=12, key="{infohash}"))
def fetch_metadata(ctx: JobContext, infohash: str) -> dict[str, Any]:
    from streamer import session  # the streamer's process only: it has libtorrent and the session

    infohash = store.normalize_infohash(infohash)
    try:
        source = Source.get(*Source.key(infohash), consistent_read=True)
    except Source.DoesNotExist:
        return {"infohash": infohash, "outcome": "no such source"}
    key = torrent_key(infohash)
    if source.torrent_key and source.files:
        return {"infohash": infohash, "outcome": "already known", "torrent_key": source.torrent_key}
    try:
        fetched = session.fetch_metadata(source.magnet)
    except session.MetadataTimeoutError:
        if ctx.attempt < RETRY.max_attempts:
            raise  # retried with backoff: peers come and go
        logger.info("no peer answered for %s after %d attempts: left alone", infohash, ctx.attempt)
        return {"infohash": infohash, "outcome": "no peer answered"}
    except session.MetadataMismatchError as exc:
        logger.warning("metadata for %s does not match its info-hash: %s", infohash, exc)
        return {"infohash": infohash, "outcome": "metadata did not match the info-hash"}
    aws.s3().put_object(
        Bucket=get_settings().bucket_name, Key=key, Body=fetched.torrent, ContentType="application/x-bittorrent"
    )
    if not record(infohash, key, fetched.files):
        return {"infohash": infohash, "outcome": "the source was removed meanwhile"}
    return {"infohash": infohash, "outcome": "stored", "torrent_key": key, "files": len(fetched.files)}
