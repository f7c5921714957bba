"""Real parts for the streamer's tests: opentracker, aria2c seeders of media files we generate, sources in the
emulator's DynamoDB, stream tokens and Streamers on 127.0.0.1 with DHT, LSD, UPnP and NAT-PMP off.

What was found out on the way (libtorrent 2.1.1 leecher, aria2c 1.36 seeder, all on 127.0.0.1):

- aria2c serves ut_metadata even for private torrents, so a magnet naming opentracker resolves (in about a
  second: aria2c answers on a ~1 s tick).
- libtorrent tries uTP first; aria2c does not speak it, and the TCP fallback costs ~4 s per peer, so the
  streamer's tests turn uTP off (TORRENT_UTP=false). Seeders on one address need
  allow_multiple_connections_per_ip. Nothing bans 127.0.0.1 as "ourselves" with aria2c as the seeder (that
  happens between two libtorrent sessions unless connection_speed=0).
- aria2c seeds 100 MB over loopback in well under a second, so tests that must catch a stream mid-way cap the
  streamer's download rate per torrent (TORRENT_DOWNLOAD_LIMIT).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chalicelib.settings import reset_settings
from chalicelib.sources import store
from chalicelib.streams import grants
from streamer.config import StreamerConfig
from streamer.server import Streamer
from tests.integration.tracker_fixtures import (
    OpenTracker,
    _die_with_parent,
    _stop,
    ensure_tracker_tools,
    free_port,
    make_torrent,
    start_opentracker,
    wait_until,
)

MIB = 1024 * 1024
SIGNING_KEY = "streamer-tests-signing-key-0123456789abcdef"


def random_file(path: Path, size: int) -> str:
    """Write `size` random bytes to `path`; returns their sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


@dataclass
class Media:
    """A generated media file, its .torrent (announcing to the test tracker) and what a player must get."""

    data: Path
    torrent: Path
    infohash: str
    size: int
    sha256: str
    tracker: OpenTracker
    seeders: list[AriaSeeder] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def magnet(self) -> str:
        return store.magnet(self.infohash, self.name, [self.tracker.announce_url])

    def read(self, start: int, stop: int) -> bytes:
        with open(self.data, "rb") as f:
            f.seek(start)
            return f.read(stop - start)

    def seed(self, counted: bool = True) -> AriaSeeder:
        """Start (another) aria2c seeding this file; returns once it listens (and, with `counted`, once the
        tracker counts a seeder: a killed one stays counted, so a second seeder cannot wait for that)."""
        seeder = AriaSeeder(self).start(counted)
        self.seeders.append(seeder)
        return seeder

    def stop_seeders(self) -> None:
        for seeder in self.seeders:
            seeder.stop()
        self.seeders.clear()


def make_media(tracker: OpenTracker, workdir: Path, size: int, name: str = "sample.mp4") -> Media:
    """A new random file of `size` bytes named `name` in its own folder, and its private .torrent."""
    data = workdir / "data" / name
    sha = random_file(data, size)
    torrent = workdir / f"{name}.torrent"
    infohash = make_torrent(data, tracker.announce_url, torrent)
    tracker.whitelist(infohash)  # before aria2c announces: opentracker refuses unlisted infohashes
    return Media(data=data, torrent=torrent, infohash=infohash, size=size, sha256=sha, tracker=tracker)


class AriaSeeder:
    """aria2c seeding a Media's file from its folder (DHT, LPD and PEX off; 127.0.0.1 only)."""

    def __init__(self, media: Media) -> None:
        self.media = media
        self.port = free_port()
        # In the media's folder (the test's temporary one), not /tmp: nothing is left behind.
        self.log = Path(tempfile.mkstemp(prefix="aria2c-", suffix=".log", dir=media.torrent.parent)[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, counted: bool = True) -> AriaSeeder:
        ensure_tracker_tools()
        command = [
            "aria2c", "--no-conf=true", f"--dir={self.media.data.parent}", str(self.media.torrent),
            "--seed-ratio=0.0", "--check-integrity=true", "--bt-seed-unverified=false", "--file-allocation=none",
            "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
            f"--listen-port={self.port}", "--interface=127.0.0.1", "--disable-ipv6=true",
            f"--stop-with-process={os.getpid()}", "--summary-interval=0", "--console-log-level=warn",
            f"--log={self.log}", "--log-level=info",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )  # fmt: skip

        def listening() -> bool:  # after checking the file, so it has every piece
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"aria2c exited with {self.process.returncode}:\n{self.log.read_text()[-2000:]}")
            return "listening on TCP port" in self.log.read_text(errors="replace")

        wait_until(listening, 30, f"aria2c to seed {self.media.name}", 0.05)
        if counted:
            wait_until(lambda: self.media.tracker.counts(self.media.infohash)[0] >= 1, 30, "the tracker to count it")
        return self

    def kill(self) -> None:
        """SIGKILL: gone at once, no `stopped` announce (the tracker still lists it)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


def streamer_config(download_dir: Path, **overrides: Any) -> StreamerConfig:
    """A streamer for tests: 127.0.0.1 everywhere, any free ports, no DHT/LSD/UPnP/NAT-PMP, no uTP."""
    values: dict[str, Any] = dict(
        host="127.0.0.1",
        port=0,
        listen_interfaces="127.0.0.1:0",
        dht=False,
        lsd=False,
        upnp=False,
        natpmp=False,
        utp=False,
        allow_multiple_connections_per_ip=True,
        download_dir=download_dir,
        disk_quota_bytes=0,
        idle_eviction_minutes=60,
        stall_timeout_seconds=10,
        metadata_timeout_seconds=20,
        status_interval_seconds=1,
        maintenance_interval_seconds=0.3,
        shutdown_grace_seconds=2,
        queue_wait_seconds=0,
    )
    values.update(overrides)
    return StreamerConfig(**values)


def streamer_environment(config: StreamerConfig) -> dict[str, str]:
    """The same configuration as environment variables, for `python -m streamer`."""
    names = {name: info.validation_alias for name, info in StreamerConfig.model_fields.items()}
    env = {}
    for name, value in config.model_dump().items():
        alias = names[name]
        if isinstance(value, bool):
            env[str(alias)] = "true" if value else "false"
        elif isinstance(value, dict):
            env[str(alias)] = json.dumps(value)
        else:
            env[str(alias)] = str(value)
    return env


def add_source(media: Media, movie_id: int = 4242, **extra: Any) -> Any:
    """The media's Source in the sources table, with a magnet that names only the test tracker."""
    source, _ = store.upsert(
        movie_id, store.Found(infohash=media.infohash, title=media.name, magnet=media.magnet, **extra), via="test"
    )
    return source


def token_for(media: Media | str, file_index: int | None = None, ttl: int = 3600) -> str:
    infohash = media if isinstance(media, str) else media.infohash
    return grants.issue(infohash, "tester", file_index, ttl=ttl)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenTracker]:
    """One opentracker for a test module (each media file whitelists its own info-hash)."""
    with start_opentracker(tmp_path_factory.mktemp("opentracker")) as running:
        yield running


@pytest.fixture(scope="module")
def movie(tracker: OpenTracker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Media]:
    """A 100 MiB `sample.mp4` of random bytes, seeded by aria2c for the whole module (never killed)."""
    media = make_media(tracker, tmp_path_factory.mktemp("movie"), 100 * MIB)
    media.seed()
    yield media
    media.stop_seeders()


@pytest.fixture
def make_media_seeded(tracker: OpenTracker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Media]]:
    """`make_media_seeded(size, name=...)`: a fresh media file with one aria2c seeder, stopped after the test."""
    made: list[Media] = []

    def make(size: int, name: str = "sample.mp4", seeded: bool = True) -> Media:
        media = make_media(tracker, tmp_path_factory.mktemp("media"), size, name)
        made.append(media)
        if seeded:
            media.seed()
        return media

    yield make
    for media in made:
        media.stop_seeders()


@pytest.fixture
def stream_platform(platform: Callable[..., Any]) -> Callable[..., Any]:
    """Start the local runtime (emulator, tables, bucket), with a stream signing key the test shares."""

    def start(*specs: Any, **options: Any) -> Any:
        runtime = platform(*specs, **options)
        os.environ["STREAM_SIGNING_KEY"] = SIGNING_KEY
        reset_settings()
        return runtime

    return start


@pytest.fixture
def make_streamer(tmp_path: Path) -> Iterator[Callable[..., Streamer]]:
    """`make_streamer(download_dir=None, gate=None, **config)`: a started Streamer, stopped after the test."""
    started: list[Streamer] = []

    def make(download_dir: Path | None = None, gate: Any = None, **overrides: Any) -> Streamer:
        directory = download_dir or Path(tempfile.mkdtemp(prefix="torrents-", dir=tmp_path))
        streamer = Streamer(streamer_config(directory, **overrides), gate=gate).start()
        started.append(streamer)
        return streamer

    yield make
    for streamer in reversed(started):
        with contextlib.suppress(Exception):
            streamer.stop()
