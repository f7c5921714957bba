"""Tracker scraping against real parts: Debian's opentracker on 127.0.0.1 with aria2c seeding a real torrent,
and tiny fake UDP trackers (in this file) for what a well-behaved tracker never does: disagree, drop packets,
stay silent, answer garbage.
"""

from __future__ import annotations

import contextlib
import math
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastbencode import bencode

from chalicelib.upstreams.trackers import (
    ACTION_CONNECT,
    ACTION_ERROR,
    ACTION_SCRAPE,
    PROTOCOL_ID,
    UDP_MAX_PER_REQUEST,
    AllTrackersFailedError,
    ConnectionCache,
    Scraper,
    ScrapeResult,
    ScrapeUnsupportedError,
    TrackerError,
    TrackerFailureError,
    TrackerProtocolError,
    TrackerTimeoutError,
    scrape,
)
from tests.integration.tracker_fixtures import (
    OpenTracker,
    Seeder,
    free_port,
    make_seeder,
    opentracker,
    random_infohashes,
    seeder,
)

__all__ = ["make_seeder", "opentracker", "seeder"]  # fixtures, used by name

NOBODY = ScrapeResult(0, 0, 0)


def make_scraper(**options: object) -> Scraper:
    """Short BEP 15 timeouts (2 s, 4 s, 8 s: only a lost packet waits, and on loopback none is lost unless a fake
    tracker drops it) and a connection cache of the test's own."""
    values: dict[str, object] = {"timeout": 2.0, "max_retries": 2, "connections": ConnectionCache()}
    values.update(options)
    return Scraper(**values)  # type: ignore[arg-type]


Reply = Callable[[int, bytes, bytes | None], list[bytes]]  # (packet number, packet, normal answer) -> datagrams


class FakeUdpTracker:
    """A tiny BEP 15 tracker on 127.0.0.1 that answers every infohash with the same `counts`
    (seeders, leechers, completed). `reply` can drop, delay, garble or replace its answers."""

    connection_id = 0x1122334455667788

    def __init__(self, counts: tuple[int, int, int] = (5, 0, 0), reply: Reply | None = None) -> None:
        self.counts = counts
        self.reply = reply or (lambda n, packet, answer: [answer] if answer else [])
        self.packets: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.port}/announce"

    def actions(self) -> list[int]:
        return [struct.unpack_from(">I", p, 8)[0] for p in self.packets if len(p) >= 16]

    def answer(self, packet: bytes) -> bytes | None:
        if len(packet) < 16:
            return None
        connection_id, action, tid = struct.unpack_from(">QII", packet)
        if action == ACTION_CONNECT and connection_id == PROTOCOL_ID:
            return struct.pack(">IIQ", ACTION_CONNECT, tid, self.connection_id)
        if action == ACTION_SCRAPE and connection_id == self.connection_id:
            seeders, leechers, completed = self.counts
            n = min((len(packet) - 16) // 20, UDP_MAX_PER_REQUEST)
            return struct.pack(">II", ACTION_SCRAPE, tid) + struct.pack(">iii", seeders, completed, leechers) * n
        return struct.pack(">II", ACTION_ERROR, tid) + b"Connection ID missmatch.\0"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                packet, address = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.packets.append(packet)
            for datagram in self.reply(len(self.packets), packet, self.answer(packet)):
                self.sock.sendto(datagram, address)

    def __enter__(self) -> FakeUdpTracker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def fake_udp_tracker() -> Iterator[Callable[..., FakeUdpTracker]]:
    """`fake_udp_tracker(counts, reply)` starts a FakeUdpTracker, stopped after the test."""
    started: list[FakeUdpTracker] = []

    def start(counts: tuple[int, int, int] = (5, 0, 0), reply: Reply | None = None) -> FakeUdpTracker:
        started.append(FakeUdpTracker(counts, reply).__enter__())
        return started[-1]

    yield start
    for tracker in started:
        tracker.__exit__()


def closed_udp_url() -> str:
    return f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}/announce"


def closed_http_url() -> str:
    return f"http://127.0.0.1:{free_port()}/announce"


# --- the real tracker and a real seeder ----------------------------------------------------------------------


def test_udp_and_http_scrapes_count_the_seeder(opentracker: OpenTracker, seeder: Seeder) -> None:
    unknown = random_infohashes(1)[0]
    opentracker.whitelist(unknown)
    scraper = make_scraper()
    for url in (opentracker.udp_url, opentracker.announce_url):
        results = scraper.scrape_tracker(url, [seeder.infohash.upper(), unknown])
        assert results == {seeder.infohash: ScrapeResult(seeders=1, leechers=0, completed=0), unknown: NOBODY}, url
    stats = scraper.stats
    assert (stats.udp_connects, stats.udp_scrapes, stats.http_scrapes, stats.udp_retransmissions) == (1, 1, 1, 0)


def test_merged_scrape_over_udp_and_http_of_one_tracker(opentracker: OpenTracker, seeder: Seeder) -> None:
    scraper = make_scraper()
    results = scrape([opentracker.udp_url, opentracker.announce_url], [seeder.infohash], scraper=scraper)
    assert results == {seeder.infohash: ScrapeResult(seeders=1, leechers=0, completed=0)}  # the max, not the sum
    assert scraper.stats.requests == 3  # a connect, a UDP scrape, an HTTP scrape


def test_a_thousand_infohashes_in_fourteen_udp_scrapes(opentracker: OpenTracker, seeder: Seeder) -> None:
    hashes = random_infohashes(999)
    hashes.insert(500, seeder.infohash)  # in the middle of the 7th request
    opentracker.whitelist(hashes)
    scraper = make_scraper()
    results = scraper.scrape_tracker(opentracker.udp_url, hashes)
    assert list(results) == hashes
    assert results[seeder.infohash].seeders == 1
    assert sum(r.seeders for r in results.values()) == 1 and set(results.values()) == {NOBODY, results[hashes[500]]}
    stats = scraper.stats
    assert stats.udp_scrapes == math.ceil(1000 / 74) == 14
    assert (stats.udp_connects, stats.udp_retransmissions, stats.udp_stray_packets) == (1, 0, 0)
    scraper.scrape_tracker(opentracker.udp_url, hashes)  # the connection id is reused: no second connect
    assert (scraper.stats.udp_connects, scraper.stats.udp_scrapes) == (1, 28)


def test_http_multi_scrape_in_batches(opentracker: OpenTracker, seeder: Seeder) -> None:
    # opentracker answers at most 64 infohashes per HTTP scrape and drops the rest silently: batches of 50.
    hashes = [*random_infohashes(119), seeder.infohash]
    scraper = make_scraper()
    results = scraper.scrape_tracker(opentracker.announce_url, hashes)
    assert scraper.stats.http_scrapes == 3 and len(results) == 120
    assert results[seeder.infohash].seeders == 1 and sum(r.seeders for r in results.values()) == 1


def test_connection_ids_are_reused_for_sixty_seconds(opentracker: OpenTracker) -> None:
    now = [0.0]
    scraper = make_scraper(connections=ConnectionCache(clock=lambda: now[0]))
    hashes = random_infohashes(3)
    connects = []
    for at in (0.0, 30.0, 59.9, 60.0, 119.9, 120.0):
        now[0] = at
        scraper.scrape_tracker(opentracker.udp_url, hashes)
        connects.append(scraper.stats.udp_connects)
    assert connects == [1, 1, 1, 2, 2, 3]  # an id is used until 60 s after it was received
    assert scraper.stats.udp_scrapes == 6


def test_a_stale_connection_id_is_replaced(opentracker: OpenTracker, seeder: Seeder) -> None:
    connections = ConnectionCache()
    connections.put(("127.0.0.1", opentracker.udp_port), 0xBAD)  # say, from before the tracker restarted
    scraper = make_scraper(connections=connections)
    assert scraper.scrape_tracker(opentracker.udp_url, [seeder.infohash])[seeder.infohash].seeders == 1
    assert (scraper.stats.udp_connects, scraper.stats.udp_scrapes) == (1, 2)  # refused ("Connection ID missmatch")
    assert connections.get(("127.0.0.1", opentracker.udp_port)) not in (None, 0xBAD)


# --- merging and failing trackers ------------------------------------------------------------------------------


def test_disagreeing_trackers_merge_to_the_max_in_any_order(
    opentracker: OpenTracker, seeder: Seeder, fake_udp_tracker: Callable[..., FakeUdpTracker]
) -> None:
    more_seeders = fake_udp_tracker((5, 0, 2))
    more_leechers = fake_udp_tracker((0, 3, 0))
    real = opentracker.udp_url
    for trackers in ([real, more_seeders.url], [more_seeders.url, real], [opentracker.announce_url, more_seeders.url]):
        assert scrape(trackers, [seeder.infohash], scraper=make_scraper()) == {
            seeder.infohash: ScrapeResult(seeders=5, leechers=0, completed=2)
        }
    for trackers in ([real, more_leechers.url], [more_leechers.url, real]):
        assert scrape(trackers, [seeder.infohash], scraper=make_scraper()) == {
            seeder.infohash: ScrapeResult(seeders=1, leechers=3, completed=0)  # each count's own max
        }


def test_trackers_that_fail_do_not_fail_the_others(opentracker: OpenTracker, seeder: Seeder) -> None:
    down_udp, down_http = closed_udp_url(), closed_http_url()
    no_scrape = opentracker.announce_url.replace("/announce", "/tracker")
    trackers = [down_udp, down_http, no_scrape, opentracker.udp_url]
    scraper = make_scraper()
    started = time.monotonic()
    assert scrape(trackers, [seeder.infohash], scraper=scraper) == {seeder.infohash: ScrapeResult(1, 0, 0)}
    assert time.monotonic() - started < 5  # a closed UDP port is refused (ICMP), not waited out

    outcomes = make_scraper().scrape_each(trackers, [seeder.infohash])
    down, unsupported = [outcomes[down_udp], outcomes[down_http]], outcomes[no_scrape]
    assert all(isinstance(e, TrackerError) and not e.permanent for e in down), down
    assert isinstance(unsupported, ScrapeUnsupportedError) and unsupported.permanent
    assert outcomes[opentracker.udp_url] == {seeder.infohash: ScrapeResult(1, 0, 0)}


def test_every_tracker_failing_is_a_typed_error() -> None:
    trackers = [closed_udp_url(), closed_http_url()]
    with pytest.raises(AllTrackersFailedError) as info:
        scrape(trackers, [random_infohashes(1)[0]], scraper=make_scraper())
    assert set(info.value.errors) == set(trackers) and not info.value.permanent
    with pytest.raises(AllTrackersFailedError) as info:
        scrape(["wss://t.example/announce", "http://t.example/x"], ["ab" * 20], scraper=make_scraper())
    assert info.value.permanent  # no tracker can ever be scraped


# --- retransmission and bad answers (fake trackers) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dropped", "sent"),
    [(1, [ACTION_CONNECT, ACTION_CONNECT, ACTION_SCRAPE]), (2, [ACTION_CONNECT, ACTION_SCRAPE, ACTION_SCRAPE])],
    ids=["connect", "scrape"],
)
def test_a_dropped_packet_is_sent_again(
    dropped: int, sent: list[int], fake_udp_tracker: Callable[..., FakeUdpTracker]
) -> None:
    tracker = fake_udp_tracker((5, 1, 9), lambda n, packet, answer: [] if n == dropped or answer is None else [answer])
    scraper = make_scraper(timeout=0.5)
    started = time.monotonic()
    assert scraper.scrape_tracker(tracker.url, ["ab" * 20]) == {"ab" * 20: ScrapeResult(5, 1, 9)}
    assert 0.5 <= time.monotonic() - started < 1.5 + 1  # one base timeout (and slack for a busy machine)
    assert scraper.stats.udp_retransmissions == 1
    assert tracker.actions() == sent


def test_a_silent_tracker_times_out_after_the_retries(fake_udp_tracker: Callable[..., FakeUdpTracker]) -> None:
    tracker = fake_udp_tracker(reply=lambda n, packet, answer: [])
    scraper = make_scraper(timeout=0.2, max_retries=2)
    started = time.monotonic()
    with pytest.raises(TrackerTimeoutError) as info:
        scraper.scrape_tracker(tracker.url, ["ab" * 20])
    elapsed = time.monotonic() - started
    assert 0.2 + 0.4 + 0.8 <= elapsed < 3.5  # 0.2 s, 0.4 s, 0.8 s, with slack for a busy machine
    assert len(tracker.packets) == 3 and tracker.actions() == [ACTION_CONNECT] * 3
    assert not info.value.permanent
    with pytest.raises(AllTrackersFailedError) as failed:
        scrape([tracker.url], ["ab" * 20], scraper=make_scraper(timeout=0.1, max_retries=0))
    assert isinstance(failed.value.errors[tracker.url], TrackerTimeoutError)


def test_stray_packets_are_ignored(fake_udp_tracker: Callable[..., FakeUdpTracker]) -> None:
    def noisy(n: int, packet: bytes, answer: bytes | None) -> list[bytes]:
        assert answer is not None
        wrong_tid = answer[:4] + struct.pack(">I", struct.unpack_from(">I", answer, 4)[0] ^ 1) + answer[8:]
        return [b"\x00\x01\x02", wrong_tid, answer]

    tracker = fake_udp_tracker((2, 2, 2), noisy)
    scraper = make_scraper()
    assert scraper.scrape_tracker(tracker.url, ["ab" * 20]) == {"ab" * 20: ScrapeResult(2, 2, 2)}
    assert scraper.stats.udp_stray_packets == 4 and scraper.stats.udp_retransmissions == 0


def test_a_short_scrape_answer_is_a_protocol_error(fake_udp_tracker: Callable[..., FakeUdpTracker]) -> None:
    tracker = fake_udp_tracker(reply=lambda n, packet, answer: [answer[:-1] if n == 2 else answer] if answer else [])
    with pytest.raises(TrackerProtocolError):
        make_scraper().scrape_tracker(tracker.url, ["ab" * 20, "cd" * 20])


def test_an_error_answer_is_a_tracker_failure(fake_udp_tracker: Callable[..., FakeUdpTracker]) -> None:
    def refuse(n: int, packet: bytes, answer: bytes | None) -> list[bytes]:
        assert answer is not None
        return [answer] if n == 1 else [struct.pack(">I", ACTION_ERROR) + answer[4:8] + b"torrent banned"]

    tracker = fake_udp_tracker(reply=refuse)
    with pytest.raises(TrackerFailureError, match="torrent banned") as info:
        make_scraper().scrape_tracker(tracker.url, ["ab" * 20])
    assert info.value.permanent


def test_scrapes_are_pipelined_and_batched(fake_udp_tracker: Callable[..., FakeUdpTracker]) -> None:
    tracker = fake_udp_tracker((1, 0, 0))
    hashes = random_infohashes(74 * 10 + 1)
    random.shuffle(hashes)
    scraper = make_scraper(window=4)
    results = scraper.scrape_tracker(tracker.url, hashes)
    assert list(results) == hashes and set(results.values()) == {ScrapeResult(1, 0, 0)}
    assert scraper.stats.udp_scrapes == 11 and scraper.stats.udp_connects == 1
    sizes = [(len(p) - 16) // 20 for p in tracker.packets[1:]]
    assert sizes == [74] * 10 + [1]


# --- HTTP trackers that misbehave (a fake on http.server) ------------------------------------------------------


@pytest.fixture
def fake_http_tracker() -> Iterator[Callable[[int, bytes], tuple[str, list[str]]]]:
    """`fake_http_tracker(status, body)` -> (announce URL with a passkey, paths requested so far)."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, body: bytes, delay: float = 0.0) -> tuple[str, list[str]]:
        paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # the client may hang up first (size cap, timeout)
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/k3y/announce.php?passkey=s3cret", paths

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_http_scrape_request_shape(fake_http_tracker: Callable[..., tuple[str, list[str]]]) -> None:
    hashes = ["ab" * 20, "0f" * 20, "20" * 20]
    body = bencode({b"files": {bytes.fromhex(hashes[0]): {b"complete": 7, b"incomplete": 1, b"downloaded": 30}}})
    url, paths = fake_http_tracker(200, body)
    scraper = make_scraper(http_batch_size=2)
    expected = {hashes[0]: ScrapeResult(7, 1, 30), hashes[1]: NOBODY, hashes[2]: NOBODY}
    assert scraper.scrape_tracker(url, hashes) == expected
    assert paths == [
        "/k3y/scrape.php?passkey=s3cret&info_hash=" + "%AB" * 20 + "&info_hash=" + "%0F" * 20,
        "/k3y/scrape.php?passkey=s3cret&info_hash=" + "%20" * 20,
    ]


@pytest.mark.parametrize(
    ("status", "body", "error", "permanent"),
    [
        (200, bencode({b"failure reason": b"unregistered torrent"}), TrackerFailureError, True),
        (200, b"<html>down for maintenance</html>", TrackerProtocolError, False),
        (200, b"d5:files" + b"x" * (2 << 20), TrackerProtocolError, False),  # over the size cap
        (404, b"not found", ScrapeUnsupportedError, True),
        (503, b"busy", TrackerError, False),
        (403, b"banned client", TrackerError, True),
    ],
)
def test_http_tracker_errors_are_typed(
    status: int,
    body: bytes,
    error: type[TrackerError],
    permanent: bool,
    fake_http_tracker: Callable[..., tuple[str, list[str]]],
) -> None:
    url, _ = fake_http_tracker(status, body)
    with pytest.raises(error) as info:
        make_scraper().scrape_tracker(url, ["ab" * 20])
    assert info.value.permanent is permanent


def test_a_slow_http_tracker_times_out(fake_http_tracker: Callable[..., tuple[str, list[str]]]) -> None:
    url, _ = fake_http_tracker(200, b"d5:filesdee", delay=1.0)
    with pytest.raises(TrackerTimeoutError):
        make_scraper(http_timeout=0.3).scrape_tracker(url, ["ab" * 20])
