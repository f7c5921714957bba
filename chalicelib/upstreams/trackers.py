"""Torrent health from trackers: seeders, leechers and completed downloads per infohash, by scraping.

Two transports, both batching many infohashes per request:

- UDP (BEP 15): a connect exchange gives a connection id, reused for up to a minute per tracker host:port
  (a thread-safe cache shared by the module's scrapers); then scrape requests of up to 74 infohashes each,
  several in flight at once on one socket (a window), matched to their answers by transaction id. A request
  without an answer is sent again after `timeout * 2**n` seconds, n = 0..max_retries (BEP 15: 15 s and 8).
- HTTP (BEP 48): the announce URL's last `announce` path segment becomes `scrape`, with several `info_hash`
  parameters per request (`http_batch_size`, default 50, keeps URLs short); the bencoded answer is decoded
  with fastbencode.

`scrape()` asks every tracker for every infohash (trackers concurrently) and merges their answers per
infohash by the maximum of each count: trackers see different parts of a swarm, and a stale or partial one
must not hide a healthy swarm. A tracker that fails does not fail the others; only when all fail is an error
raised. An infohash a tracker does not know counts as 0 everywhere.

The byte-level parts are pure functions (`parse_connect_response`, `parse_scrape_response`,
`parse_http_scrape`, ...): they return results or raise this module's TrackerError subclasses, nothing else.
"""

from __future__ import annotations

import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any, cast
from urllib.parse import quote_from_bytes, urlsplit, urlunsplit

import requests
from fastbencode import bdecode

from chalicelib.errors import UpstreamError, ValidationError

PROTOCOL_ID = 0x41727101980
ACTION_CONNECT, ACTION_ANNOUNCE, ACTION_SCRAPE, ACTION_ERROR = 0, 1, 2, 3
UDP_MAX_PER_REQUEST = 74  # BEP 15: 16 + 74 * 20 bytes keeps a scrape request within one Ethernet frame
HTTP_BATCH_SIZE = 50
CONNECTION_ID_TTL = 60.0  # BEP 15: a client may use a connection id until one minute after receiving it
BEP15_TIMEOUT = 15.0
BEP15_MAX_RETRIES = 8
MAX_MESSAGE = 200
MAX_HTTP_BODY = 1 << 20  # a scrape of 50 infohashes answers a few KB

_CONNECT_REQUEST = struct.Struct(">QII")  # protocol id, action, transaction id
_HEADER = struct.Struct(">II")  # action, transaction id
_CONNECT_RESPONSE = struct.Struct(">IIQ")  # action, transaction id, connection id
_SCRAPE_REQUEST = struct.Struct(">QII")  # connection id, action, transaction id
_SCRAPE_ENTRY = struct.Struct(">iii")  # seeders, completed, leechers
_INFOHASH = re.compile(r"[0-9a-fA-F]{40}")
_HEX = re.compile(r"[0-9a-fA-F]*")


# --- errors ---------------------------------------------------------------------------------------------


class TrackerError(UpstreamError):
    """A tracker could not be scraped. Transient unless a subclass says otherwise."""

    code = "tracker_error"


class TrackerTimeoutError(TrackerError):
    """No answer after every retransmission (UDP), or the HTTP request timed out."""

    code = "tracker_timeout"


class TrackerProtocolError(TrackerError):
    """An answer that is not what the protocol promises: short, mismatched, not bencode, a wrong shape.

    Transient: a stray or truncated packet, or a maintenance page, may well be followed by a good answer.
    """

    code = "tracker_protocol_error"


class TrackerFailureError(TrackerError):
    """The tracker answered with an error of its own (UDP action 3, HTTP `failure reason`).

    Permanent: a tracker refusing a request ("not authorized", "unregistered torrent") refuses it again.
    """

    code = "tracker_failure"
    permanent = True


class _ConnectionDropped(TrackerError):
    """Refused or reset: worth one more try at once (a busy opentracker resets some connections)."""


class ScrapeUnsupportedError(TrackerError):
    """The tracker cannot be scraped at all: no `announce` segment to turn into `scrape`, an unknown scheme."""

    code = "scrape_unsupported"
    permanent = True


class AllTrackersFailedError(TrackerError):
    """Every tracker failed; `details` maps each tracker to its error. Permanent only if every one was."""

    code = "trackers_failed"

    def __init__(self, errors: Mapping[str, TrackerError]) -> None:
        first = next(iter(errors.values()), None)
        summary = f"{len(errors)} tracker(s) failed" + (f"; first: {first.message}" if first else "")
        super().__init__(summary, details={tracker: f"{e.code}: {e.message}" for tracker, e in errors.items()})
        self.errors = dict(errors)
        self.permanent = bool(errors) and all(e.permanent for e in errors.values())


# --- results and counts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeResult:
    seeders: int
    leechers: int
    completed: int

    def merge(self, other: ScrapeResult) -> ScrapeResult:
        """The larger of each count: what the best-informed tracker knows."""
        return ScrapeResult(
            max(self.seeders, other.seeders), max(self.leechers, other.leechers), max(self.completed, other.completed)
        )


UNKNOWN = ScrapeResult(0, 0, 0)


@dataclass
class ScrapeStats:
    """Requests made. Retransmissions are counted apart from the requests they repeat."""

    udp_connects: int = 0  # connect requests, first sends only
    udp_scrapes: int = 0  # scrape requests, first sends only
    udp_retransmissions: int = 0  # repeated sends of either
    udp_stray_packets: int = 0  # answers that matched no request in flight (late duplicates, noise)
    http_scrapes: int = 0
    infohashes: int = 0  # distinct infohashes asked of trackers, summed over trackers

    @property
    def requests(self) -> int:
        """Every request first sent, over both transports (retransmissions not included)."""
        return self.udp_connects + self.udp_scrapes + self.http_scrapes

    def add(self, other: ScrapeStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# --- infohashes and URLs --------------------------------------------------------------------------------


def normalize_infohash(value: object) -> str:
    """A 40-character hex infohash, lower case. Anything else (base32, bytes, wrong length) is a ValidationError."""
    if not isinstance(value, str) or len(value) != 40 or not _INFOHASH.fullmatch(value):
        raise ValidationError(f"not a 40-character hex infohash: {str(value)[:60]!r}")
    return value.lower()


def normalize_infohashes(values: Iterable[object]) -> list[str]:
    """Validated, lower-cased and de-duplicated, in first-seen order."""
    if isinstance(values, str | bytes):
        raise ValidationError("infohashes must be a sequence of strings, not one string")
    items = list(values)
    # The common case in bulk (one regex over them all); one by one only to find the bad one.
    if all(type(v) is str for v in items) and set(map(len, cast(list[str], items))) <= {40}:
        joined = "".join(cast(list[str], items))
        if _HEX.fullmatch(joined):
            joined = joined.lower()
            return list(dict.fromkeys([joined[i : i + 40] for i in range(0, len(joined), 40)]))
    return list(dict.fromkeys(normalize_infohash(v) for v in items))


def scrape_url(announce_url: str) -> str:
    """BEP 48: the scrape URL of an HTTP tracker: the last path segment `announce...` becomes `scrape...`.

    `http://t/announce` -> `http://t/scrape`, `http://t/x/announce.php?k=1` -> `http://t/x/scrape.php?k=1`.
    A tracker whose last segment does not start with `announce` does not support scrape.
    """
    try:
        parts = urlsplit(announce_url)
    except ValueError as exc:
        raise ScrapeUnsupportedError(f"not a tracker URL: {announce_url[:100]!r}") from exc
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        raise ScrapeUnsupportedError(f"not an HTTP tracker URL: {announce_url[:100]!r}")
    head, _, last = parts.path.rpartition("/")
    if not parts.path.startswith("/") or not last.startswith("announce"):
        raise ScrapeUnsupportedError(f"{announce_url[:100]}: no 'announce' path segment, so no scrape")
    path = f"{head}/scrape{last.removeprefix('announce')}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def udp_address(tracker: str) -> tuple[str, int]:
    """(host, port) of a `udp://host:port[/announce]` tracker URL."""
    try:
        parts = urlsplit(tracker)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ScrapeUnsupportedError(f"not a UDP tracker URL: {tracker[:100]!r}") from exc
    if parts.scheme.lower() != "udp" or not host or not port:
        raise ScrapeUnsupportedError(f"not a UDP tracker URL with a host and port: {tracker[:100]!r}")
    return host, port


# --- UDP packets (pure) ---------------------------------------------------------------------------------


def build_connect_request(transaction_id: int) -> bytes:
    return _CONNECT_REQUEST.pack(PROTOCOL_ID, ACTION_CONNECT, transaction_id)


def build_scrape_request(connection_id: int, transaction_id: int, infohashes: Sequence[bytes]) -> bytes:
    payload = b"".join(infohashes)
    if not 0 < len(infohashes) <= UDP_MAX_PER_REQUEST or len(payload) != 20 * len(infohashes):
        raise ValueError(f"a UDP scrape takes 1 to {UDP_MAX_PER_REQUEST} 20-byte infohashes")
    return _SCRAPE_REQUEST.pack(connection_id, ACTION_SCRAPE, transaction_id) + payload


def peek_transaction_id(packet: bytes) -> int:
    """The transaction id of any tracker answer (it sits at bytes 4..8 of every action)."""
    if len(packet) < _HEADER.size:
        raise TrackerProtocolError(f"a {len(packet)}-byte UDP answer is shorter than any valid one")
    return int(_HEADER.unpack_from(packet)[1])


def _check_header(packet: bytes, transaction_id: int, action: int) -> None:
    if len(packet) < _HEADER.size:
        raise TrackerProtocolError(f"a {len(packet)}-byte UDP answer is shorter than any valid one")
    got_action, got_tid = _HEADER.unpack_from(packet)
    if got_tid != transaction_id:
        raise TrackerProtocolError(f"UDP answer for transaction {got_tid:#x}, expected {transaction_id:#x}")
    if got_action == ACTION_ERROR:
        message = packet[_HEADER.size :].rstrip(b"\0").decode("utf-8", "replace")[:MAX_MESSAGE]
        raise TrackerFailureError(f"tracker error: {message or '(no message)'}")
    if got_action != action:
        raise TrackerProtocolError(f"UDP answer with action {got_action}, expected {action}")


def parse_connect_response(packet: bytes, transaction_id: int) -> int:
    """The connection id of a connect answer."""
    _check_header(packet, transaction_id, ACTION_CONNECT)
    if len(packet) < _CONNECT_RESPONSE.size:
        raise TrackerProtocolError(f"a {len(packet)}-byte connect answer, expected {_CONNECT_RESPONSE.size}")
    return int(_CONNECT_RESPONSE.unpack_from(packet)[2])


def parse_scrape_response(packet: bytes, transaction_id: int, count: int) -> list[ScrapeResult]:
    """The `count` results of a scrape answer, in the order the infohashes were asked."""
    if count < 0:
        raise ValueError("count must not be negative")
    _check_header(packet, transaction_id, ACTION_SCRAPE)
    expected = _HEADER.size + _SCRAPE_ENTRY.size * count
    if len(packet) < expected:
        raise TrackerProtocolError(f"a {len(packet)}-byte scrape answer for {count} infohashes, expected {expected}")
    counts = struct.unpack_from(f">{3 * count}i", packet, _HEADER.size)
    if counts and min(counts) < 0:
        raise TrackerProtocolError("a scrape answer with a negative count")
    return [ScrapeResult(s, leech, c) for s, c, leech in zip(counts[0::3], counts[1::3], counts[2::3], strict=True)]


# --- HTTP answers (pure) --------------------------------------------------------------------------------


def _count(entry: Mapping[Any, Any], key: bytes) -> int:
    value = entry.get(key, 0)
    if type(value) is not int or value < 0:
        raise TrackerProtocolError(f"scrape answer: {key.decode()} is {type(value).__name__} {str(value)[:20]}")
    return value


def parse_http_scrape(body: bytes, infohashes: Sequence[bytes]) -> dict[bytes, ScrapeResult]:
    """Results for the asked raw infohashes from a BEP 48 answer. One the tracker left out counts as 0."""
    try:
        data = bdecode(body)
    except (ValueError, TypeError, RecursionError, OverflowError, IndexError, KeyError) as exc:
        raise TrackerProtocolError(f"scrape answer is not bencode: {str(exc)[:100]}") from exc
    if not isinstance(data, dict):
        raise TrackerProtocolError(f"scrape answer is a bencoded {type(data).__name__}, not a dictionary")
    failure = data.get(b"failure reason")
    if failure is not None:
        text = failure.decode("utf-8", "replace") if isinstance(failure, bytes) else str(failure)
        raise TrackerFailureError(f"tracker failure: {text[:MAX_MESSAGE]}")
    files = data.get(b"files")
    if not isinstance(files, dict):
        raise TrackerProtocolError("scrape answer has no 'files' dictionary")
    results: dict[bytes, ScrapeResult] = {}
    for infohash in infohashes:
        entry = files.get(infohash)
        if entry is None:
            results[infohash] = UNKNOWN
            continue
        if not isinstance(entry, dict):
            raise TrackerProtocolError(f"scrape answer: the entry of {infohash.hex()} is not a dictionary")
        results[infohash] = ScrapeResult(
            seeders=_count(entry, b"complete"),
            leechers=_count(entry, b"incomplete"),
            completed=_count(entry, b"downloaded"),
        )
    return results


# --- the UDP connection id cache ------------------------------------------------------------------------


@dataclass
class ConnectionCache:
    """BEP 15 connection ids per tracker (host, port), each used for `ttl` seconds after it was received."""

    ttl: float = CONNECTION_ID_TTL
    clock: Callable[[], float] = time.monotonic
    _ids: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, key: tuple[str, int]) -> int | None:
        with self._lock:
            entry = self._ids.get(key)
            if entry is None:
                return None
            if self.clock() - entry[1] >= self.ttl:
                del self._ids[key]
                return None
            return entry[0]

    def put(self, key: tuple[str, int], connection_id: int, received_at: float | None = None) -> None:
        with self._lock:
            self._ids[key] = (connection_id, self.clock() if received_at is None else received_at)

    def forget(self, key: tuple[str, int], connection_id: int | None = None) -> None:
        """Drop the key's id (only if it is still `connection_id`, when given)."""
        with self._lock:
            entry = self._ids.get(key)
            if entry is not None and (connection_id is None or entry[0] == connection_id):
                del self._ids[key]

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()


CONNECTIONS = ConnectionCache()


# --- the scraper ----------------------------------------------------------------------------------------


@dataclass
class _InFlight:
    packet: bytes
    on_answer: Callable[[bytes], None]
    deadline: float
    attempt: int = 0


class _UdpSession:
    """One tracker's socket: requests in flight keyed by transaction id, answered or sent again on time."""

    def __init__(self, scraper: Scraper, key: tuple[str, int], stats: ScrapeStats) -> None:
        self.scraper, self.key, self.stats = scraper, key, stats
        self.in_flight: dict[int, _InFlight] = {}
        self.buffer = bytearray(65536)
        try:
            family, kind, proto, _, address = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_DGRAM)[0]
            self.sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise TrackerError(f"udp://{key[0]}:{key[1]}: cannot resolve or open a socket: {exc}") from exc
        try:
            self.sock.connect(address)  # the kernel then drops datagrams from anyone else, and reports ICMP errors
        except OSError as exc:
            self.sock.close()
            raise TrackerError(f"udp://{key[0]}:{key[1]}: {exc}") from exc

    def close(self) -> None:
        self.sock.close()

    def _new_tid(self) -> int:
        while True:
            tid = secrets.randbits(32)
            if tid not in self.in_flight:
                return tid

    def send(self, build: Callable[[int], bytes], on_answer: Callable[[bytes], None]) -> None:
        tid = self._new_tid()
        packet = build(tid)
        self._write(packet)
        self.in_flight[tid] = _InFlight(packet, on_answer, time.monotonic() + self.scraper.timeout)

    def _write(self, packet: bytes) -> None:
        try:
            self.sock.send(packet)
        except OSError as exc:
            raise TrackerError(f"udp://{self.key[0]}:{self.key[1]}: {exc}") from exc

    def wait(self) -> None:
        """Handle one answer, or send again what timed out. TrackerTimeoutError when retries are spent."""
        now = time.monotonic()
        for item in self.in_flight.values():
            if item.deadline <= now:
                if item.attempt >= self.scraper.max_retries:
                    raise TrackerTimeoutError(
                        f"udp://{self.key[0]}:{self.key[1]}: no answer after {item.attempt + 1} sends"
                    )
                item.attempt += 1
                item.deadline = now + self.scraper.timeout * 2**item.attempt
                self.stats.udp_retransmissions += 1
                self._write(item.packet)
        self.sock.settimeout(max(0.0, min(item.deadline for item in self.in_flight.values()) - now))
        try:
            size = self.sock.recv_into(self.buffer)
        except (TimeoutError, BlockingIOError):  # a timeout of 0 makes the socket non-blocking
            return
        except OSError as exc:  # ICMP port unreachable and the like, on the connected socket
            raise TrackerError(f"udp://{self.key[0]}:{self.key[1]}: {exc}") from exc
        packet = bytes(self.buffer[:size])
        try:
            item = self.in_flight.pop(peek_transaction_id(packet))
        except (KeyError, TrackerProtocolError):
            self.stats.udp_stray_packets += 1  # a late duplicate of an answered request, or noise
            return
        item.on_answer(packet)

    def connect(self) -> int:
        """A fresh connection id (the tracker's answer to a connect request), cached."""
        assert not self.in_flight
        box: list[int] = []
        tids: list[int] = []

        def build(tid: int) -> bytes:
            tids.append(tid)
            return build_connect_request(tid)

        self.stats.udp_connects += 1
        self.send(build, lambda packet: box.append(parse_connect_response(packet, tids[0])))
        while not box:
            self.wait()
        self.scraper.connections.put(self.key, box[0])
        return box[0]

    def connection_id(self) -> int | None:
        """The cached id, or None when there is none (or it expired): connect once nothing is in flight."""
        return self.scraper.connections.get(self.key)

    def scrape(self, batches: Sequence[bytes]) -> list[list[ScrapeResult]]:
        """Results for each batch: a payload of concatenated 20-byte infohashes."""
        results: list[list[ScrapeResult] | None] = [None] * len(batches)
        pending = iter(range(len(batches)))
        next_index: int | None = next(pending, None)
        while next_index is not None or self.in_flight:
            if next_index is not None and len(self.in_flight) < self.scraper.window:
                connection_id = self.connection_id()
                if connection_id is None:
                    if self.in_flight:  # let those finish on the id they were sent with
                        self.wait()
                        continue
                    connection_id = self.connect()
                self._send_scrape(connection_id, next_index, batches[next_index], results)
                next_index = next(pending, None)
                continue
            self.wait()
        return [r for r in results if r is not None]

    def _send_scrape(
        self, connection_id: int, index: int, batch: bytes, results: list[list[ScrapeResult] | None]
    ) -> None:
        count = len(batch) // 20
        tids: list[int] = []

        def build(tid: int) -> bytes:
            tids.append(tid)
            return _SCRAPE_REQUEST.pack(connection_id, ACTION_SCRAPE, tid) + batch

        def on_answer(packet: bytes) -> None:
            try:
                results[index] = parse_scrape_response(packet, tids[0], count)
            except TrackerFailureError:
                self.scraper.connections.forget(self.key, connection_id)  # e.g. "Connection ID missmatch."
                raise

        self.stats.udp_scrapes += 1
        self.send(build, on_answer)


class Scraper:
    """Scrapes trackers; `stats` adds up the requests of every call (thread-safe).

    timeout, max_retries: BEP 15 retransmission, `timeout * 2**n` seconds for n = 0..max_retries (BEP 15's
        own values are 15 s and 8, over two hours for a dead tracker: jobs should pass smaller ones).
    window: UDP scrape requests in flight at once per tracker.
    http_timeout: (connect, read) seconds per HTTP request; http_batch_size: infohashes per HTTP scrape.
    workers: trackers scraped at once by `scrape`.
    """

    def __init__(
        self,
        *,
        timeout: float = BEP15_TIMEOUT,
        max_retries: int = BEP15_MAX_RETRIES,
        window: int = 8,
        udp_batch_size: int = UDP_MAX_PER_REQUEST,
        http_timeout: float | tuple[float, float] = (3.05, 10.0),
        http_batch_size: int = HTTP_BATCH_SIZE,
        workers: int = 8,
        connections: ConnectionCache | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if timeout <= 0 or max_retries < 0 or window < 1 or workers < 1:
            raise ValueError("timeout > 0, max_retries >= 0, window >= 1 and workers >= 1")
        if not 1 <= udp_batch_size <= UDP_MAX_PER_REQUEST or http_batch_size < 1:
            raise ValueError(f"udp_batch_size is 1..{UDP_MAX_PER_REQUEST}, http_batch_size >= 1")
        self.timeout, self.max_retries, self.window = timeout, max_retries, window
        self.udp_batch_size, self.http_batch_size, self.http_timeout = udp_batch_size, http_batch_size, http_timeout
        self.workers = workers
        self.connections = CONNECTIONS if connections is None else connections
        self.session = session or requests.Session()
        self.stats = ScrapeStats()
        self._stats_lock = threading.Lock()

    # The public calls validate every infohash before any network I/O.

    def scrape(self, trackers: Sequence[str], infohashes: Sequence[str]) -> dict[str, ScrapeResult]:
        """Every infohash (lower-case hex key) merged over the trackers that answered: the max of each count.

        Raises ValidationError for a bad infohash or no tracker, AllTrackersFailedError if no tracker answered.
        """
        outcomes = self.scrape_each(trackers, infohashes)
        merged: dict[str, ScrapeResult] = {}
        errors: dict[str, TrackerError] = {}
        for tracker, outcome in outcomes.items():
            if isinstance(outcome, TrackerError):
                errors[tracker] = outcome
                continue
            for infohash, result in outcome.items():
                merged[infohash] = merged[infohash].merge(result) if infohash in merged else result
        if errors and len(errors) == len(outcomes):
            raise AllTrackersFailedError(errors)
        return merged

    def scrape_each(
        self, trackers: Sequence[str], infohashes: Sequence[str]
    ) -> dict[str, dict[str, ScrapeResult] | TrackerError]:
        """Each tracker's own results, or the TrackerError it failed with."""
        hashes = normalize_infohashes(infohashes)
        if isinstance(trackers, str | bytes):
            raise ValidationError("trackers must be a sequence of URLs, not one string")
        urls = list(dict.fromkeys(str(t).strip() for t in trackers if isinstance(t, str) and t.strip()))
        if not urls and hashes:
            raise ValidationError("no tracker to scrape")
        if not hashes:
            return {url: {} for url in urls}
        if len(urls) == 1:
            return {urls[0]: self._outcome(urls[0], hashes)}
        with ThreadPoolExecutor(max_workers=min(self.workers, len(urls)), thread_name_prefix="scrape") as pool:
            futures = {url: pool.submit(self._outcome, url, hashes) for url in urls}
            return {url: future.result() for url, future in futures.items()}

    def scrape_tracker(self, tracker: str, infohashes: Sequence[str]) -> dict[str, ScrapeResult]:
        """One tracker's results for every infohash; raises its TrackerError."""
        hashes = normalize_infohashes(infohashes)
        stats = ScrapeStats()
        try:
            return self._scrape_one(tracker, hashes, stats) if hashes else {}
        finally:
            self._count(stats)

    def _outcome(self, tracker: str, hashes: list[str]) -> dict[str, ScrapeResult] | TrackerError:
        stats = ScrapeStats()
        try:
            return self._scrape_one(tracker, hashes, stats)
        except TrackerError as exc:
            return exc
        finally:
            self._count(stats)

    def _count(self, stats: ScrapeStats) -> None:
        with self._stats_lock:
            self.stats.add(stats)

    def _scrape_one(self, tracker: str, hashes: list[str], stats: ScrapeStats) -> dict[str, ScrapeResult]:
        stats.infohashes += len(hashes)
        raw = bytes.fromhex("".join(hashes))  # every infohash, 20 bytes each
        scheme = tracker.partition(":")[0].lower()
        if scheme == "udp":
            results = self._scrape_udp(udp_address(tracker), raw, stats)
        elif scheme in {"http", "https"}:
            results = self._scrape_http(scrape_url(tracker), raw, stats)
        else:
            raise ScrapeUnsupportedError(f"cannot scrape a {scheme or 'scheme-less'} tracker: {tracker[:100]}")
        return dict(zip(hashes, results, strict=True))

    def _scrape_udp(self, key: tuple[str, int], raw: bytes, stats: ScrapeStats) -> list[ScrapeResult]:
        step = 20 * self.udp_batch_size
        batches = [raw[start : start + step] for start in range(0, len(raw), step)]
        had_cached_id = self.connections.get(key) is not None
        session = _UdpSession(self, key, stats)
        try:
            try:
                answers = session.scrape(batches)
            except TrackerFailureError:
                if not had_cached_id:
                    raise
                # A cached id the tracker no longer takes (it restarted, or expires ids early): once more, fresh.
                session.in_flight.clear()
                answers = session.scrape(batches)
        finally:
            session.close()
        return [result for batch in answers for result in batch]

    def _scrape_http(self, url: str, raw: bytes, stats: ScrapeStats) -> list[ScrapeResult]:
        results: list[ScrapeResult] = []
        separator = "&" if "?" in url else "?"
        hashes = [raw[start : start + 20] for start in range(0, len(raw), 20)]
        for batch in _chunks(hashes, self.http_batch_size):
            query = "&".join("info_hash=" + quote_from_bytes(h, safe="") for h in batch)
            stats.http_scrapes += 1
            try:
                body = self._http_get(url + separator + query, url)
            except _ConnectionDropped:
                body = self._http_get(url + separator + query, url)  # once more: busy trackers reset some
            answer = parse_http_scrape(body, batch)
            results.extend(answer[h] for h in batch)
        return results

    def _http_get(self, full_url: str, url: str) -> bytes:
        try:
            # A fresh connection each time: trackers close kept-alive ones (opentracker answers HTTP/1.0-style),
            # and a request sent on one the tracker has just closed is reset. Scrapes are few: it costs little.
            headers = {"Connection": "close"}
            with self.session.get(full_url, timeout=self.http_timeout, stream=True, headers=headers) as response:
                status = response.status_code
                if status == 404:
                    raise ScrapeUnsupportedError(f"{url}: answered 404: no scrape here")
                if status != 200:
                    error = TrackerError(f"{url}: answered {status}")
                    error.permanent = 400 <= status < 500 and status not in {408, 429}
                    raise error
                body = bytearray()
                for chunk in response.iter_content(65536):
                    body += chunk
                    if len(body) > MAX_HTTP_BODY:
                        raise TrackerProtocolError(f"{url}: a scrape answer over {MAX_HTTP_BODY} bytes")
                return bytes(body)
        except requests.Timeout as exc:
            raise TrackerTimeoutError(f"{url}: timed out") from exc
        except requests.ConnectionError as exc:
            raise _ConnectionDropped(f"{url}: could not be reached: {type(exc).__name__}") from exc
        except requests.RequestException as exc:
            raise TrackerError(f"{url}: could not be reached: {type(exc).__name__}") from exc


def _chunks(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def scrape(
    trackers: Sequence[str], infohashes: Sequence[str], *, scraper: Scraper | None = None
) -> dict[str, ScrapeResult]:
    """Seeders, leechers and completed per infohash, merged over `trackers` (see Scraper.scrape).

    Without a `scraper`, one with BEP 15's timeouts is used: pass your own to choose timeouts and read its stats.
    """
    return (scraper or Scraper()).scrape(trackers, infohashes)
