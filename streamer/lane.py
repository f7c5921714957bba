"""Seek lanes: a direct BitTorrent connection to a peer, used only to fetch the first pieces of a seek.

Why it exists: libtorrent keeps a deep request queue on every connection (it grows to the peer's `reqq`: 2,000
blocks, 32 MiB, against a libtorrent peer) and answers a seek by cancelling it; the seek's piece then waits for
whatever the peer has already read, queued or sent (15-100 ms on loopback, measured: see the README's streamer
section), and the settings libtorrent's Python wheel offers cannot cap that queue. A second connection to the same
peer has nothing queued at it, so a piece asked for on it comes next. The lane sets TCP_NODELAY on its socket and
TCP_QUICKACK after every read: a peer without TCP_NODELAY holds a piece's last small segment until the previous
one is acknowledged, and a delayed ACK makes that 40 ms.

A lane only races libtorrent: the seek's pieces keep their deadlines in the session, and whatever comes first is
served. A lane's piece is checked against the torrent's SHA-1 piece hash before a reader sees it and is then
handed to libtorrent (`add_piece`), which stores it like a downloaded one. Anything going wrong (a peer refusing a
second connection from our address, a choke, a timeout, a bad hash) closes the lane and leaves the seek to
libtorrent; a peer that refused is not asked again for a while. An idle lane sends keep-alives while someone
watches (peers drop connections silent for two minutes), and one its peer closes after a while idle is reopened,
not taken for a refusal.

The peer wire protocol (BEP 3) spoken here is the least a downloader needs: handshake, interested, request and the
messages a peer may send back (choke, unchoke, have, bitfield, piece, keep-alive; no extensions are offered, so
no others come). No Python library keeps a maintained client of it; libtorrent's own cannot be told to open a
second connection to a peer it is connected to.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chalicelib.observability import logger as log

PROTOCOL = b"\x13BitTorrent protocol"
BLOCK = 16 * 1024
CHOKE, UNCHOKE, INTERESTED, HAVE, BITFIELD, REQUEST, PIECE = 0, 1, 2, 4, 5, 6, 7
MAX_MESSAGE = BLOCK + 64 * 1024  # a piece message is a block and its header; a bitfield of 512k pieces fits too
CONNECT_TIMEOUT = 2.0  # seconds to connect, shake hands and be unchoked
FETCH_TIMEOUT = 5.0  # seconds for the pieces of one seek (libtorrent brings them anyway)
REFUSED_FOR = 300.0  # seconds a peer that would not serve a lane is left alone
KEEPALIVE_EVERY = 60.0  # seconds an open lane stays silent before it sends a keep-alive (peers drop a connection
# silent for 2 minutes: BEP 3, and libtorrent's peer_timeout)
STEADY_AFTER = 30.0  # seconds: a lane its peer closes while idle after at least this long is replaced, not refused
QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class LaneError(Exception):
    """The lane cannot serve: the seek is left to libtorrent."""


class LaneClosed(LaneError):
    """The peer closed the lane (or reset it), or we did."""


class LaneLacks(LaneError):
    """The lane's peer does not have a piece asked for: that seek is left to libtorrent, the lane stays."""


def peer_id() -> bytes:
    return b"-PJ0100-" + os.urandom(6).hex().encode()


@dataclass(frozen=True)
class Piece:
    index: int
    length: int
    sha1: bytes


class _Incoming:
    """A piece coming in block by block. Only the blocks asked for count, each once. Blocks that come in order (as
    a peer answers a connection's requests) are hashed as they come, so that the piece's hash is ready with its
    last block rather than 0.3-0.5 ms after it, on the seek's critical path; otherwise it is hashed whole."""

    def __init__(self, piece: Piece) -> None:
        self.piece = piece
        self.data = bytearray(piece.length)
        self.missing = {begin: min(BLOCK, piece.length - begin) for begin in range(0, piece.length, BLOCK)}
        self._sha1 = hashlib.sha1()
        self._hashed = 0  # bytes from the piece's start fed to _sha1

    @property
    def complete(self) -> bool:
        return not self.missing

    def add(self, begin: int, block: memoryview) -> None:
        if self.missing.get(begin) != len(block):
            return  # not asked for, or here already: ignored (the hash would catch a mix-up anyway)
        del self.missing[begin]
        self.data[begin : begin + len(block)] = block
        if begin == self._hashed:
            self._sha1.update(block)
            self._hashed += len(block)

    def digest(self) -> bytes:
        return self._sha1.digest() if self._hashed == self.piece.length else hashlib.sha1(self.data).digest()


class PeerLane:
    """One connection to one peer, for one torrent: connected, interested and unchoked, or an error."""

    def __init__(self, endpoint: tuple[str, int], infohash: str, bind: str | None = None) -> None:
        self.endpoint = endpoint
        self.infohash = bytes.fromhex(infohash)
        self.has: set[int] | None = None  # pieces the peer announced (None: no bitfield yet)
        self.choked = True
        self.closed = False
        self._buffer = bytearray()
        self.opened_at = time.monotonic()
        self.last_sent = self.opened_at  # when a message last went to the peer (keep_alive)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        try:
            self.sock = socket.create_connection(
                endpoint, timeout=CONNECT_TIMEOUT, source_address=(bind, 0) if bind else None
            )
        except OSError as exc:
            raise LaneError(f"cannot connect to {endpoint}: {exc}") from exc
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(PROTOCOL + bytes(8) + self.infohash + peer_id())
            answer = self._exact(68, deadline)
            if answer[:20] != PROTOCOL or answer[28:48] != self.infohash:
                raise LaneError(f"{endpoint} answered with another protocol or torrent")
            self.sock.sendall(struct.pack(">IB", 1, INTERESTED))
            while self.choked:
                self._message(deadline)
        except BaseException:
            self.close()
            raise

    def fetch(self, pieces: list[Piece], deliver: Callable[[Piece, bytes], None]) -> None:
        """`request` and `receive`."""
        self.request(pieces)
        self.receive(pieces, deliver)

    def request(self, pieces: list[Piece]) -> None:
        """Ask for every block of `pieces` at once (a few hundred bytes: the send does not wait)."""
        if self.has is not None and any(p.index not in self.has for p in pieces):
            raise LaneLacks(f"{self.endpoint} does not have the pieces")
        try:
            self.sock.settimeout(CONNECT_TIMEOUT)  # (raises too once another thread closed the lane)
            self.sock.sendall(
                b"".join(
                    struct.pack(">IBIII", 13, REQUEST, p.index, begin, min(BLOCK, p.length - begin))
                    for p in pieces
                    for begin in range(0, p.length, BLOCK)
                )
            )
        except OSError as exc:
            raise LaneClosed(f"{self.endpoint}: {exc}") from exc
        self.last_sent = time.monotonic()

    def receive(self, pieces: list[Piece], deliver: Callable[[Piece, bytes], None]) -> None:
        """Hand each of the `pieces` asked for to `deliver` as soon as it is in and matches its hash (in the order
        asked: a peer answers a connection's requests in order)."""
        deadline = time.monotonic() + FETCH_TIMEOUT
        incoming = {p.index: _Incoming(p) for p in pieces}
        for piece in pieces:
            into = incoming[piece.index]
            while not into.complete:
                kind, payload = self._message(deadline)
                if kind == PIECE and len(payload) > 8:
                    index, begin = struct.unpack_from(">II", payload)
                    if index in incoming:
                        incoming[index].add(begin, memoryview(payload)[8:])
                elif kind == CHOKE:
                    raise LaneError(f"{self.endpoint} choked the lane")
            del incoming[piece.index]
            if into.digest() != piece.sha1:  # v1 piece hashes are SHA-1
                raise LaneError(f"piece {piece.index} from {self.endpoint} does not match its hash")
            deliver(piece, bytes(into.data))

    def catch_up(self) -> bool:
        """Read what the peer sent while the lane was idle (a choke, an unchoke, haves) without waiting; True if
        the lane can ask for pieces now (unchoked: a peer that chokes an idle connection ignores its requests)."""
        try:
            self.sock.settimeout(0)
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise LaneClosed(f"{self.endpoint} closed the lane")
                self._buffer += chunk
        except BlockingIOError:
            pass
        except OSError as exc:
            raise LaneClosed(f"{self.endpoint}: {exc}") from exc
        while len(self._buffer) >= 4 and len(self._buffer) >= 4 + struct.unpack_from(">I", self._buffer)[0]:
            self._message(time.monotonic() + CONNECT_TIMEOUT)  # a whole message is buffered: no wait
        return not self.choked

    def keep_alive(self, now: float | None = None) -> None:
        """Send a keep-alive if nothing went to the peer for KEEPALIVE_EVERY (a peer drops a silent connection)."""
        now = time.monotonic() if now is None else now
        if now - self.last_sent < KEEPALIVE_EVERY:
            return
        try:
            self.sock.settimeout(CONNECT_TIMEOUT)
            self.sock.sendall(bytes(4))
        except OSError as exc:
            raise LaneClosed(f"{self.endpoint}: {exc}") from exc
        self.last_sent = now

    def close(self) -> None:
        """Close the connection; a read waiting on it (another thread's) ends at once."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _message(self, deadline: float) -> tuple[int | None, bytes]:
        (length,) = struct.unpack(">I", self._exact(4, deadline))
        if length == 0:
            return None, b""  # keep-alive
        if length > MAX_MESSAGE:
            raise LaneError(f"{self.endpoint} sent a message of {length} bytes")
        body = self._exact(length, deadline)
        kind, payload = body[0], body[1:]
        if kind == UNCHOKE:
            self.choked = False
        elif kind == CHOKE:
            self.choked = True
        elif kind == BITFIELD:
            self.has = {i for i in range(len(payload) * 8) if payload[i // 8] & (0x80 >> (i % 8))}
        elif kind == HAVE and self.has is not None and len(payload) == 4:
            self.has.add(struct.unpack(">I", payload)[0])
        return kind, payload

    def _exact(self, size: int, deadline: float) -> bytes:
        """`size` bytes from the socket, read in large chunks (one read brings many blocks: fewer system calls and
        fewer turns for the GIL, which the session's other threads want too)."""
        while len(self._buffer) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LaneError(f"{self.endpoint} timed out")
            try:
                self.sock.settimeout(left)
                chunk = self.sock.recv(1 << 20)
                if chunk and QUICKACK is not None:  # Linux clears it after each ACK: ask again for the next one
                    self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            except TimeoutError as exc:
                raise LaneError(f"{self.endpoint} timed out") from exc
            except OSError as exc:
                raise LaneClosed(f"{self.endpoint}: {exc}") from exc
            if not chunk:
                raise LaneClosed(f"{self.endpoint} closed the lane")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


class SeekLanes:
    """The session's lanes: at most one per torrent, kept open between its seeks, fetched on a small pool."""

    def __init__(self, bind: str | None = None) -> None:
        self.bind = bind
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="streamer-lane")
        self._lanes: dict[str, PeerLane] = {}
        self._busy: set[str] = set()
        self._refused: dict[tuple[str, int], float] = {}
        self._closes = 0  # close() calls: a lane that connected while one came is not kept
        self._lock = threading.Lock()

    def fetch(
        self,
        infohash: str,
        peers: Callable[[], list[tuple[str, int]]],
        pieces: list[Piece],
        deliver: Callable[[Piece, bytes], None],
        done: Callable[[], None] = lambda: None,
    ) -> bool:
        """Fetch `pieces` on the torrent's lane (`peers`: endpoints that have them, best first, asked only when no
        lane is open). On an open lane the requests go out from the calling thread, at once; the rest runs on the
        pool. `done` is called once the fetch ended, however. False: a fetch of the torrent's is still running, the
        open lane's peer lacks the pieces, or the lanes are shut down; nothing started."""
        with self._lock:
            if infohash in self._busy or not pieces:
                return False
            self._busy.add(infohash)
            lane = self._lanes.get(infohash)
            closes = self._closes
        asked: PeerLane | None = None
        if lane is not None and not lane.closed:
            try:
                if lane.catch_up():
                    lane.request(pieces)
                    asked = lane
                else:  # choked while idle: _run opens another (a new connection is unchoked if the peer has room)
                    self._drop(infohash, lane)
            except LaneLacks:  # its peer lacks the seek's pieces: this seek goes without a lane, the lane stays
                with self._lock:
                    self._busy.discard(infohash)
                return False
            except LaneError as exc:  # gone stale while idle: _run opens another (unless the peer is refused)
                self._stale(infohash, lane, exc)
        return self._submit(infohash, closes, peers, pieces, deliver, done, asked)

    def busy(self, infohash: str) -> bool:
        """A fetch or an opening of the torrent's lane is running (a seek meanwhile is left to libtorrent)."""
        with self._lock:
            return infohash in self._busy

    def is_open(self, infohash: str) -> bool:
        """The torrent has a lane connected."""
        with self._lock:
            lane = self._lanes.get(infohash)
            return lane is not None and not lane.closed

    def prepare(self, infohash: str, peers: Callable[[], list[tuple[str, int]]]) -> bool:
        """Have the torrent's lane open for its next seek: open one in the background if it has none (a connection,
        a handshake and an unchoke: three round trips); keep an open one alive (a keep-alive once it has been quiet
        for KEEPALIVE_EVERY), and replace it if its peer closed it meanwhile. Called now and then while someone
        watches. False: nothing started (a lane is open and well, or a fetch runs)."""
        stale: tuple[PeerLane, LaneError] | None = None
        with self._lock:  # (a look that does not wait: a seek's fetch is held up by microseconds, never turned away)
            if infohash in self._busy:
                return False
            lane = self._lanes.get(infohash)
            if lane is not None and not lane.closed:
                try:
                    lane.catch_up()  # (one choked meanwhile is kept: a seek replaces it; no churn of connections)
                    lane.keep_alive()
                    return False
                except LaneError as exc:
                    stale = (lane, exc)
            self._busy.add(infohash)
            closes = self._closes
        if stale is not None:
            self._stale(infohash, *stale)
        return self._submit(infohash, closes, peers, [], lambda piece, data: None, lambda: None, None)

    def close(self, infohash: str | None = None) -> None:
        """Close the torrent's lane (None: every lane). A lane being opened meanwhile is closed once it connects,
        never kept (the VPN gate closed, or the torrent left the session; another torrent's opening that a close
        came across is just tried again at its next prepare or seek)."""
        with self._lock:
            self._closes += 1
            if infohash is None:
                lanes, self._lanes = list(self._lanes.values()), {}
            else:
                lanes = [lane for lane in [self._lanes.pop(infohash, None)] if lane is not None]
        for lane in lanes:
            lane.close()

    def shutdown(self) -> None:
        """Close every lane and wait for what runs on the pool (a read on a closed lane ends at once; a connection
        being opened within CONNECT_TIMEOUT): nothing may touch a torrent handle once the session is gone."""
        self.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, infohash: str, *args: Any) -> bool:
        """Run `_run` on the pool (`args`: its own after the infohash); False once the pool is shut down (the
        session is stopping)."""
        try:
            self._pool.submit(self._run, infohash, *args)
        except RuntimeError:
            with self._lock:
                self._busy.discard(infohash)
            return False
        return True

    def _run(
        self,
        infohash: str,
        closes: int,
        peers: Callable[[], list[tuple[str, int]]],
        pieces: list[Piece],
        deliver: Callable[[Piece, bytes], None],
        done: Callable[[], None],
        asked: PeerLane | None,
    ) -> None:
        """A fetch (`asked`: a lane its requests went out on already), or with no pieces an opening (`closes`: the
        close() count when it was asked for)."""
        lane = asked
        try:
            if lane is None:
                lane = self._lane(infohash, closes, peers)
                if lane is None or not pieces:
                    return
                lane.request(pieces)
            lane.receive(pieces, deliver)
        except LaneLacks:
            pass  # its peer lacks the seek's pieces: the seek is libtorrent's, the lane stays for the next one
        except LaneError as exc:
            if lane is not None:
                self._failed(infohash, lane, exc)
        except Exception:
            log.exception("seek lane of %s", infohash)
        finally:
            with self._lock:
                self._busy.discard(infohash)
            done()

    def _failed(self, infohash: str, lane: PeerLane, exc: LaneError) -> None:
        """The lane is closed, and its peer left alone for a while, unless we closed it (close(): the VPN gate
        closed, the torrent left) and that is what failed: not the peer's doing."""
        ours = lane.closed
        self._drop(infohash, lane)
        if not ours:
            self._refuse(infohash, lane.endpoint, exc)

    def _stale(self, infohash: str, lane: PeerLane, exc: LaneError) -> None:
        """The lane failed while it was idle. A peer drops connections it finds idle (a player paused for minutes
        sends no keep-alives), so a lane its peer closed after it had been open a while is only closed here; one
        closed soon after it opened marks a peer that will not keep one, and anything else a peer that misbehaves:
        both are closed and their peer left alone, like a refusal."""
        if isinstance(exc, LaneClosed) and time.monotonic() - lane.opened_at >= STEADY_AFTER:
            log.debug("seek lane of %s: %s; opening another", infohash, exc)
            self._drop(infohash, lane)
        else:
            self._failed(infohash, lane, exc)

    def _refuse(self, infohash: str, endpoint: tuple[str, int], exc: LaneError) -> None:
        log.debug("seek lane of %s: %s", infohash, exc)
        with self._lock:
            self._refused[endpoint] = time.monotonic()

    def _drop(self, infohash: str, lane: PeerLane) -> None:
        lane.close()
        with self._lock:
            if self._lanes.get(infohash) is lane:
                del self._lanes[infohash]

    def _lane(self, infohash: str, closes: int, peers: Callable[[], list[tuple[str, int]]]) -> PeerLane | None:
        """The torrent's open lane, or a new one to the first of `peers` that serves one (none if close() came
        since the fetch or opening was asked for)."""
        with self._lock:
            lane = self._lanes.get(infohash)
        if lane is not None and not lane.closed:
            return lane
        now = time.monotonic()
        with self._lock:
            self._refused = {e: at for e, at in self._refused.items() if now - at < REFUSED_FOR}
            refused = set(self._refused)
        for endpoint in peers():
            if endpoint in refused:
                continue
            try:
                lane = PeerLane(endpoint, infohash, self.bind)
            except LaneError as exc:
                self._refuse(infohash, endpoint, exc)
                continue
            with self._lock:
                closed = self._closes != closes  # close() came since it was asked for: not kept
                old = None if closed else self._lanes.get(infohash)
                if not closed:
                    self._lanes[infohash] = lane
            if closed:
                lane.close()
                return None
            if old is not None:
                old.close()
            return lane
        return None
