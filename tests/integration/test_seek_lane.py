"""Seek lanes (streamer/lane.py): a second connection to a real seeder (aria2c) that fetches a seek's first piece,
checked against its hash; and peers that misbehave (hang up, choke, send the wrong bytes), which must leave the
seek to libtorrent with nothing wrong served."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infra.local.media import SampleSeeder
from streamer import lane as lanes
from streamer.lane import LaneError, PeerLane, Piece, SeekLanes
from streamer.server import Streamer
from streamer.session import TorrentSource
from tests.integration.streamer_fixtures import MIB, Media, make_media_seeded, make_streamer, stream_platform, tracker
from tests.integration.tracker_fixtures import wait_until

__all__ = ["make_media_seeded", "make_streamer", "stream_platform", "tracker"]

TIMEOUT = 60


def pieces_of(media: Media) -> tuple[int, list[bytes]]:
    """The torrent's piece length and its v1 piece hashes."""
    import libtorrent as lt

    ti = lt.torrent_info(str(media.torrent))
    return ti.piece_length(), [bytes(ti.hash_for_piece(i)) for i in range(ti.num_pieces())]


def serves(endpoint: tuple[str, int], infohash: str) -> bool:
    """A lane to `endpoint` opens (a libtorrent seeder resets connections for a moment after it started)."""
    try:
        PeerLane(endpoint, infohash).close()
    except LaneError:
        return False
    return True


def piece(media: Media, index: int) -> Piece:
    length, hashes = pieces_of(media)
    return Piece(index, min(length, media.size - index * length), hashes[index])


class FakePeer:
    """A peer on 127.0.0.1 that shakes hands and unchokes, then does `behaviour` with the requests it gets:
    "hang up" (closes at once, before the handshake), "choke" (chokes instead of answering), "garbage" (answers
    every request with random bytes), "chokes when idle" (chokes a connection 0.2 s after unchoking it, ignores
    what it asks for then, and serves the media's bytes to a new one), "closes when idle" (closes a connection
    0.2 s after unchoking it, and serves the media's bytes to a new one), "in reverse" (serves the media's bytes,
    each piece's blocks last first), "twice" (serves each block asked for, then the same block again with other
    bytes), "slow handshake" (answers the handshake after 0.5 s, then like "garbage"), "silent" (never answers a
    request), "piece 0 only" (announces only piece 0 and serves the media's bytes)."""

    def __init__(self, infohash: str, behaviour: str, media: Media | None = None) -> None:
        self.infohash = bytes.fromhex(infohash)
        self.behaviour = behaviour
        self.media = media  # "chokes when idle" serves its bytes
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = ("127.0.0.1", self.server.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._peer, args=(conn,), daemon=True).start()

    def _peer(self, conn: socket.socket) -> None:
        with conn:
            if self.behaviour == "hang up":
                return
            try:
                conn.recv(68)
                if self.behaviour == "slow handshake":
                    time.sleep(0.5)
                conn.sendall(lanes.PROTOCOL + bytes(8) + self.infohash + b"-FK0001-" + os.urandom(6).hex().encode())
                if self.behaviour == "piece 0 only":
                    conn.sendall(struct.pack(">IB", 2, lanes.BITFIELD) + b"\x80")
                conn.sendall(struct.pack(">IB", 1, lanes.UNCHOKE))
                if self.behaviour == "chokes when idle" and self.connections == 1:
                    threading.Timer(0.2, conn.sendall, [struct.pack(">IB", 1, lanes.CHOKE)]).start()
                if self.behaviour == "closes when idle" and self.connections == 1:
                    threading.Timer(0.2, conn.shutdown, [socket.SHUT_RDWR]).start()
                reader = conn.makefile("rb")
                asked: dict[int, list[tuple[int, int]]] = {}
                while True:
                    (length,) = struct.unpack(">I", reader.read(4))
                    body = reader.read(length)
                    if length and body[0] == lanes.REQUEST:
                        index, begin, size = struct.unpack(">III", body[1:13])
                        if self.behaviour in ("in reverse", "twice") and self.media is not None:
                            length_ = pieces_of(self.media)[0]
                            at = index * length_
                            blocks = asked.setdefault(index, [])
                            blocks.append((begin, size))
                            if sum(n for _, n in blocks) < min(length_, self.media.size - at):
                                continue  # (answered once the whole piece is asked for)
                            for begin_, size_ in reversed(blocks) if self.behaviour == "in reverse" else blocks:
                                block = self.media.read(at + begin_, at + begin_ + size_)
                                conn.sendall(struct.pack(">IBII", 9 + size_, lanes.PIECE, index, begin_) + block)
                                if self.behaviour == "twice":
                                    other = os.urandom(size_)
                                    conn.sendall(struct.pack(">IBII", 9 + size_, lanes.PIECE, index, begin_) + other)
                            del asked[index]
                        elif self.behaviour == "choke":
                            conn.sendall(struct.pack(">IB", 1, lanes.CHOKE))
                        elif self.behaviour == "silent":
                            pass
                        elif self.behaviour == "piece 0 only" and self.media is not None:
                            length_ = pieces_of(self.media)[0]
                            block = self.media.read(index * length_ + begin, index * length_ + begin + size)
                            conn.sendall(struct.pack(">IBII", 9 + size, lanes.PIECE, index, begin) + block)
                        elif self.behaviour in ("chokes when idle", "closes when idle"):
                            if self.connections > 1 and self.media is not None:
                                length_ = pieces_of(self.media)[0]
                                block = self.media.read(index * length_ + begin, index * length_ + begin + size)
                                conn.sendall(struct.pack(">IBII", 9 + size, lanes.PIECE, index, begin) + block)
                        else:
                            block = os.urandom(size)
                            conn.sendall(struct.pack(">IBII", 9 + size, lanes.PIECE, index, begin) + block)
            except (OSError, struct.error):
                return

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake_peer() -> Iterator[Callable[..., FakePeer]]:
    made: list[FakePeer] = []

    def make(infohash: str, behaviour: str, media: Media | None = None) -> FakePeer:
        made.append(FakePeer(infohash, behaviour, media))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def test_a_lane_fetches_a_piece_from_a_real_seeder_and_checks_its_hash(make_media_seeded: Callable[..., Media]) -> None:
    media = make_media_seeded(8 * MIB)
    endpoint = ("127.0.0.1", media.seeders[0].port)
    length, _ = pieces_of(media)
    lane = PeerLane(endpoint, media.infohash)
    try:
        got: list[tuple[int, bytes]] = []
        wanted = [piece(media, 5), piece(media, 2)]
        lane.fetch(wanted, lambda p, data: got.append((p.index, data)))
        assert got == [(5, media.read(5 * length, 6 * length)), (2, media.read(2 * length, 3 * length))]
        last = piece(media, media.size // length - (0 if media.size % length else 1))
        lane.fetch([last], lambda p, data: got.append((p.index, data)))  # a short last piece
        assert got[-1] == (last.index, media.read(last.index * length, media.size))

        # The same bytes under a hash they do not match: refused, nothing delivered.
        forged = Piece(3, length, hashlib.sha1(b"not these bytes").digest())
        with pytest.raises(LaneError, match="does not match its hash"):
            lane.fetch([forged], lambda p, data: got.append((p.index, data)))
        assert len(got) == 3
    finally:
        lane.close()


@pytest.mark.parametrize("behaviour", ["in reverse", "twice"])
def test_a_lane_checks_blocks_that_come_out_of_order_or_twice(
    make_media_seeded: Callable[..., Media], fake_peer: Callable[..., FakePeer], behaviour: str
) -> None:
    """The hash is taken as blocks come in order; blocks out of order are checked whole, and a block that comes
    again (with other bytes) is ignored: the right bytes are served, or nothing."""
    media = make_media_seeded(32 * MIB, seeded=False)
    length, _ = pieces_of(media)
    assert length >= 4 * lanes.BLOCK  # pieces of several blocks
    lane = PeerLane(fake_peer(media.infohash, behaviour, media).endpoint, media.infohash)
    try:
        got: list[tuple[int, bytes]] = []
        lane.fetch([piece(media, 3), piece(media, 1)], lambda p, data: got.append((p.index, data)))
        assert got == [(3, media.read(3 * length, 4 * length)), (1, media.read(length, 2 * length))]
        forged = Piece(2, length, hashlib.sha1(media.read(2 * length, 3 * length - 1) + b"?").digest())
        with pytest.raises(LaneError, match="does not match its hash"):  # one byte off, in either order
            lane.fetch([forged], lambda p, data: got.append((p.index, data)))
        assert len(got) == 2
    finally:
        lane.close()


def test_a_lane_needs_the_same_torrent_and_a_peer_that_answers(
    make_media_seeded: Callable[..., Media], fake_peer: Callable[..., FakePeer]
) -> None:
    media = make_media_seeded(4 * MIB)
    with pytest.raises(LaneError):  # aria2c drops a handshake for a torrent it does not seed
        PeerLane(("127.0.0.1", media.seeders[0].port), "ab" * 20)
    with pytest.raises(LaneError, match=r"closed the lane|reset by peer"):  # (unread handshake: a reset)
        PeerLane(fake_peer(media.infohash, "hang up").endpoint, media.infohash)
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there any more
    with pytest.raises(LaneError, match="cannot connect"):
        PeerLane(("127.0.0.1", port), media.infohash)


@pytest.mark.parametrize("behaviour", ["choke", "garbage", "hang up"])
def test_a_peer_that_fails_a_lane_gets_nothing_served_and_is_left_alone(
    make_media_seeded: Callable[..., Media], fake_peer: Callable[..., FakePeer], behaviour: str
) -> None:
    media = make_media_seeded(4 * MIB, seeded=False)
    bad = fake_peer(media.infohash, behaviour)
    pool = SeekLanes()
    events: list[Any] = []
    finished = threading.Event()
    try:

        def fetch() -> bool:
            finished.clear()
            return pool.fetch(
                media.infohash,
                lambda: [bad.endpoint],
                [piece(media, 1)],
                lambda p, data: events.append(("delivered", p.index)),
                finished.set,
            )

        assert fetch()
        assert finished.wait(10)
        assert events == []
        assert bad.connections == 1
        assert fetch() and finished.wait(10)  # the peer is not asked again for a while
        assert bad.connections == 1 and ("delivered", 1) not in events
    finally:
        pool.shutdown()


def settled(pool: SeekLanes, infohash: str) -> bool:
    """No fetch or opening of the torrent's lane runs."""
    return not pool.busy(infohash)


def test_a_lane_that_connects_after_the_lanes_were_closed_is_not_kept(
    make_media_seeded: Callable[..., Media], fake_peer: Callable[..., FakePeer]
) -> None:
    """The VPN gate closing (or the torrent leaving) closes the lanes while one is still being opened: that one is
    closed once it connects, not kept open past the gate; and its peer did nothing wrong, so it is asked again."""
    media = make_media_seeded(4 * MIB, seeded=False)
    peer = fake_peer(media.infohash, "slow handshake")
    pool = SeekLanes()
    try:
        assert pool.prepare(media.infohash, lambda: [peer.endpoint])
        wait_until(lambda: peer.connections == 1, 10, "the lane to connect")
        pool.close()  # while it waits for the handshake
        wait_until(lambda: settled(pool, media.infohash), 10, "the opening to end")
        assert not pool.is_open(media.infohash)
        assert pool.prepare(media.infohash, lambda: [peer.endpoint])  # the gate open again: a lane opens
        wait_until(lambda: pool.is_open(media.infohash), 10, "a new lane")
        assert peer.connections == 2
    finally:
        pool.shutdown()


def test_closing_the_lanes_in_the_middle_of_a_seek_leaves_the_peer_usable(
    make_media_seeded: Callable[..., Media], fake_peer: Callable[..., FakePeer]
) -> None:
    """A close while a fetch waits for its blocks, or while a seek takes up the idle lane (another thread's close
    landing between its look and its first read), ends that fetch quietly: nothing escapes to the seek, the torrent
    is not left busy, and the peer is not taken for one that refused."""
    media = make_media_seeded(4 * MIB, seeded=False)
    silent = fake_peer(media.infohash, "silent")
    pool = SeekLanes()
    finished = threading.Event()
    try:
        assert pool.fetch(media.infohash, lambda: [silent.endpoint], [piece(media, 1)], lambda p, d: None,
                          finished.set)  # fmt: skip
        wait_until(lambda: pool.is_open(media.infohash), 10, "the lane")
        time.sleep(0.2)  # its requests are out; the peer never answers
        pool.close()
        assert finished.wait(10)
        assert pool.prepare(media.infohash, lambda: [silent.endpoint])  # asked again, not left alone
        wait_until(lambda: pool.is_open(media.infohash) and settled(pool, media.infohash), 10, "a new lane")
        assert silent.connections == 2

        lane = pool._lanes[media.infohash]
        catch_up = lane.catch_up

        def closed_first() -> bool:  # the maintenance thread's close() right after fetch saw the lane open
            pool.close()
            return catch_up()

        lane.catch_up = closed_first  # type: ignore[method-assign]
        finished.clear()
        # (this raised OSError out of fetch before, and the torrent stayed busy for good)
        started = pool.fetch(media.infohash, lambda: [silent.endpoint], [piece(media, 1)], lambda p, d: None,
                             finished.set)  # fmt: skip
        assert started and finished.wait(10)
        assert settled(pool, media.infohash) and not pool.is_open(media.infohash)
        assert pool.prepare(media.infohash, lambda: [silent.endpoint])
        wait_until(lambda: pool.is_open(media.infohash), 10, "a lane after the race")
    finally:
        pool.shutdown()


def test_a_seek_to_a_piece_the_lanes_peer_lacks_keeps_the_lane(
    make_media_seeded: Callable[..., Media], fake_peer: Callable[..., FakePeer]
) -> None:
    """The lane opened to a peer that has the front piece; a seek to a piece it lacks is left to libtorrent, and
    the lane (and its peer) stay for the next seek."""
    media = make_media_seeded(4 * MIB, seeded=False)
    peer = fake_peer(media.infohash, "piece 0 only", media)
    pool = SeekLanes()
    got: list[tuple[int, bytes]] = []
    finished = threading.Event()
    try:
        assert pool.prepare(media.infohash, lambda: [peer.endpoint])
        wait_until(lambda: pool.is_open(media.infohash) and settled(pool, media.infohash), 10, "the lane")
        deliver = lambda p, d: got.append((p.index, d))  # noqa: E731
        assert not pool.fetch(media.infohash, lambda: [], [piece(media, 5)], deliver, finished.set)
        assert pool.is_open(media.infohash) and settled(pool, media.infohash)
        assert pool.fetch(media.infohash, lambda: [], [piece(media, 0)], deliver, finished.set)
        assert finished.wait(10)
        length, _ = pieces_of(media)
        assert got == [(0, media.read(0, length))] and peer.connections == 1
    finally:
        pool.shutdown()


def test_a_lane_choked_while_idle_is_replaced_by_a_new_one(
    make_media_seeded: Callable[..., Media], fake_peer: Callable[..., FakePeer]
) -> None:
    media = make_media_seeded(4 * MIB, seeded=False)
    peer = fake_peer(media.infohash, "chokes when idle", media)
    pool = SeekLanes()
    got: list[tuple[int, bytes]] = []
    finished = threading.Event()
    try:
        assert pool.prepare(media.infohash, lambda: [peer.endpoint])  # opened ahead of a seek
        wait_until(lambda: pool.is_open(media.infohash), 10, "the lane")
        time.sleep(0.5)  # it is choked meanwhile
        wanted = piece(media, 3)
        assert pool.fetch(media.infohash, lambda: [peer.endpoint], [wanted], lambda p, d: got.append((p.index, d)),
                          done=finished.set)  # fmt: skip
        assert finished.wait(10)
        length, _ = pieces_of(media)
        assert got == [(3, media.read(3 * length, 4 * length))]
        assert peer.connections == 2  # the choked lane was dropped, a new one asked
    finally:
        pool.shutdown()


def test_a_seek_gets_its_piece_from_the_lane_and_the_download_goes_on(
    stream_platform: Callable[..., Any],
    make_media_seeded: Callable[..., Media],
    make_streamer: Callable[..., Streamer],
) -> None:
    stream_platform()  # the emulator, for the streamer's VPN gate and Storage records
    media = make_media_seeded(64 * MIB)
    limit = 4 * MIB  # bytes per second: the seeks' pieces are neither here nor next in line (a seek's hold, so a
    # lane fetch, is for a piece more than 16 MiB past the download's front), and the limit comes back after
    streamer = make_streamer(download_limit=limit)
    torrent = streamer.session.add(TorrentSource(media.infohash, magnet=media.magnet))
    assert torrent.ready.wait(30)
    file = torrent.file()
    delivered: list[int] = []
    on_lane_piece = torrent.on_lane_piece

    def record(p: Piece, data: bytes) -> None:
        delivered.append(p.index)
        on_lane_piece(p, data)

    torrent.on_lane_piece = record  # type: ignore[method-assign]
    lanes = streamer.session.lanes
    assert lanes is not None
    player = torrent.open_reader(file, 0, seek=False)  # someone watches (no seek): the lane opens ahead of one
    wait_until(lambda: lanes.is_open(media.infohash) and not lanes.busy(media.infohash), 10, "the lane, ahead")
    assert delivered == []
    for fraction in (0.5, 0.9):
        position = int(file.size * fraction)
        assert not torrent.have[torrent.piece_at(file, position)]
        with torrent.open_reader(file, position) as reader:
            start = torrent.piece_start(file, reader.piece)
            data = reader.request(reader.piece).result(timeout=TIMEOUT)
            assert data == media.read(start, start + len(data)) and len(data) == torrent.piece_length
            wait_until(lambda r=reader: r.piece in delivered, 10, "the lane's piece")  # type: ignore[misc]
            assert torrent.handle.download_limit() == limit  # the lane leaves the download alone
            wait_until(lambda r=reader: torrent.have[r.piece], 10, "the lane's piece stored")  # type: ignore[misc]
    assert torrent.snapshot()["seek_lane_pieces"] >= 2
    player.close()
    torrent.handle.set_download_limit(0)
    wait_until(lambda: all(torrent.have), TIMEOUT, "the whole file")  # the download goes on after the seeks
    assert (
        media.sha256
        == hashlib.sha256(
            b"".join(torrent.request_piece(i).result(TIMEOUT) for i in range(torrent.num_pieces))
        ).hexdigest()
    )


def test_a_seek_whose_lane_peer_lies_gets_the_right_bytes_from_libtorrent(
    stream_platform: Callable[..., Any],
    make_media_seeded: Callable[..., Media],
    make_streamer: Callable[..., Streamer],
    fake_peer: Callable[..., FakePeer],
) -> None:
    stream_platform()
    media = make_media_seeded(64 * MIB)
    streamer = make_streamer(download_limit=4 * MIB)  # (the seek's piece is neither here nor next in line)
    torrent = streamer.session.add(TorrentSource(media.infohash, magnet=media.magnet))
    assert torrent.ready.wait(30)
    liar = fake_peer(media.infohash, "garbage")
    lanes = streamer.session.lanes
    assert lanes is not None
    wait_until(lambda: lanes.is_open(media.infohash) and not lanes.busy(media.infohash), 10, "the lane to aria2c")
    torrent._lane_peers = lambda pieces: [liar.endpoint]  # type: ignore[method-assign]
    lanes.close(media.infohash)  # (opened once the first piece came) the next one goes to the liar
    file = torrent.file()
    position = file.size * 3 // 4
    assert not torrent.have[torrent.piece_at(file, position)]
    with torrent.open_reader(file, position) as reader:
        start = torrent.piece_start(file, reader.piece)
        assert reader.request(reader.piece).result(timeout=TIMEOUT) == media.read(start, start + torrent.piece_length)
    assert liar.connections == 1  # the lane went to it, and what it sent was never served
    assert torrent.lane_pieces == 0


def test_a_lane_kept_alive_outlasts_the_peers_idle_timeout_and_one_dropped_while_idle_is_replaced(
    make_media_seeded: Callable[..., Media], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A libtorrent seeder that drops a connection silent for 2 s (peer_timeout; 120 s by default), as a peer does
    # to a lane while the player watches without seeking.
    media = make_media_seeded(4 * MIB, seeded=False)
    seeder = SampleSeeder(media.torrent.read_bytes(), media.data.parent, settings={"peer_timeout": 2}).start()
    endpoint = ("127.0.0.1", seeder.port)
    wait_until(lambda: serves(endpoint, media.infohash), 10, "the seeder to take connections")
    length, _ = pieces_of(media)
    pool = SeekLanes()
    got: list[tuple[int, bytes]] = []
    finished = threading.Event()

    def seek(index: int) -> None:
        finished.clear()
        wanted = piece(media, index)
        assert pool.fetch(media.infohash, lambda: [endpoint], [wanted], lambda p, d: got.append((p.index, d)),
                          done=finished.set)  # fmt: skip
        assert finished.wait(10)
        assert got[-1] == (index, media.read(index * length, (index + 1) * length))

    try:
        monkeypatch.setattr(lanes, "KEEPALIVE_EVERY", 0.5)
        assert pool.prepare(media.infohash, lambda: [endpoint])
        wait_until(lambda: pool.is_open(media.infohash) and not pool.busy(media.infohash), 10, "the lane")
        lane = pool._lanes[media.infohash]
        for _ in range(20):  # 5 s of watching: the streamer's tick calls prepare (every 2 s; here every 0.25 s)
            pool.prepare(media.infohash, lambda: [endpoint])
            time.sleep(0.25)
        assert pool._lanes[media.infohash] is lane and not lane.closed  # kept alive: the same connection
        seek(2)
        assert pool._lanes[media.infohash] is lane

        # Without keep-alives the seeder drops it; the next seek opens another (the peer is not refused: the
        # lane had been open a while, STEADY_AFTER) and gets its piece from it.
        monkeypatch.setattr(lanes, "KEEPALIVE_EVERY", 3600.0)
        monkeypatch.setattr(lanes, "STEADY_AFTER", 1.0)
        time.sleep(4)
        seek(3)
        assert pool._lanes[media.infohash] is not lane and lane.closed
    finally:
        pool.shutdown()
        seeder.stop()


def test_a_peer_that_closes_a_lane_soon_after_it_opened_is_left_alone(
    make_media_seeded: Callable[..., Media], fake_peer: Callable[..., FakePeer]
) -> None:
    media = make_media_seeded(4 * MIB, seeded=False)
    peer = fake_peer(media.infohash, "closes when idle", media)
    pool = SeekLanes()
    got: list[int] = []
    finished = threading.Event()
    try:
        assert pool.prepare(media.infohash, lambda: [peer.endpoint])
        wait_until(lambda: pool.is_open(media.infohash) and not pool.busy(media.infohash), 10, "the lane")
        time.sleep(0.5)  # it closes the lane meanwhile, well within STEADY_AFTER
        assert pool.fetch(media.infohash, lambda: [peer.endpoint], [piece(media, 1)], lambda p, d: got.append(p.index),
                          done=finished.set)  # fmt: skip
        assert finished.wait(10)
        assert got == [] and peer.connections == 1  # not asked again (for REFUSED_FOR): the seek is libtorrent's
    finally:
        pool.shutdown()
