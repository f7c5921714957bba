"""The libtorrent session behind the stream server: torrents, readers, pieces, resume data, eviction.

One `lt.session` per process, configured from StreamerConfig. Its alerts are popped on one thread (the
"alerts" thread) and dispatched to whoever waits on them: metadata and check completion, read_piece (the
bytes readers get), piece_finished, save_resume_data, removal, errors. Everything a caller waits on is a
`concurrent.futures.Future` of its own, so a waiter that gives up (a client that disconnects) cancels only
its own future; asyncio code awaits them with `asyncio.wrap_future`.

Streaming. A torrent's chosen file (the largest video file, or the largest file; an explicit index wins) keeps
its priority and every other file gets 0. Each HTTP reader registers its position: the pieces of a window
ahead of it (the bitrate, estimated as file size / assumed duration, times the read-ahead seconds; at least a
minimum number of pieces) get `set_piece_deadline`, spaced by the time one piece plays. The piece a reader
needs now gets deadline 0 with `alert_when_available`, so libtorrent posts its bytes as a read_piece alert
the moment it has the piece (or at once if it has it already); bytes are only ever taken from read_piece
alerts, checked against the piece hash (libtorrent checked what it downloaded in this session as it came;
pieces from an earlier session are checked here), and kept in a bounded LRU cache shared by every reader. A
reader that moves or leaves gives its old window back: pieces no reader wants any more lose their deadline.
The rest of the file downloads in order (`sequential_download`, STREAMER_SEQUENTIAL), so a reader that plays
on is right behind the download's front: its reads set no deadline (see `Torrent._coming`) and wait for the
piece to finish, which keeps libtorrent out of its slower time-critical request mode.

Seeks. Meanwhile the rest of the file downloads, so the peers' request queues are full (a libtorrent peer takes
2000 requests: 32 MiB, 100-200 ms even on loopback) and a peer answers in order. A reader that opens or jumps
to a piece that is neither here nor asked for therefore holds the torrent (`Torrent._hold`): every deadline is
taken back, so that libtorrent cancels its outstanding requests when the new window's first deadline is set,
and every other piece gets priority 0 until the seek's first piece is in; then the rest downloads again. The
warm-up's start of the file holds the same way (by then the whole file has been asked for). Even so the seek's
piece often waits for what the peer had already read or sent; so a seek also asks for its first pieces on a
seek lane (streamer/lane.py: a second connection to the best peer that has them, with nothing queued on it),
and whichever brings a piece first serves it.

Housekeeping (the "maintenance" thread): a torrent nobody read for the idle time leaves the session (resume
data saved, files kept); above the disk quota the least recently watched torrents nobody is reading are
deleted with their files; the VPN gate pauses the whole session while closed; Storage records are written.
Resume data is saved on stop, on eviction and on removal (`<dir>/.resume/<infohash>.fastresume`) and used
when the torrent is added again, so nothing is downloaded twice; the torrents that were in the session at stop
are added back at start.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from chalicelib.errors import NotFoundError, ProjectionistError, ServiceUnavailableError, ValidationError
from chalicelib.observability import logger as log
from streamer.config import StreamerConfig
from streamer.lane import Piece, SeekLanes

lt: Any = importlib.import_module("libtorrent")  # typed as Any: its bindings are not checked here

T = TypeVar("T")

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".ts", ".m2ts", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv"}
)
ALERT_MASK = (
    lt.alert_category.error
    | lt.alert_category.status
    | lt.alert_category.storage
    | lt.alert_category.piece_progress
    | lt.alert_category.tracker
)
UPDATE_EVERY = 0.5  # seconds between post_torrent_updates (rates, progress, stall detection)
REREAD_AFTER = 2.0  # a read of a piece we have that has not answered by then is asked again
REANNOUNCE_AFTER = 2.0  # a reader waiting this long with no progress makes the torrent ask its trackers again
REANNOUNCE_EVERY = 5.0
PREFETCH_BYTES = 8 * 1024 * 1024
PRIORITY_DEFAULT = 4
PRIORITY_TOP = 7  # what libtorrent gives a piece with a deadline
HOLD_MAX = 2.0  # seconds a seek may hold the rest of the download back, at most
HOLD_GUARD_BYTES = 16 * 1024 * 1024  # after a seek's window, what it keeps wanting while it holds the rest back
SEQUENTIAL_LEAD_BYTES = 16 * 1024 * 1024  # how far past the sequential download's front pieces count as coming
ESCALATE_AFTER = 1.5  # seconds a read waits on the sequential download before its piece gets a deadline
READ_STEP_MS = 10  # a read's deadline: this times how many pieces ahead of its reader it is (so: in order)
LANE_PIECES = 1  # a seek's first pieces asked for on its seek lane too (more: measured slower, see the README)
LANE_PREPARE_EVERY = 2.0  # seconds between attempts to open a watched torrent's seek lane ahead of its seeks
LANE_HANDOFF = 0.002  # seconds a lane's piece waits for libtorrent after its readers got it (on_lane_piece)


class StreamerError(ProjectionistError):
    status_code = 500
    code = "streamer_error"


class MetadataTimeoutError(StreamerError):
    """The torrent's metadata did not come from peers in time."""

    status_code = 504
    code = "metadata_timeout"


class MetadataMismatchError(StreamerError):
    """What peers sent (or what was stored) is not the torrent the info-hash names."""

    status_code = 502
    code = "metadata_mismatch"


class StalledError(StreamerError):
    """A reader waited the stall timeout for a piece while nothing was downloaded."""

    status_code = 504
    code = "stalled"


class TorrentGoneError(StreamerError):
    """The torrent left the session (stop, eviction) while someone waited on it."""

    status_code = 503
    code = "torrent_removed"


def _resolve(future: Future[T], value: T) -> None:
    with contextlib.suppress(InvalidStateError):  # a waiter that gave up cancelled it
        future.set_result(value)


def _fail(future: Future[Any], exc: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(exc)


class Signal:
    """A one-shot event threads can wait on and asyncio code can await (a fresh future per waiter)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[Future[None]] = []
        self._error: BaseException | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self, error: BaseException | None = None) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._error = error
            self._event.set()
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _fail(waiter, error) if error is not None else _resolve(waiter, None)

    def future(self) -> Future[None]:
        future: Future[None] = Future()
        with self._lock:
            if not self._event.is_set():
                self._waiters = [w for w in self._waiters if not w.done()]
                self._waiters.append(future)
                return future
        _fail(future, self._error) if self._error is not None else _resolve(future, None)
        return future

    def wait(self, timeout: float | None) -> bool:
        """True once set (raising the error it was set with), False on timeout."""
        if not self._event.wait(timeout):
            return False
        if self._error is not None:
            raise self._error
        return True


@dataclass(frozen=True)
class TorrentSource:
    """What to add: a stored .torrent (preferred: no metadata round) or a magnet, for one v1 info-hash."""

    infohash: str
    magnet: str | None = None
    torrent: bytes | None = None
    name: str | None = None


@dataclass(frozen=True)
class FileInfo:
    index: int
    path: str
    size: int
    offset: int  # of its first byte in the torrent


@dataclass(frozen=True)
class TorrentMetadata:
    infohash: str
    name: str
    torrent: bytes  # a bencoded .torrent whose info dict is the one peers sent, verbatim
    files: list[dict[str, Any]]  # [{"path", "size"}]


def choose_file(files: Iterable[FileInfo]) -> FileInfo | None:
    """The largest file with a video extension, else the largest file."""
    files = list(files)
    videos = [f for f in files if Path(f.path).suffix.lower() in VIDEO_EXTENSIONS]
    return max(videos or files, key=lambda f: f.size, default=None)


def infohash_of(ti: Any) -> str:
    return str(ti.info_hashes().v1).lower()


def torrent_bytes(ti: Any, trackers: Iterable[str] = ()) -> bytes:
    """A .torrent for `ti`: libtorrent writes the info dict verbatim, so the info-hash cannot change.
    (lt.write_torrent_file_buf fails in the 2.1.1 wheel: it decodes the bencoded bytes as UTF-8.)"""
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.trackers = list(trackers)
    return bytes(lt.bencode(lt.write_torrent_file(atp)))


def file_list(ti: Any) -> list[FileInfo]:
    fs = ti.layout()
    pad = lt.file_storage.flag_pad_file
    return [
        FileInfo(i, fs.file_path(i), fs.file_size(i), fs.file_offset(i))
        for i in range(fs.num_files())
        if not fs.file_flags(i) & pad
    ]


def disk_usage(path: Path) -> int:
    """Bytes the files under `path` take on disk (allocated blocks: sparse files count what they hold)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


class PieceCache:
    """Recently read pieces, least recently used out first, bounded in bytes, shared by every torrent."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[str, int], data: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            if len(data) > self.max_bytes:
                return
            self._items[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def drop(self, infohash: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == infohash]:
                self._bytes -= len(self._items.pop(key))

    @property
    def size(self) -> int:
        return self._bytes


class Reader:
    """One HTTP response reading one file of a torrent. Its position moves its read-ahead window."""

    def __init__(self, torrent: Torrent, file: FileInfo, position: int, passive: bool = False) -> None:
        self.torrent = torrent
        self.file = file
        self.passive = passive  # a warm-up window (POST .../start), not someone reading
        self.position = position
        self.piece = torrent.piece_at(file, position)
        self.closed = False

    def locate(self, position: int) -> int:
        return self.torrent.piece_at(self.file, position)

    def seek(self, position: int) -> None:
        """Move to `position` (bytes into the file): a new piece moves the window (a jump out of it is a seek)."""
        self.position = position
        piece = self.torrent.piece_at(self.file, position)
        if piece != self.piece:
            window = self.torrent.config.window_pieces(self.file.size, self.torrent.piece_length)
            jump = not self.piece <= piece < self.piece + window
            self.piece = piece
            self.torrent.touch()
            self.torrent.update_deadlines(seek=self if jump and not self.passive else None)

    def request(self, piece: int) -> Future[bytes]:
        return self.torrent.request_piece(piece, lead=piece - self.piece)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.torrent.release(self)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Torrent:
    """A torrent in the session: its files, its readers and the pieces they wait for."""

    def __init__(self, session: TorrentSession, infohash: str, handle: Any, fetch_only: bool = False) -> None:
        self.session = session
        self.config = session.config
        self.infohash = infohash
        self.handle = handle
        self.fetch_only = fetch_only  # added only to fetch its metadata (upload mode, nothing downloaded)
        self.name: str | None = None
        self.lock = threading.RLock()
        self.metadata = Signal()  # the info dict is known
        self.ready = Signal()  # ... and the files are checked: pieces can be read
        self.removed = Signal()
        self.ti: Any = None
        self.files: list[FileInfo] = []
        self.main_file: FileInfo | None = None
        self.wanted_files: set[int] = set()
        self.piece_length = 0
        self.num_pieces = 0
        self.have = bytearray()
        self.verified = bytearray()  # pieces libtorrent hashed as they came in, in this session
        self.readers: set[Reader] = set()
        self.requests = 0  # HTTP requests that wait for this torrent (its metadata) before they read
        self.waiters: dict[int, list[Future[bytes]]] = {}
        self.pending: dict[int, float] = {}  # piece -> when its bytes were asked for
        self.awaited: set[int] = set()  # pending pieces read once they finish (no deadline: see _coming)
        self.front = 0  # the first piece of the main file not downloaded yet (where sequential download is)
        self.flowing = False  # a piece came in this session: the sequential download is under way
        self.deadlines: dict[int, int] = {}  # pieces given a deadline for the windows
        self.hold: Reader | None = None  # a seek the rest of the download waits for (see _hold)
        self.hold_until = 0.0
        self.held = -1  # the piece whose arrival ends the hold (the seek's first)
        self.lane_pieces = 0  # pieces a seek lane brought (status: seek_lane_pieces)
        self.lane_prepared = 0.0  # when its lane was last opened ahead of a seek (tick)
        self.deferred: set[int] = set()  # pieces readers wait for, asked for once the hold ends
        self.status: Any = None
        self.added_at = time.monotonic()
        self.last_watched = time.time()
        self.last_progress = time.monotonic()
        self.last_download = 0
        self.last_reannounce = 0.0
        self.last_record = 0.0
        self.error: str | None = None

    # -- metadata and files ----------------------------------------------------------------------------------
    def on_metadata(self) -> None:
        """The info dict is known (received, or given at add): files, the main file, priorities."""
        with self.lock:
            if self.metadata.is_set():
                return
            ti = self.handle.torrent_file()
            if ti is None:
                return
            self.ti = ti
            self.name = ti.name()
            self.files = file_list(ti)
            self.main_file = choose_file(self.files)
            self.piece_length = ti.piece_length()
            self.num_pieces = ti.num_pieces()
            self.have = bytearray(self.num_pieces)
            self.verified = bytearray(self.num_pieces)
            if not self.fetch_only:
                self._apply_priorities()
        self.metadata.set()

    def on_checked(self) -> None:
        self.on_metadata()
        if not self.metadata.is_set() or self.ready.is_set():  # once (the alert may follow a check at add)
            return
        with self.lock:
            if not self.fetch_only:
                self._apply_priorities()  # again, now that libtorrent has set the torrent up: see _keep_sequential
        self.refresh_pieces()
        self.ready.set()

    def refresh_pieces(self) -> None:
        pieces = self.handle.status(lt.status_flags_t.query_pieces).pieces
        with self.lock:
            for i, have in enumerate(pieces[: self.num_pieces]):
                if have:
                    self.have[i] = 1
            self._advance_front()

    def _advance_front(self) -> None:
        if self.main_file is not None:
            self.front = max(self.front, self.main_file.offset // max(1, self.piece_length))
        while self.front < self.num_pieces and self.have[self.front]:
            self.front += 1

    def _coming(self, piece: int) -> bool:
        """Whether `piece` is about to arrive anyway: sequential download is on, no seek holds the torrent, and it
        is within SEQUENTIAL_LEAD_BYTES of the download's front. A read of such a piece sets no deadline: pieces
        with deadlines are "time critical" to libtorrent, requested block by block from the peer that looks
        fastest, which costs a third of the throughput of a plain download (measured on loopback); the read
        waits for piece_finished instead, and gets a deadline only if it waits ESCALATE_AFTER (retry_reads).
        Until a first piece came in this session nothing flows yet: a plain request pipeline starts small and
        takes ~90 ms to bring a first 512 KiB piece on loopback, a deadline ~10 ms."""
        if not self.config.sequential or not self.flowing or self.hold is not None or self.have[piece]:
            return False
        return self.front <= piece < self.front + max(8, SEQUENTIAL_LEAD_BYTES // max(1, self.piece_length))

    def _apply_priorities(self) -> None:
        if self.main_file is None:
            return
        self.wanted_files.add(self.main_file.index)
        priorities = [0] * self.ti.layout().num_files()
        for index in self.wanted_files:
            priorities[index] = PRIORITY_DEFAULT
        self.handle.prioritize_files(priorities)
        self._keep_sequential()
        self._end_hold(restore=False)  # file priorities set every piece's priority afresh

    def _keep_sequential(self) -> None:
        """Download in order again after priorities changed (under the lock). libtorrent 2.1 keeps the order only
        up to where it was when pieces got priority 0 (a seek's hold) and picks the rest rarest first, in random
        order, once they are wanted again; a magnet's flag set before its files are checked is lost the same way
        (the flag still reads as set). Turning the flag off and on makes it take the whole file again (measured:
        a 200 MiB stream came in random order after its first 18 MiB, its reader waiting on pieces not there)."""
        if self.config.sequential:
            self.handle.unset_flags(lt.torrent_flags.sequential_download)
            self.handle.set_flags(lt.torrent_flags.sequential_download)

    def _prioritize_pieces(self, priorities: list[int]) -> None:
        """Every piece's priority (under the lock), the download kept in order (see _keep_sequential)."""
        self.handle.prioritize_pieces(priorities)
        self._keep_sequential()

    def promote(self) -> None:
        """A torrent added to fetch its metadata is now wanted for streaming."""
        with self.lock:
            if not self.fetch_only:
                return
            self.fetch_only = False
            self.handle.unset_flags(lt.torrent_flags.upload_mode)
            if self.config.download_limit:
                self.handle.set_download_limit(self.config.download_limit)
            if self.metadata.is_set():
                self._apply_priorities()
        self.touch()

    def file(self, index: int | None = None) -> FileInfo:
        """The file to play: `index` if given (it gets a priority), else the main file."""
        if not self.metadata.is_set():
            raise StreamerError("the torrent's metadata is not known yet")
        if index is None:
            if self.main_file is None:
                raise NotFoundError(f"torrent {self.infohash} has no file to play")
            return self.main_file
        found = next((f for f in self.files if f.index == index), None)
        if found is None:
            raise NotFoundError(f"torrent {self.infohash} has no file {index}")
        with self.lock:
            if index not in self.wanted_files:
                self.wanted_files.add(index)
                self._apply_priorities()
        return found

    def piece_at(self, file: FileInfo, position: int) -> int:
        return (file.offset + min(max(position, 0), max(file.size - 1, 0))) // self.piece_length

    def last_piece(self, file: FileInfo) -> int:
        return (file.offset + max(file.size - 1, 0)) // self.piece_length

    def piece_start(self, file: FileInfo, piece: int) -> int:
        """Where `piece` starts, in bytes into `file` (negative when the file starts inside it)."""
        return piece * self.piece_length - file.offset

    # -- readers and windows ---------------------------------------------------------------------------------
    def open_reader(self, file: FileInfo, position: int = 0, passive: bool = False, seek: bool | None = None) -> Reader:
        """A reader of `file` from `position`. `seek` (by default: unless passive): it starts where it wants to
        read now, so if its piece is neither here nor asked for, the peers are held for it (update_deadlines)."""
        reader = Reader(self, file, position, passive)
        with self.lock:
            if not passive:  # someone is watching: warm-up windows have done their job
                self.readers = {r for r in self.readers if not r.passive}
                if self.hold is not None and self.hold.passive:
                    self.hold = reader  # the warm-up's hold is the player's now (a new piece holds anew below)
            self.readers.add(reader)
        self.touch()
        self.update_deadlines(seek=reader if (not passive if seek is None else seek) else None)
        return reader

    def warm(self, file: FileInfo) -> None:
        """Get the start of `file` and its last piece (where an MP4 often keeps its index) coming: the start as a
        seek (the peers are held for it: by the time the metadata is in they have been asked for pieces all over
        the file), the end once the start is in."""
        with self.lock:
            if any(r.file == file for r in self.readers):
                return
        self.open_reader(file, 0, passive=True, seek=True)
        if file.size > self.piece_length:
            self.open_reader(file, file.size - 1, passive=True)

    def release(self, reader: Reader) -> None:
        with self.lock:
            self.readers.discard(reader)
            if self.hold is reader:
                self._end_hold()
            for piece in list(self.waiters):
                live = [f for f in self.waiters[piece] if not f.done()]
                if live:
                    self.waiters[piece] = live
                else:
                    del self.waiters[piece]
            # A piece nobody waits for any more is asked for afresh next time (its deadline may be reset below).
            self.pending = {p: at for p, at in self.pending.items() if p in self.waiters}
            self.awaited &= set(self.pending)
            self.deferred &= set(self.waiters)
        self.touch()
        self.update_deadlines()

    @property
    def reader_count(self) -> int:
        with self.lock:
            return sum(1 for r in self.readers if not r.passive)

    @property
    def in_use(self) -> bool:
        """Someone reads it or waits to: neither idle eviction nor the quota may take it."""
        return self.fetch_only or self.requests > 0 or self.reader_count > 0

    def idle_since(self, cutoff: float) -> bool:
        """Nobody uses it, and nobody has since `cutoff` (a time.time()): idle eviction may take it."""
        return not self.in_use and self.last_watched <= cutoff

    @contextlib.contextmanager
    def interest(self) -> Iterator[None]:
        """Hold the torrent in the session while a request waits for it."""
        with self.lock:
            self.requests += 1
        try:
            yield
        finally:
            with self.lock:
                self.requests -= 1
            self.touch()

    def touch(self) -> None:
        self.last_watched = time.time()
        if not self.fetch_only:
            self.session.touch(self.infohash, self.last_watched)

    def update_deadlines(self, seek: Reader | None = None) -> None:
        """Give every piece of the readers' windows a deadline, and take it back from pieces none wants.

        `seek`: a reader that just opened or jumped. If its piece is neither here nor asked for, it is a seek, and
        a seek gets the peers to itself until its first piece is in (`_hold`)."""
        with self.lock:
            if self.removed.is_set() or not self.metadata.is_set() or self.fetch_only:
                return
            held = (
                seek is not None
                and seek in self.readers
                and not self.have[seek.piece]
                and seek.piece not in self.deadlines
                and not self._coming(seek.piece)
            )
            if held:
                assert seek is not None
                self._hold(seek)
            readers = self.readers if self.hold is None else {self.hold}
            wanted: dict[int, int] = {}
            for reader in readers:
                window = self.config.window_pieces(reader.file.size, self.piece_length)
                interval = self.config.piece_interval_ms(reader.file.size, self.piece_length)
                last = min(self.last_piece(reader.file), reader.piece + window - 1)
                for k, piece in enumerate(range(reader.piece, last + 1)):
                    if not self.have[piece] and not self._coming(piece):
                        deadline = k * interval
                        wanted[piece] = min(wanted.get(piece, deadline), deadline)
            for piece in [p for p in self.deadlines if p not in wanted and p not in self.waiters]:
                del self.deadlines[piece]
                if not self.have[piece]:
                    self.handle.reset_piece_deadline(piece)
            for piece, deadline in wanted.items():
                if piece not in self.deadlines:
                    self.deadlines[piece] = deadline
                    self.handle.set_piece_deadline(piece, deadline)
            if held and self.hold is not None:
                self._hold_priorities(self.hold)

    def _window(self, reader: Reader) -> range:
        window = self.config.window_pieces(reader.file.size, self.piece_length)
        return range(reader.piece, min(self.last_piece(reader.file), reader.piece + window - 1) + 1)

    def _hold(self, reader: Reader) -> None:
        """A seek (under the lock). The peers' request queues are full of pieces for the old position (up to the
        peer's `reqq`: 2000 blocks, 32 MiB, for libtorrent), and a peer answers in order: the new piece would
        wait for all of them. libtorrent cancels what it asked its peers for (all but pieces with a deadline)
        when a torrent's first deadline is set, so every deadline is taken back, and every piece but the seeking
        reader's window gets priority 0 (`_hold_priorities`) so that nothing fills the queues again before its
        first piece is in (`_end_hold`, at the latest after HOLD_MAX). Until then only its window has deadlines,
        and what other readers wait for (their reads are cancelled with the deadlines) is asked for once it is."""
        self.handle.clear_piece_deadlines()
        self.deadlines.clear()
        for piece in self.awaited:  # the hold stops the sequential download: they are asked for once it ends
            self.pending.pop(piece, None)
        self.deferred |= self.awaited
        self.awaited.clear()
        self.hold = reader
        self.held = reader.piece
        self.hold_until = time.monotonic() + HOLD_MAX
        self._fetch_on_lane(reader)

    def _fetch_on_lane(self, reader: Reader) -> None:
        """Ask for the seek's first pieces on the torrent's seek lane too (under the lock; see streamer/lane.py).
        Only pieces with a v1 hash can be checked before libtorrent has them."""
        lanes = self.session.lanes
        if lanes is None or not self.session.network_open or not self.ti.info_hashes().has_v1():
            return
        pieces = [
            Piece(p, self.ti.piece_size(p), bytes(self.ti.hash_for_piece(p)))
            for p in list(self._window(reader))[:LANE_PIECES]
            if not self.have[p]
        ]
        indexes = [p.index for p in pieces]
        peers = lambda: self._lane_peers(indexes)  # noqa: E731
        lanes.fetch(self.infohash, peers, pieces, self.on_lane_piece)

    def _lane_peers(self, pieces: list[int]) -> list[tuple[str, int]]:
        """Endpoints for a seek lane: peers we connected to (their address is where they listen) that have
        `pieces` and speak plain BitTorrent over TCP; those that do not choke us first, then the fastest."""
        with self.lock:  # (the session is not torn down meanwhile: see TorrentSession.stop)
            if self.removed.is_set():
                return []
            connected = self.handle.get_peer_info()
        info = lt.peer_info
        peers = [
            p
            for p in connected
            if p.flags & info.outgoing_connection
            and not p.flags & (info.connecting | info.handshake)
            and p.connection_type == info.standard_bittorrent
            and not p.flags & info.i2p_socket
            and all(p.flags & info.seed or (i < len(p.pieces) and p.pieces[i]) for i in pieces)
        ]
        peers.sort(key=lambda p: (bool(p.flags & info.remote_choked), -p.payload_down_speed))
        return [(str(p.ip[0]), int(p.ip[1])) for p in peers]

    def on_lane_piece(self, piece: Piece, data: bytes) -> None:
        """A piece from the seek lane, checked against its hash: its readers get it now, and libtorrent stores it
        as if it had downloaded it (its piece_finished alert then counts it as here).

        `add_piece` holds the interpreter lock for 1-2 ms (traced in the stream benchmark, on a busy machine),
        and the readers' responses are written by the event loop, which needs that lock: called at once, it made
        the waiting player's first byte come after it. So the lane's thread first sleeps LANE_HANDOFF, which lets
        the loop write (with the lane hashing as blocks come, seek to 50%: median 9.8 -> 7.7 ms, 36 seeks each)."""
        with self.lock:
            if self.removed.is_set():
                return
            self.lane_pieces += 1
            waiters = self._serve(piece.index, data)
        for waiter in waiters:
            _resolve(waiter, data)
        if waiters:
            time.sleep(LANE_HANDOFF)
        with self.lock:
            if not self.removed.is_set() and not self.have[piece.index]:  # libtorrent ignores it if it has it
                self.handle.add_piece(piece.index, data, 0)

    def _hold_priorities(self, reader: Reader) -> None:
        """Every piece but the seeking reader's window and the next ones it misses after it gets priority 0
        (under the lock; after the window's deadlines, the first of which made libtorrent queue the
        cancellation). The next ones (HOLD_GUARD_BYTES; the lowest priority: asked for after the window) keep
        the torrent from being "finished" before the hold ends (should the rest of the window come first):
        libtorrent would tell its peers it is not interested, and a peer may then choke it for a while (aria2c:
        ~10 s). With nothing else missing there is nothing to hold back."""
        window = self._window(reader)
        first, last = self.piece_at(reader.file, 0), self.last_piece(reader.file)
        after = [*range(window.stop, last + 1), *range(first, window.start)]
        guard = [p for p in after if not self.have[p]][: max(4, HOLD_GUARD_BYTES // self.piece_length)]
        if not guard:
            return
        priorities = [0] * self.num_pieces
        for piece in guard:
            priorities[piece] = 1
        for piece in window:
            priorities[piece] = PRIORITY_TOP
        self._prioritize_pieces(priorities)
        # The hold ends with the seek's own piece (self.held), not the first of the window's: one behind it may
        # come first, and the rest of the download would then compete with the piece the player waits for.

    def _end_hold(self, restore: bool = True) -> None:
        """The seek has its first piece (or gave up; under the lock): the rest of the wanted files downloads
        again, pieces with a deadline first, and the other readers get their windows and reads back."""
        if self.hold is None:
            return
        self.hold = None
        self.held = -1
        if restore:
            self._prioritize_pieces(self._priorities())
        deferred, self.deferred = sorted(self.deferred), set()
        for piece in deferred:
            if self.waiters.get(piece) and piece not in self.pending:
                self._ask(piece, lead=piece - deferred[0])
        self.update_deadlines()

    def _priorities(self) -> list[int]:
        """Each piece's priority outside a hold: the wanted files', the top one for pieces with a deadline."""
        priorities = [0] * self.num_pieces
        for file in self.files:
            if file.index in self.wanted_files and file.size:
                first, last = file.offset // self.piece_length, (file.offset + file.size - 1) // self.piece_length
                priorities[first : last + 1] = [PRIORITY_DEFAULT] * (last - first + 1)
        for piece in self.deadlines:
            if not self.have[piece]:
                priorities[piece] = PRIORITY_TOP
        return priorities

    def tick(self, now: float) -> None:
        """The alert loop's regular look (UPDATE_EVERY): a hold past its time ends, a watched torrent's lane opens
        (or, open, is kept alive)."""
        with self.lock:
            if self.hold is not None and (now >= self.hold_until or self.have[self.held]):
                self._end_hold()
            if self.reader_count > 0 and now - self.lane_prepared >= LANE_PREPARE_EVERY:
                self._prepare_lane(now)  # someone watches: have the lane open before their first seek

    def _prepare_lane(self, now: float) -> None:
        """Have the seek lane open (under the lock): opened in the background if there is none, kept alive if there
        is one (SeekLanes.prepare); a seek then finds it open."""
        lanes = self.session.lanes
        if lanes is None or self.fetch_only or not self.ready.is_set() or not self.session.network_open:
            return
        self.lane_prepared = now
        piece = max(0, min(self.front, self.num_pieces - 1))
        lanes.prepare(self.infohash, lambda: self._lane_peers([piece]))

    # -- pieces ----------------------------------------------------------------------------------------------
    def request_piece(self, piece: int, lead: int = 0) -> Future[bytes]:
        """The bytes of `piece`, from the cache, or from libtorrent as soon as it has them."""
        future: Future[bytes] = Future()
        with self.lock:
            if self.removed.is_set():
                _fail(future, TorrentGoneError(f"torrent {self.infohash} left the session"))
                return future
            data = self.session.cache.get((self.infohash, piece))
            if data is not None:
                _resolve(future, data)
                return future
            self.waiters.setdefault(piece, []).append(future)
            if piece not in self.pending:
                self._ask(piece, lead)
        return future

    def _ask(self, piece: int, lead: int = 0) -> None:
        """Ask libtorrent for the bytes of `piece` (under the lock); during a seek's hold, once it ends. `lead`:
        how many pieces ahead of its reader it is. Its deadline grows with it, so that the pieces a reader asks
        for at once arrive in order (with equal deadlines libtorrent fetches them side by side, and the one the
        player waits for comes last as often as first)."""
        if self.hold is not None and not self.have[piece] and piece not in self._window(self.hold):
            self.deferred.add(piece)
            return
        self.pending[piece] = time.monotonic()
        if self.have[piece]:
            self.handle.read_piece(piece)
        elif self._coming(piece):  # read when it finishes (on_piece_finished), without a deadline
            self.awaited.add(piece)
        else:
            self._read_by(piece, max(0, lead) * READ_STEP_MS)

    def _read_by(self, piece: int, deadline: int) -> None:
        """A deadline for `piece` (ms from now); libtorrent posts a read_piece alert once it has it."""
        self.deadlines[piece] = deadline
        self.handle.set_piece_deadline(piece, deadline, lt.torrent_handle.alert_when_available)

    def on_piece_finished(self, piece: int) -> None:
        with self.lock:
            if piece < len(self.have):
                self.have[piece] = 1
                self.verified[piece] = 1  # the alert comes once the piece passed its hash check
                if not self.flowing:  # a peer is sending: its lane can open now, before the player's first seek
                    self._prepare_lane(time.monotonic())
                self.flowing = True
                if piece == self.front:
                    self._advance_front()
            self.deadlines.pop(piece, None)
            if piece in self.awaited:
                self.awaited.discard(piece)
                self.pending[piece] = time.monotonic()
                self.handle.read_piece(piece)
            if self.hold is not None and piece == self.held:
                self._end_hold()
        self.last_progress = time.monotonic()

    def on_read_piece(self, piece: int, data: bytes | None, error: str | None, cancelled: bool = False) -> None:
        """The bytes of `piece` (or why not). `cancelled`: its deadline was taken back (a seek cleared them all)
        before it came, so it is asked for again at once (or when the seek that cleared them has its piece)."""
        if data is not None and error is None and self.ti is not None:
            expected = self.ti.piece_size(piece)
            if len(data) != expected:
                error = f"read {len(data)} bytes of piece {piece}, expected {expected}"
            elif self.ti.info_hashes().has_v1() and not self.verified[piece]:
                # What this session downloaded libtorrent hashed as it came (hashing it again costs a third of
                # the streaming throughput); what was on disk before (resume data is trusted) is hashed here.
                digest = bytes(self.ti.hash_for_piece(piece))
                if hashlib.sha1(data).digest() != digest:  # v1 piece hashes are SHA-1
                    error = f"piece {piece} read back does not match its hash"
        with self.lock:
            self.pending.pop(piece, None)
            if error is not None or data is None:
                if self.waiters.get(piece):
                    log.debug("torrent %s piece %s: %s; asking again", self.infohash, piece, error)
                    if self.have[piece] and not cancelled:
                        self.pending[piece] = 0.0  # retry_reads asks again on its next round
                    else:
                        self._ask(piece)  # it is not downloaded yet: the deadline brings it
                return
            waiters = self._serve(piece, data)
        for waiter in waiters:
            _resolve(waiter, data)

    def _serve(self, piece: int, data: bytes) -> list[Future[bytes]]:
        """Keep `piece`'s bytes and take its waiters (under the lock, like request_piece's look into the cache, so
        that a request can miss neither); the caller resolves them outside it."""
        self.session.cache.put((self.infohash, piece), data)
        self.pending.pop(piece, None)
        self.awaited.discard(piece)
        return self.waiters.pop(piece, [])

    def retry_reads(self, now: float) -> None:
        """Reads of pieces we have that got no answer (a dropped alert, a failed read) are asked again."""
        with self.lock:
            for piece, asked in list(self.pending.items()):
                if piece in self.awaited and now - asked >= ESCALATE_AFTER and not self.have[piece]:
                    self.awaited.discard(piece)  # the sequential download is not bringing it: a deadline will
                    if self.waiters.get(piece):
                        self.pending[piece] = now
                        self._read_by(piece, 0)
                    else:
                        del self.pending[piece]
                elif now - asked >= REREAD_AFTER and self.have[piece]:
                    if self.waiters.get(piece):
                        self.pending[piece] = now
                        self.handle.read_piece(piece)
                    else:
                        del self.pending[piece]

    @property
    def waiting_since(self) -> float | None:
        with self.lock:
            asked = [self.pending[p] for p, ws in self.waiters.items() if p in self.pending and ws]
            return min(asked) if asked else None

    def on_status(self, status: Any) -> None:
        self.status = status
        checking = (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)
        if not self.ready.is_set() and status.has_metadata and status.state not in checking:
            self.on_checked()  # in case the checked alert was missed
        downloaded = int(status.total_payload_download)
        if downloaded > self.last_download:
            self.last_download = downloaded
            self.last_progress = time.monotonic()

    def on_removed(self) -> None:
        error = TorrentGoneError(f"torrent {self.infohash} left the session")
        with self.lock:
            waiters, self.waiters = self.waiters, {}
            self.readers.clear()
            self.pending.clear()
            self.awaited.clear()
            self.deferred.clear()
            self.hold = None
            self.held = -1
            self.removed.set()  # under the lock: a seek lane's thread checks it there before it uses the handle
        for futures in waiters.values():
            for future in futures:
                _fail(future, error)
        self.metadata.set(error)
        self.ready.set(error)

    # -- status ----------------------------------------------------------------------------------------------
    def contiguous_bytes(self, file: FileInfo, position: int) -> int:
        """How many bytes from `position` on are downloaded without a gap (to the end of the file)."""
        if not self.metadata.is_set() or position >= file.size:
            return 0
        with self.lock:
            piece, last = self.piece_at(file, position), self.last_piece(file)
            end = piece
            while end <= last and self.have[end]:
                end += 1
        if end > last:
            return file.size - position
        return max(0, self.piece_start(file, end) - position)

    def current_status(self) -> Any:
        if self.status is None:
            self.status = self.handle.status(0)
        return self.status

    def state(self, file: FileInfo | None = None) -> str:
        if not self.ready.is_set():
            return "metadata"
        status = self.current_status()
        file = file or self.main_file
        if status.is_seeding or (file is not None and self.contiguous_bytes(file, 0) >= file.size):
            return "seeding"
        with self.lock:
            waiting = any(ws for ws in self.waiters.values())
        return "buffering" if waiting or self.reader_count == 0 else "streaming"

    def snapshot(self, file_index: int | None = None) -> dict[str, Any]:
        status = self.current_status()
        file: FileInfo | None = None
        if self.metadata.is_set():
            with contextlib.suppress(NotFoundError):
                file = self.main_file if file_index is None else next(f for f in self.files if f.index == file_index)
        with self.lock:
            positions = [r.position for r in self.readers if not r.passive and (file is None or r.file == file)]
        buffered = 0
        if file is not None:
            buffered = min((self.contiguous_bytes(file, p) for p in positions), default=self.contiguous_bytes(file, 0))
        return {
            "infohash": self.infohash,
            "name": self.name,
            "state": self.state(file),
            "file": {"index": file.index, "path": file.path, "size": file.size} if file else None,
            "buffered_bytes": buffered,
            "progress": float(status.progress),
            "downloaded_bytes": int(status.total_wanted_done),
            "wanted_bytes": int(status.total_wanted),
            "download_rate": int(status.download_payload_rate),
            "upload_rate": int(status.upload_payload_rate),
            "peers": int(status.num_peers),
            "seeds": int(status.num_seeds),
            "readers": len(positions),
            "seek_lane_pieces": self.lane_pieces,
            "error": self.error,
        }


class TorrentSession:
    """The one libtorrent session and the torrents in it."""

    def __init__(
        self,
        config: StreamerConfig,
        *,
        gate: Any = None,
        record: Callable[[dict[str, Any], str | None], Any] | None = None,
    ) -> None:
        self.config = config
        self.gate = gate  # a VpnGate (check() -> state with .open), or None: always open
        self.record = record  # writes a Storage record from a snapshot (streamer.records.write), or None
        self.cache = PieceCache(config.piece_cache_bytes)
        self.lt: Any = None
        self.lanes: SeekLanes | None = None
        self.network_open = True
        self._torrents: dict[str, Torrent] = {}
        self._by_handle: dict[Any, Torrent] = {}
        self._lock = threading.RLock()
        self._resume_waiters: dict[str, list[Future[bool]]] = {}
        self._watched: dict[str, float] = {}  # infohash -> last watched (unix time), for the quota
        self._stop_alerts = threading.Event()
        self._stop_maintenance = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._last_update = 0.0

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self) -> TorrentSession:
        self.config.download_dir.mkdir(parents=True, exist_ok=True)
        self.config.resume_dir.mkdir(parents=True, exist_ok=True)
        settings = {**self.config.libtorrent_settings(), "alert_mask": ALERT_MASK}
        settings.setdefault("stop_tracker_timeout", 2)
        # A torrent whose wanted pieces are all in is "finished", and libtorrent then drops its connections to
        # seeds. Should a seek's hold (Torrent._hold) make it finished for a moment after all, keep them.
        settings.setdefault("close_redundant_connections", False)
        self.lt = lt.session(settings)
        if self.config.seek_lane:
            self.lanes = SeekLanes(bind=self.config.bind_address)
        self._watched = self._load_index()
        self._stop_alerts.clear()
        self._stop_maintenance.clear()
        self._spawn("alerts", self._alert_loop)
        self._check_gate()
        for infohash in self._load_active():
            try:
                self.add(TorrentSource(infohash))
            except Exception as exc:  # a damaged resume file must not keep the streamer down
                log.warning("could not add %s back from its resume data: %s", infohash, exc)
        self._spawn("maintenance", self._maintenance_loop)
        set_active_session(self)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Save every torrent's resume data, remember which were in the session, and end the session."""
        if self.lt is None:
            return
        self._join("maintenance", self._stop_maintenance)  # no eviction from now on
        torrents = [t for t in self.torrents() if not t.fetch_only]
        saves = [(t, self.save_resume(t)) for t in torrents]
        deadline = time.monotonic() + timeout
        for torrent, future in saves:
            try:
                future.result(max(0.1, deadline - time.monotonic()))
            except (FutureTimeout, Exception) as exc:
                log.warning("resume data of %s not saved: %s", torrent.infohash, exc)
        self._write_json(self.config.resume_dir / "active.json", sorted(t.infohash for t in torrents))
        self._save_index()
        for torrent in torrents:
            snapshot = self._safe_snapshot(torrent)
            if snapshot is not None:
                self._record(snapshot, "stopped")
        self._join("alerts", self._stop_alerts)
        for torrent in self.torrents():
            torrent.on_removed()
        with self._lock:
            self._torrents.clear()
            self._by_handle.clear()
        if self.lanes is not None:
            self.lanes.shutdown()
            self.lanes = None
        session, self.lt = self.lt, None
        session.pause()
        del session  # its destructor aborts the session (trackers get `stopped`, bounded by stop_tracker_timeout)
        if active_session() is self:
            set_active_session(None)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"streamer-{name}", daemon=True)
        thread.start()
        self._threads[name] = thread

    def _join(self, name: str, stop: threading.Event) -> None:
        stop.set()
        thread = self._threads.pop(name, None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=15)

    # -- torrents --------------------------------------------------------------------------------------------
    def torrents(self) -> list[Torrent]:
        with self._lock:
            return list(self._torrents.values())

    def get(self, infohash: str) -> Torrent | None:
        with self._lock:
            return self._torrents.get(infohash.lower())

    def resume_path(self, infohash: str) -> Path:
        return self.config.resume_dir / f"{infohash}.fastresume"

    def add(self, source: TorrentSource) -> Torrent:
        """Add a torrent (or return the one in the session): from its resume data if we have it, else from its
        .torrent, else from its magnet. Returns at once; wait on `.ready` for its metadata."""
        infohash = source.infohash.lower()
        with self._lock:
            existing = self._torrents.get(infohash)
            if existing is not None:
                existing.promote()
                existing.touch()
                return existing
            if not self.network_open:
                raise ServiceUnavailableError("the VPN gate is closed: no torrent starts", retry_after=30)
            params = self._params(source, infohash)
            params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused | lt.torrent_flags.upload_mode)
            if self.config.sequential:  # from the start (and again once checked: see Torrent._keep_sequential)
                params.flags |= lt.torrent_flags.sequential_download
            if self.config.download_limit:
                params.download_limit = self.config.download_limit
            if params.ti is not None and not list(params.file_priorities):  # only the main file, from the start
                main = choose_file(file_list(params.ti))
                if main is not None:
                    priorities = [0] * params.ti.layout().num_files()
                    priorities[main.index] = PRIORITY_DEFAULT
                    params.file_priorities = priorities
            torrent = self._add_params(infohash, params, fetch_only=False)
        torrent.touch()
        return torrent

    def _params(self, source: TorrentSource, infohash: str) -> Any:
        resume = self.resume_path(infohash)
        if resume.exists():
            try:
                params = lt.read_resume_data(resume.read_bytes())
                if str(params.info_hashes.v1).lower() == infohash:
                    params.save_path = str(self.config.download_dir)
                    return params
                log.warning("resume data %s names another torrent; ignored", resume)
            except Exception as exc:
                log.warning("resume data %s is unreadable (%s); ignored", resume, exc)
        ti = self._stored_torrent(source, infohash)
        if ti is not None:
            params = lt.add_torrent_params()
            params.ti = ti
            if source.magnet:  # the magnet's trackers too (a stored .torrent may name fewer)
                params.trackers = list(lt.parse_magnet_uri(source.magnet).trackers)
        elif source.magnet:
            params = lt.parse_magnet_uri(source.magnet)
            if str(params.info_hashes.v1).lower() != infohash:
                raise MetadataMismatchError(f"the magnet of {infohash} names another torrent")
        else:
            raise ValidationError(f"torrent {infohash}: neither a .torrent nor a magnet to add it from")
        params.save_path = str(self.config.download_dir)
        return params

    @staticmethod
    def _stored_torrent(source: TorrentSource, infohash: str) -> Any:
        """The stored .torrent's info, or None (then the magnet is used) if it is damaged or another's."""
        if source.torrent is None:
            return None
        try:
            ti = lt.torrent_info(source.torrent)
        except Exception as exc:
            problem = f"unreadable ({exc})"
        else:
            if infohash_of(ti) == infohash:
                return ti
            problem = f"{infohash_of(ti)}'s, not {infohash}'s"
        if not source.magnet:
            raise MetadataMismatchError(f"the stored .torrent of {infohash} is {problem}")
        log.warning("the stored .torrent of %s is %s; using the magnet", infohash, problem)
        return None

    def _add_params(self, infohash: str, params: Any, fetch_only: bool) -> Torrent:
        """Add to libtorrent and register (under the session lock)."""
        handle = self.lt.add_torrent(params)
        torrent = Torrent(self, infohash, handle, fetch_only=fetch_only)
        self._torrents[infohash] = torrent
        self._by_handle[handle] = torrent
        if handle.torrent_file() is not None:  # a .torrent or resume data: metadata known, files to check
            torrent.on_metadata()
            status = handle.status(0)
            if status.state not in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
                torrent.on_checked()
        log.info("added torrent %s%s", infohash, " (metadata only)" if fetch_only else "")
        return torrent

    def remove(
        self, infohash: str, *, delete_files: bool = False, timeout: float = 10.0, idle_since: float | None = None
    ) -> bool:
        """Take a torrent out of the session; its resume data is saved first (or deleted with its files). With
        `idle_since` (an eviction), it stays if someone asked for it after that time or while the resume data
        was saved (up to `timeout`): their stream goes on. False: not in the session, or kept."""
        torrent = self.get(infohash)
        if torrent is None:
            return False
        if not delete_files and not torrent.fetch_only and torrent.metadata.is_set():
            try:
                self.save_resume(torrent).result(timeout)
            except (FutureTimeout, Exception) as exc:
                log.warning("resume data of %s not saved before removal: %s", infohash, exc)
        if idle_since is not None:
            with torrent.lock:
                if not torrent.idle_since(idle_since):
                    log.info("torrent %s was asked for while it was leaving the session: kept", infohash)
                    return False
        snapshot = self._safe_snapshot(torrent)
        with self._lock:
            self._torrents.pop(infohash, None)
            self._by_handle.pop(torrent.handle, None)
        self.lt.remove_torrent(torrent.handle, lt.session.delete_files if delete_files else 0)
        if self.lanes is not None:
            self.lanes.close(infohash)
        torrent.on_removed()
        self.cache.drop(infohash)
        if delete_files:
            self.resume_path(infohash).unlink(missing_ok=True)
            self._watched.pop(infohash, None)
        if snapshot is not None and not torrent.fetch_only:
            self._record(snapshot, "deleted" if delete_files else "removed")
        log.info("removed torrent %s%s", infohash, " and its files" if delete_files else "")
        return True

    def touch(self, infohash: str, at: float | None = None) -> None:
        """Note that `infohash` was watched now (the quota deletes the least recently watched first)."""
        self._watched[infohash] = time.time() if at is None else at

    # -- metadata fetch --------------------------------------------------------------------------------------
    def fetch_metadata(self, magnet: str, timeout: float | None = None) -> TorrentMetadata:
        """Resolve a magnet's metadata from its peers (ut_metadata) without downloading any payload: the
        .torrent (info dict verbatim, the magnet's trackers) and its files. The info-hash of what came is
        checked against the magnet's. MetadataTimeoutError after `timeout` (the config's by default)."""
        timeout = self.config.metadata_timeout_seconds if timeout is None else timeout
        params = lt.parse_magnet_uri(magnet)
        infohash = str(params.info_hashes.v1).lower()
        trackers = list(params.trackers)
        with self._lock:
            torrent = self._torrents.get(infohash)
            if torrent is None:
                if not self.network_open:
                    raise ServiceUnavailableError("the VPN gate is closed: no torrent starts", retry_after=30)
                params.save_path = str(self.config.download_dir)
                params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
                params.flags |= lt.torrent_flags.upload_mode | lt.torrent_flags.default_dont_download
                torrent = self._add_params(infohash, params, fetch_only=True)
        try:
            try:
                received = torrent.metadata.wait(timeout)
            except TorrentGoneError:
                received = False
            if not received or torrent.ti is None:
                raise MetadataTimeoutError(f"no metadata for {infohash} from peers within {timeout:g}s")
            data = torrent_bytes(torrent.ti, trackers)
            check = lt.torrent_info(data)
            if infohash_of(check) != infohash:
                raise MetadataMismatchError(f"metadata received for {infohash} hashes to {infohash_of(check)}")
            return TorrentMetadata(
                infohash=infohash,
                name=check.name(),
                torrent=data,
                files=[{"path": f.path, "size": f.size} for f in file_list(check)],
            )
        finally:
            with self._lock:  # unless a stream wants it now (promoted), or another fetch removed it already
                if torrent.fetch_only and self._torrents.get(infohash) is torrent:
                    self.remove(infohash)

    # -- resume data -----------------------------------------------------------------------------------------
    def save_resume(self, torrent: Torrent) -> Future[bool]:
        """Ask for the torrent's resume data; the future resolves once it is written (False: nothing to save)."""
        future: Future[bool] = Future()
        if not torrent.metadata.is_set() or torrent.removed.is_set():
            _resolve(future, False)
            return future
        with self._lock:
            self._resume_waiters.setdefault(torrent.infohash, []).append(future)
        flags = lt.save_resume_flags_t.save_info_dict | lt.save_resume_flags_t.flush_disk_cache
        torrent.handle.save_resume_data(flags)
        return future

    def _resume_done(self, infohash: str, ok: bool) -> None:
        with self._lock:
            waiters = self._resume_waiters.pop(infohash, [])
        for waiter in waiters:
            _resolve(waiter, ok)

    def _write_resume(self, infohash: str, params: Any) -> None:
        data = bytes(lt.write_resume_data_buf(params))
        path = self.resume_path(infohash)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.replace(path)

    def _load_active(self) -> list[str]:
        path = self.config.resume_dir / "active.json"
        try:
            names = json.loads(path.read_text()) if path.exists() else []
        except ValueError:
            return []
        return [n for n in names if isinstance(n, str) and self.resume_path(n).exists()]

    def _load_index(self) -> dict[str, float]:
        path = self.config.resume_dir / "watched.json"
        try:
            data = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            return {}
        return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}

    def _save_index(self) -> None:
        self._write_json(self.config.resume_dir / "watched.json", dict(self._watched))

    @staticmethod
    def _write_json(path: Path, value: Any) -> None:
        with contextlib.suppress(OSError):
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(value))
            temporary.replace(path)

    # -- alerts ----------------------------------------------------------------------------------------------
    def _alert_loop(self) -> None:
        while not self._stop_alerts.is_set():
            session = self.lt
            if session is None:
                return
            try:
                session.wait_for_alert(100)
                for alert in session.pop_alerts():
                    self._dispatch(alert)
                now = time.monotonic()
                if now - self._last_update >= UPDATE_EVERY:
                    self._last_update = now
                    session.post_torrent_updates(0)  # the basic status: no piece lists
                    for torrent in self.torrents():
                        torrent.retry_reads(now)
                        torrent.tick(now)
                        self._reannounce_if_stalled(torrent, now)
            except Exception:
                log.exception("alert loop")
                time.sleep(0.1)

    def _torrent_of(self, alert: Any) -> Torrent | None:
        with self._lock:
            return self._by_handle.get(alert.handle)

    def _dispatch(self, alert: Any) -> None:
        kind = type(alert).__name__
        if kind == "read_piece_alert":
            torrent = self._torrent_of(alert)
            if torrent is not None:
                failed = alert.error.value() != 0
                data = None if failed else bytes(alert.buffer)
                cancelled = failed and alert.error.value() == errno.ECANCELED
                torrent.on_read_piece(alert.piece, data, alert.error.message() if failed else None, cancelled)
        elif kind == "piece_finished_alert":
            torrent = self._torrent_of(alert)
            if torrent is not None:
                torrent.on_piece_finished(alert.piece_index)
        elif kind == "state_update_alert":
            for status in alert.status:
                with self._lock:
                    torrent = self._by_handle.get(status.handle)
                if torrent is not None:
                    torrent.on_status(status)
        elif kind == "metadata_received_alert":
            torrent = self._torrent_of(alert)
            if torrent is not None:
                torrent.on_metadata()
        elif kind == "torrent_checked_alert":
            torrent = self._torrent_of(alert)
            if torrent is not None:
                torrent.on_checked()
        elif kind == "save_resume_data_alert":
            infohash = str(alert.params.info_hashes.v1).lower()
            try:
                self._write_resume(infohash, alert.params)
                self._resume_done(infohash, True)
            except OSError as exc:
                log.warning("could not write the resume data of %s: %s", infohash, exc)
                self._resume_done(infohash, False)
        elif kind == "save_resume_data_failed_alert":
            torrent = self._torrent_of(alert)
            if torrent is not None:
                self._resume_done(torrent.infohash, False)
        elif kind in ("torrent_error_alert", "file_error_alert", "metadata_failed_alert"):
            torrent = self._torrent_of(alert)
            if torrent is not None:
                torrent.error = alert.message()
            log.warning("%s", alert.message())
        elif kind == "alerts_dropped_alert":
            log.warning("libtorrent dropped alerts (queue full); pending reads are asked again")
        elif kind in ("tracker_error_alert", "torrent_delete_failed_alert", "listen_failed_alert"):
            log.info("%s", alert.message())

    def _reannounce_if_stalled(self, torrent: Torrent, now: float) -> None:
        """A reader waits and nothing comes: ask the trackers for peers now (a new seeder, a seeder back)."""
        since = torrent.waiting_since
        if since is None or now - max(since, torrent.last_progress) < REANNOUNCE_AFTER:
            return
        if now - torrent.last_reannounce >= REANNOUNCE_EVERY:
            torrent.last_reannounce = now
            torrent.handle.force_reannounce(0, -1, lt.torrent_handle.ignore_min_interval)
            log.info("torrent %s: readers wait with no progress; asking the trackers for peers", torrent.infohash)

    # -- housekeeping ----------------------------------------------------------------------------------------
    def _maintenance_loop(self) -> None:
        while not self._stop_maintenance.wait(self.config.maintenance_interval_seconds):
            try:
                self.maintain()
            except Exception:
                log.exception("maintenance")

    def maintain(self) -> None:
        """One round: the VPN gate, idle eviction, the disk quota, Storage records."""
        self._check_gate()
        self.evict_idle()
        self.enforce_quota()
        self.write_records()
        for torrent in self.torrents():
            if torrent.reader_count:
                self.touch(torrent.infohash)
        self._save_index()

    def _check_gate(self) -> None:
        if self.gate is None or self.lt is None:
            return
        try:
            is_open = bool(self.gate.check().open)
        except Exception as exc:  # e.g. DynamoDB unreachable while recording the state: keep the last one
            log.warning("VPN gate check failed: %s", exc)
            return
        if is_open != self.network_open:
            self.network_open = is_open
            (self.lt.resume if is_open else self.lt.pause)()
            if not is_open and self.lanes is not None:
                self.lanes.close()
            log.warning("VPN gate %s: session %s", "open" if is_open else "closed", "resumed" if is_open else "paused")

    def evict_idle(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        cutoff = now - self.config.idle_eviction_seconds
        evicted = []
        for infohash in [t.infohash for t in self.torrents() if t.idle_since(cutoff)]:
            if self.remove(infohash, idle_since=cutoff):
                minutes = self.config.idle_eviction_minutes
                log.info("torrent %s was idle for %g minutes: it left the session", infohash, minutes)
                evicted.append(infohash)
        return evicted

    def enforce_quota(self) -> list[str]:
        """Above the quota, delete the least recently watched torrents nobody reads, with their files."""
        quota = self.config.disk_quota_bytes
        if not quota:
            return []
        usage = disk_usage(self.config.download_dir)
        if usage <= quota:
            return []
        busy = {t.infohash for t in self.torrents() if t.in_use}
        known = set(self._watched) | {t.infohash for t in self.torrents()}
        known |= {p.name.removesuffix(".fastresume") for p in self.config.resume_dir.glob("*.fastresume")}
        candidates = sorted(known - busy, key=lambda h: self._watched.get(h, 0.0))
        deleted = []
        for infohash in candidates:
            if usage <= quota:
                break
            if self._delete(infohash):
                deleted.append(infohash)
                usage = disk_usage(self.config.download_dir)
        if usage > quota:
            log.warning("disk usage %d bytes is above the quota of %d with nothing left to evict", usage, quota)
        return deleted

    def _delete(self, infohash: str) -> bool:
        """Delete a torrent's files, whether it is in the session or only on disk (known by its resume data)."""
        log.info("disk quota: deleting torrent %s and its files (least recently watched)", infohash)
        torrent = self.get(infohash)
        if torrent is not None:
            self.remove(infohash, delete_files=True)
            return self._wait_gone(torrent)
        path = self.resume_path(infohash)
        try:
            params = lt.read_resume_data(path.read_bytes())
        except Exception:
            params = None
        self._watched.pop(infohash, None)
        if params is None or params.ti is None:
            path.unlink(missing_ok=True)
            return False
        root = Path(params.save_path or self.config.download_dir)
        for f in file_list(params.ti):
            self._unlink(root, root / f.path)
        self._unlink(root, root / f".{infohash}.parts")
        path.unlink(missing_ok=True)
        return True

    def _wait_gone(self, torrent: Torrent, timeout: float = 5.0) -> bool:
        """libtorrent deletes files on its disk thread: wait until the torrent's files are gone."""
        if torrent.ti is None:
            return True
        root = self.config.download_dir
        paths = [root / f.path for f in torrent.files]
        deadline = time.monotonic() + timeout
        while any(p.exists() for p in paths) and time.monotonic() < deadline:
            time.sleep(0.02)
        return True

    def _unlink(self, root: Path, path: Path) -> None:
        root = root.resolve()
        target = path.resolve()
        if root not in target.parents:
            return  # never outside the download folder
        with contextlib.suppress(OSError):
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        parent = target.parent
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent

    def write_records(self, force: bool = False) -> None:
        if self.record is None:
            return
        now = time.monotonic()
        for torrent in self.torrents():
            if torrent.fetch_only:
                continue
            if force or now - torrent.last_record >= self.config.status_interval_seconds:
                snapshot = self._safe_snapshot(torrent)
                if snapshot is not None and self._record(snapshot, None):
                    torrent.last_record = now

    def _safe_snapshot(self, torrent: Torrent) -> dict[str, Any] | None:
        try:
            return torrent.snapshot()
        except Exception as exc:
            log.debug("no snapshot of %s: %s", torrent.infohash, exc)
            return None

    def _record(self, snapshot: dict[str, Any], state: str | None) -> bool:
        if self.record is None:
            return False
        try:
            self.record(snapshot, state)
            return True
        except Exception as exc:
            log.warning("could not record the state of %s: %s", snapshot.get("infohash"), exc)
            return False


_active: TorrentSession | None = None


def set_active_session(session: TorrentSession | None) -> None:
    global _active
    _active = session


def active_session() -> TorrentSession | None:
    """The session this process runs (for torrent-side jobs that need peers, e.g. a metadata fetch)."""
    return _active


def fetch_metadata(magnet: str, timeout: float | None = None) -> TorrentMetadata:
    """`TorrentSession.fetch_metadata` on the running session."""
    session = active_session()
    if session is None:
        raise ServiceUnavailableError("no torrent session runs in this process")
    return session.fetch_metadata(magnet, timeout)
