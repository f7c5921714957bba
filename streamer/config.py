"""The streamer's settings, read from the environment once (variables prefixed STREAMER_ and TORRENT_).

chalicelib/settings.py holds what the Lambdas and the streamer share (AWS endpoints, table names, the stream
signing key, the VPN gate); this holds what only the streamer container reads. Defaults suit production (a
container with public ports and a mounted data volume); tests and `make run` bind 127.0.0.1 and turn DHT,
LSD, UPnP and NAT-PMP off.

    STREAMER_HOST / STREAMER_PORT           the HTTP server (0.0.0.0:8003; port 0: any free port)
    STREAMER_DOWNLOAD_DIR                   where torrents are stored (resume data under <dir>/.resume)
    STREAMER_DISK_QUOTA_BYTES               least recently watched torrents are deleted above it (0: none)
    STREAMER_IDLE_EVICTION_MINUTES          a torrent nobody reads for that long leaves the session
    STREAMER_READ_AHEAD_SECONDS             the window ahead of a reader: bitrate x seconds, where the bitrate
    STREAMER_ASSUMED_DURATION_SECONDS         is estimated as file size / assumed duration,
    STREAMER_MIN_WINDOW_PIECES                at least this many pieces,
    STREAMER_MAX_WINDOW_PIECES                at most this many
    STREAMER_STALL_TIMEOUT_SECONDS          a reader that sees no download progress that long gets an error
    STREAMER_METADATA_TIMEOUT_SECONDS       a magnet whose metadata does not come that long: 504
    STREAMER_STATUS_INTERVAL_SECONDS        a torrent's Storage record is written at most this often
    STREAMER_MAINTENANCE_INTERVAL_SECONDS   how often idle eviction, the quota and the records are looked at
    STREAMER_PIECE_CACHE_BYTES              pieces read for readers are kept (LRU) up to this many bytes
    STREAMER_SEEK_LANE                      a seek also asks for its first pieces on a second connection to the
                                              best peer (streamer/lane.py; on)
    STREAMER_SHUTDOWN_GRACE_SECONDS         on stop, responses in flight get this long to finish
    STREAMER_WORKER                         `python -m streamer` also polls the torrent queue
    STREAMER_QUEUE_WAIT_SECONDS             the torrent queue's long poll (0 against the embedded emulator)
    TORRENT_LISTEN_INTERFACES               libtorrent's listen_interfaces (0.0.0.0:6881)
    TORRENT_DHT / _LSD / _UPNP / _NATPMP    peer discovery and port mapping (on; tests: off)
    TORRENT_UTP                             uTP in and out (on; off against peers that only speak TCP)
    TORRENT_CONNECTIONS_LIMIT               libtorrent's connections_limit
    TORRENT_DOWNLOAD_LIMIT                  per torrent, bytes per second (0: none)
    TORRENT_DISK_QUEUE_BYTES                downloaded bytes waiting to be written, at most (16 MiB; more and a
                                              read of a piece already here waits behind them: see README)
    TORRENT_ALLOW_MULTIPLE_CONNECTIONS_PER_IP   several peers on one address (needed on loopback)
    TORRENT_EXTRA_SETTINGS                  a JSON object of further libtorrent settings_pack names
"""

from __future__ import annotations

import ipaddress
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3
MIB = 1024**2


def _env(name: str, default: Any, **constraints: Any) -> Any:
    return Field(default=default, validation_alias=name, **constraints)


class StreamerConfig(BaseSettings):
    """Frozen; build a variant with `config.model_copy(update={...})` or `StreamerConfig(port=0, ...)`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    host: str = _env("STREAMER_HOST", "0.0.0.0")
    port: int = _env("STREAMER_PORT", 8003, ge=0, le=65535)
    download_dir: Path = _env("STREAMER_DOWNLOAD_DIR", Path("/data/torrents"))
    disk_quota_bytes: int = _env("STREAMER_DISK_QUOTA_BYTES", 16 * GIB, ge=0)
    idle_eviction_minutes: float = _env("STREAMER_IDLE_EVICTION_MINUTES", 30.0, gt=0)
    read_ahead_seconds: float = _env("STREAMER_READ_AHEAD_SECONDS", 30.0, gt=0)
    assumed_duration_seconds: float = _env("STREAMER_ASSUMED_DURATION_SECONDS", 2 * 3600.0, gt=0)
    min_window_pieces: int = _env("STREAMER_MIN_WINDOW_PIECES", 4, ge=1)
    max_window_pieces: int = _env("STREAMER_MAX_WINDOW_PIECES", 256, ge=1)
    sequential: bool = _env("STREAMER_SEQUENTIAL", True)
    seek_lane: bool = _env("STREAMER_SEEK_LANE", True)
    stall_timeout_seconds: float = _env("STREAMER_STALL_TIMEOUT_SECONDS", 60.0, gt=0)
    metadata_timeout_seconds: float = _env("STREAMER_METADATA_TIMEOUT_SECONDS", 30.0, gt=0)
    status_interval_seconds: float = _env("STREAMER_STATUS_INTERVAL_SECONDS", 30.0, gt=0)
    maintenance_interval_seconds: float = _env("STREAMER_MAINTENANCE_INTERVAL_SECONDS", 5.0, gt=0)
    piece_cache_bytes: int = _env("STREAMER_PIECE_CACHE_BYTES", 64 * MIB, ge=0)
    shutdown_grace_seconds: float = _env("STREAMER_SHUTDOWN_GRACE_SECONDS", 10.0, ge=0)
    worker: bool = _env("STREAMER_WORKER", True)
    queue_wait_seconds: int = _env("STREAMER_QUEUE_WAIT_SECONDS", 1, ge=0, le=20)

    listen_interfaces: str = _env("TORRENT_LISTEN_INTERFACES", "0.0.0.0:6881", min_length=1)
    dht: bool = _env("TORRENT_DHT", True)
    lsd: bool = _env("TORRENT_LSD", True)
    upnp: bool = _env("TORRENT_UPNP", True)
    natpmp: bool = _env("TORRENT_NATPMP", True)
    utp: bool = _env("TORRENT_UTP", True)
    connections_limit: int = _env("TORRENT_CONNECTIONS_LIMIT", 200, ge=2)
    download_limit: int = _env("TORRENT_DOWNLOAD_LIMIT", 0, ge=0)
    disk_queue_bytes: int = _env("TORRENT_DISK_QUEUE_BYTES", 16 * MIB, ge=1 * MIB)
    allow_multiple_connections_per_ip: bool = _env("TORRENT_ALLOW_MULTIPLE_CONNECTIONS_PER_IP", False)
    extra_settings: dict[str, int | bool | str] = _env("TORRENT_EXTRA_SETTINGS", {})

    @field_validator("extra_settings", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @property
    def resume_dir(self) -> Path:
        return self.download_dir / ".resume"

    @property
    def bind_address(self) -> str | None:
        """The address libtorrent listens on (the first of listen_interfaces), for connections opened beside it;
        None for a wildcard or a device name."""
        host = self.listen_interfaces.split(",")[0].strip().rsplit(":", 1)[0].strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        return None if address.is_unspecified else str(address)

    @property
    def idle_eviction_seconds(self) -> float:
        return self.idle_eviction_minutes * 60

    def window_pieces(self, file_size: int, piece_length: int) -> int:
        """How many pieces ahead of a reader get deadlines: the assumed bitrate times the read-ahead seconds."""
        bitrate = file_size / self.assumed_duration_seconds  # bytes per second
        wanted = math.ceil(bitrate * self.read_ahead_seconds / max(1, piece_length))
        return max(self.min_window_pieces, min(self.max_window_pieces, wanted))

    def piece_interval_ms(self, file_size: int, piece_length: int) -> int:
        """How long a player takes to play one piece at the assumed bitrate (deadlines are spaced by it)."""
        bitrate = max(1.0, file_size / self.assumed_duration_seconds)
        return max(1, int(1000 * piece_length / bitrate))

    def libtorrent_settings(self) -> dict[str, Any]:
        """The settings_pack for lt.session (alert_mask is the session's business)."""
        settings: dict[str, Any] = {
            "listen_interfaces": self.listen_interfaces,
            "enable_dht": self.dht,
            "enable_lsd": self.lsd,
            "enable_upnp": self.upnp,
            "enable_natpmp": self.natpmp,
            "enable_outgoing_utp": self.utp,
            "enable_incoming_utp": self.utp,
            "connections_limit": self.connections_limit,
            # libtorrent 2.1's default is 100 MiB, and a read (read_piece) queues behind the writes: on a fast
            # download a piece already here took up to 1.1 s to read (the stream benchmark's "wait" column).
            "max_queued_disk_bytes": self.disk_queue_bytes,
            "allow_multiple_connections_per_ip": self.allow_multiple_connections_per_ip,
            "alert_queue_size": 20000,
        }
        settings.update(self.extra_settings)
        return settings


@lru_cache(maxsize=1)
def get_config() -> StreamerConfig:
    return StreamerConfig()
