"""The sample movie `make run` can actually play, with nothing configured.

A short video is generated once into the data folder (a moving test pattern, H.264 in MP4 with its index at the
front so playback can start before the end has arrived; made with PyAV, which carries its own FFmpeg), a
.torrent is made for it (torf) announcing to the sample tracker, and a libtorrent seeder serves it on
127.0.0.1 (DHT, LSD, UPnP and NAT-PMP off). The sample YTS then lists that torrent for one movie of the
sample catalog, so the whole flow — catalog, source search, POST /streams, the stream — runs locally.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("projectionist.local.media")

SAMPLE_IMDB = "tt1254207"  # Big Buck Bunny in the sample catalog: a fitting stand-in
TITLE = "Big Buck Bunny (2008) [Projectionist sample]"
WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 24, 60


def ensure_video(folder: Path) -> Path:
    """The sample video, generated the first time (about 4 MB, a second or two)."""
    path = folder / f"{TITLE}.mp4"
    if path.exists() and path.stat().st_size > 0:
        return path
    import av

    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    partial = path.with_suffix(".part.mp4")
    out: Any = av.open(str(partial), "w", options={"movflags": "+faststart"})
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "26"}
    ramp = bytes(range(256)) * ((WIDTH + 512) // 256 + 2)
    for i in range(FPS * SECONDS):
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        frame.planes[0].update(b"".join(ramp[(i * 4 + r) % 256 :][:WIDTH] for r in range(HEIGHT)))
        frame.planes[1].update(bytes([(i * 3) % 256]) * (WIDTH * HEIGHT // 4))
        frame.planes[2].update(bytes([(255 - i) % 256]) * (WIDTH * HEIGHT // 4))
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    partial.rename(path)
    log.info("generated the sample video %s in %.1fs", path.name, time.monotonic() - started)
    return path


def make_torrent(video: Path, trackers: list[str]) -> tuple[bytes, str]:
    """The .torrent of the sample video (bytes) and its v1 info-hash."""
    import torf

    torrent = torf.Torrent(path=video, trackers=trackers, piece_size=256 * 1024, private=False)
    torrent.generate()
    return torrent.dump(), str(torrent.infohash).lower()


@dataclass
class SampleSeeder:
    """A libtorrent session seeding one torrent from `folder` on 127.0.0.1."""

    torrent: bytes
    folder: Path
    port: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # further libtorrent settings (tests: a peer_timeout)

    def start(self) -> SampleSeeder:
        lt: Any = importlib.import_module("libtorrent")  # its bindings' types are not checked here

        settings = {
            "listen_interfaces": f"127.0.0.1:{self.port}",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            # Peers on this host share 127.0.0.1: without this, libtorrent takes them for itself and bans them.
            "connection_speed": 0,
            "allow_multiple_connections_per_ip": True,
            "alert_mask": 0,
            **self.settings,
        }
        self._session: Any = lt.session(settings)
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(lt.bdecode(self.torrent))
        params.save_path = str(self.folder)
        params.flags |= lt.torrent_flags.seed_mode
        self._handle = self._session.add_torrent(params)
        self.port = self._session.listen_port()
        return self

    def stop(self) -> None:
        self._session.pause()
        del self._session


def sample_torrent_fields(infohash: str, size: int) -> dict[str, Any]:
    """The sample YTS torrent entry pointing at the seeded video."""
    return {
        "hash": infohash.upper(), "quality": "1080p", "type": "web", "video_codec": "x264", "size_bytes": size,
        "seeds": 1, "peers": 0,
    }  # fmt: skip
