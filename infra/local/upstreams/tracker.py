"""A sample BitTorrent tracker for `make run`: BEP 15 UDP connect, announce and scrape on 127.0.0.1.

The public trackers sources are scraped on cannot be reached from here, and Debian's opentracker (which the
tests run, for real) is not something `make run` should need. This answers every scrape with counts made up
from the info-hash (the same hash always gets the same counts, a few get none at all), or with counts a test
sets, so the stats planner, the ranking and the dead-source resync have something to work on.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import struct
import threading
from typing import Self

PROTOCOL_ID = 0x41727101980
CONNECT, ANNOUNCE, SCRAPE, ERROR = 0, 1, 2, 3
COMPLETED, STOPPED = 1, 3  # announce events
INTERVAL = 60


def made_up_counts(infohash: bytes) -> tuple[int, int, int]:
    """(seeders, completed, leechers) for a hash: about one in eight has no seeder."""
    digest = hashlib.sha1(b"sample-tracker" + infohash).digest()
    seeders = 0 if digest[0] < 32 else 1 + digest[1] % 200
    return seeders, seeders * 3 + digest[2] % 50, digest[3] % 60


class SampleTracker:
    def __init__(self, port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", port))
        self._sock.settimeout(0.2)
        self._connections: set[int] = set()
        self._counts: dict[bytes, tuple[int, int, int]] = {}
        self._peers: dict[bytes, dict[tuple[str, int], bool]] = {}  # hash -> {(ip, port): seeding}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scrapes = 0

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.port}/announce"

    def set_counts(self, infohash: str, seeders: int, leechers: int = 0, completed: int = 0) -> None:
        with self._lock:
            self._counts[bytes.fromhex(infohash)] = (seeders, completed, leechers)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._serve, name="sample-tracker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, peer = self._sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self._answer(packet, peer[0])
            if answer is not None:
                self._sock.sendto(answer, peer)

    def _answer(self, packet: bytes, ip: str) -> bytes | None:
        if len(packet) < 16:
            return None
        connection_id, action, transaction = struct.unpack(">QII", packet[:16])
        with self._lock:
            if action == CONNECT and connection_id == PROTOCOL_ID:
                new_id = secrets.randbits(63)
                self._connections.add(new_id)
                return struct.pack(">IIQ", CONNECT, transaction, new_id)
            if action == ANNOUNCE and connection_id in self._connections and len(packet) >= 98:
                return self._announce(packet, ip, transaction)
            if action == SCRAPE and connection_id in self._connections:
                self.scrapes += 1
                hashes = [packet[i : i + 20] for i in range(16, len(packet) - 19, 20)]
                body = b"".join(struct.pack(">iii", *self._scrape_counts(h)) for h in hashes)
                return struct.pack(">II", SCRAPE, transaction) + body
        return struct.pack(">II", ERROR, transaction) + b"unknown connection or action"

    def _scrape_counts(self, infohash: bytes) -> tuple[int, int, int]:
        if infohash in self._counts:
            return self._counts[infohash]
        peers = self._peers.get(infohash)
        if peers:
            seeders = sum(peers.values())
            return seeders, seeders, len(peers) - seeders
        return made_up_counts(infohash)

    def _announce(self, packet: bytes, ip: str, transaction: int) -> bytes:
        infohash = packet[16:36]
        (left,) = struct.unpack_from(">Q", packet, 64)  # BEP 15: after the hash, peer id and downloaded
        (event,) = struct.unpack_from(">I", packet, 80)
        (port,) = struct.unpack_from(">H", packet, 96)
        peers = self._peers.setdefault(infohash, {})
        if event == STOPPED:
            peers.pop((ip, port), None)
        else:
            peers[(ip, port)] = left == 0
        others = [p for p in peers if p != (ip, port)][:50]
        seeders = sum(peers.values())
        header = struct.pack(">IIIII", ANNOUNCE, transaction, INTERVAL, len(peers) - seeders, seeders)
        return header + b"".join(socket.inet_aton(host) + struct.pack(">H", p) for host, p in others)
