"""Streaming: time to first byte, sustained throughput and seek latency of Projectionist's streamer, next to
webtorrent-cli and peerflix and a plain libtorrent download (the floor), all on the same loopback swarm and
measured in the same run. Prints medians of runs and PASS/MISS against the targets; it exits 0 either way.

The swarm: Debian's opentracker and one libtorrent seeder (infra/local/media.py's SampleSeeder, which answers a
new peer at once; in a process of its own, as a remote peer would be) of a generated random file. Everything
stays on 127.0.0.1 over TCP; DHT, LSD, UPnP, NAT-PMP (and uTP) are off in every client. Each run starts every
contender cold: an empty download folder, the torrent not yet known. Contenders take turns within a run (the
order rotates), so that load from elsewhere hits each alike.

- Projectionist: the local runtime's API on the emulator (its Source added with a magnet that names only the
  tracker, as a source search stores it) in this process, and the streamer in a process of its own (as `make run`
  and the container run it; the HTTP client reading the streams lives in this one), a fresh one per run, started
  before the clock does. First byte: from `POST /streams` to the first byte of the stream URL it answers (so it
  counts the API, the grant, the warm-up call, the add and the metadata round from the seeder).
- webtorrent-cli 6 and peerflix 0.39 from the npm registry, installed on first use into .cache/bench-peers/
  (git-ignored) with `npm install --ignore-scripts`, node-datachannel's missing addon stubbed, webtorrent-cli run
  through the loader hook in benchmarks/peers/ that turns DHT, LSD, UPnP, NAT-PMP, PEX, web seeds and uTP off
  (it has no flags for them). Both get the .torrent file. First byte: from starting the process to the first byte
  of its stream URL (polled every few milliseconds until it answers); "listening" is when it first took a
  connection.
- libtorrent (the floor): a bare session with default settings (but for the loopback ones above) downloading the
  .torrent to a temporary folder. "First byte" is its first finished piece after add_torrent.

The file is 1 GiB by default, about a 720p movie: on the 200 MiB file used before, the whole-file read lasted
0.4-1 s, no longer than the seeder's one-second rate tick, and measured the seeder's start more than a sustained
rate (README, "Throughput").

Throughput: the whole file read from byte 0 in one request, bytes / (last byte - first byte), MB = 10^6 bytes;
"wait" is the longest that reader went without a byte after the first (what a player with no buffer would stall).
Seek: a new run; a reader opens the stream at byte 0, reads 4 MiB and then stops reading (a player whose buffer is
full: the connection stays open, so the stream is running), and Range requests for 50% and then 90% of the file are
timed from connecting to the first byte of the body (each reads 4 MiB and closes). For Projectionist the position
is moved forward to the first piece it has not downloaded or started yet, so that a seek is never served from disk
(with STREAMER_SEQUENTIAL off libtorrent fetches pieces in random order; the others fetch in order or on demand).

Targets: first byte and seek latency <= 0.5x the better of webtorrent-cli and peerflix; throughput >= 2x the
better of them and >= 0.8x the plain libtorrent download.

    python benchmarks/stream.py [--runs 5] [--size 1024] [--piece-kib 0] [--contenders projectionist,webtorrent,...]
        [--seeder-low-watermark-kib 0]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS", "STAGE"):
    os.environ.pop(_key, None)
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_SESSION_TOKEN="bench")
os.environ.update(AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1")

import libtorrent as lt  # noqa: E402
from chalice.local import ChaliceRequestHandler  # noqa: E402

from chalicelib.observability import logger  # noqa: E402
from chalicelib.settings import reset_settings  # noqa: E402
from infra.local.runtime import LocalRuntime, RuntimeOptions  # noqa: E402
from tests.integration.streamer_fixtures import MIB, SIGNING_KEY, Media, add_source, random_file  # noqa: E402
from tests.integration.tracker_fixtures import (  # noqa: E402
    OpenTracker,
    _die_with_parent,
    _stop,
    free_port,
    start_opentracker,
    wait_until,
)

PEERS = ROOT / "benchmarks" / "peers"  # the loader hook that runs webtorrent-cli with DHT, LSD, UPnP, uTP... off
PEERS_CACHE = ROOT / ".cache" / "bench-peers"  # where npm installs them (git-ignored)
PACKAGES = ("webtorrent-cli@6", "peerflix@0.39")
LEAD = 4 * MIB  # what a reader takes before it stops (the main stream) or closes (a seek)
TIMEOUT = 60.0  # seconds for anything one contender does in a run
POLL = 0.005  # seconds between attempts to reach a tool's HTTP server while it starts

FIRST_BYTE_RATIO = 0.5  # of the better of webtorrent-cli and peerflix, at most
SEEK_RATIO = 0.5
THROUGHPUT_RATIO = 2.0  # of the better of webtorrent-cli and peerflix, at least
FLOOR_RATIO = 0.8  # of the plain libtorrent download, at least

CONTENDERS = ("projectionist", "webtorrent", "peerflix", "libtorrent")


# --- HTTP, measured from the socket up ---------------------------------------------------------------------------


class NotServing(Exception):
    """The server is not there yet, or not ready for this request (refused, reset, 404, 503...)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused  # no connection taken at all: nothing listens yet


@dataclass
class Body:
    """An HTTP response whose body has begun: `first_at` is when its first byte came."""

    sock: socket.socket
    status: int
    length: int
    first_at: float
    head: bytes  # the first body bytes, as they came
    received: int = 0
    last_at: float = 0.0
    longest_wait: float = 0.0  # the longest time without a byte since the first (a player's stall, if unbuffered)

    def read(self, limit: int | None = None) -> None:
        """Read on until `limit` bytes of the body in all (None: the end); `last_at` is when the last came."""
        wanted = self.length if limit is None else min(limit, self.length)
        buffer = bytearray(4 * MIB)
        view = memoryview(buffer)
        previous = self.last_at or self.first_at
        while self.received < wanted:
            n = self.sock.recv_into(view, min(len(buffer), wanted - self.received))
            if not n:
                raise ConnectionError(f"the body ended at {self.received} of {self.length} bytes")
            self.received += n
            self.last_at = time.perf_counter()
            self.longest_wait = max(self.longest_wait, self.last_at - previous)
            previous = self.last_at

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def get(url: str, start: int | None = None, timeout: float = TIMEOUT) -> Body:
    """GET `url` (from byte `start` on, as a Range request) up to the first byte of the body."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        sock = socket.create_connection((host, port), timeout)
    except OSError as exc:
        raise NotServing(str(exc), refused=True) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ranged = f"Range: bytes={start}-\r\n" if start is not None else ""
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{ranged}Connection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise NotServing("closed before the headers")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status not in (200, 206):
            raise NotServing(f"HTTP {status}")
        if "chunked" in headers.get("transfer-encoding", "").lower() or "content-length" not in headers:
            raise RuntimeError(f"{url}: a body without Content-Length is not measured here")
        while not body:
            body = sock.recv(65536)
            if not body:
                raise NotServing("closed before the body")
        first_at = time.perf_counter()
        return Body(sock, status, int(headers["content-length"]), first_at, body, len(body), first_at)
    except OSError as exc:  # e.g. reset by a server still starting
        sock.close()
        raise NotServing(str(exc)) from None
    except BaseException:
        sock.close()
        raise


def signed_in(username: str = "bench-viewer") -> dict[str, str]:
    """The Authorization header of a signed-in user (created the first time), as a player sends it."""
    try:
        from chalicelib.auth import tokens, users
    except ImportError:  # an API without accounts
        return {}
    user = users.get(username, consistent=True) or users.create_user(username, "Correct-Horse-Battery-9", "user")
    return {"Authorization": f"Bearer {tokens.issue_access(user)[0]}"}


# --- the swarm ---------------------------------------------------------------------------------------------------

SEEDER = """
import json, sys, time
from pathlib import Path
from infra.local.media import SampleSeeder
seeder = SampleSeeder(Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]), settings=json.loads(sys.argv[3])).start()
print(seeder.port, flush=True)
while True:
    time.sleep(3600)
"""


@contextlib.contextmanager
def seeder_process(media: Media, settings: dict[str, int] | None = None) -> Iterator[int]:
    """SampleSeeder of `media` in a child process (so that nothing this process does to its sockets touches it),
    with further libtorrent `settings`; yields its port."""
    process = subprocess.Popen(
        [sys.executable, "-c", SEEDER, str(media.torrent), str(media.data.parent), json.dumps(settings or {})],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip():
            raise RuntimeError("the seeder process did not start")
        yield int(line)
    finally:
        _stop(process)


def make_swarm_media(tracker: OpenTracker, workdir: Path, size: int, piece_kib: int) -> Media:
    """A random file of `size` bytes and its private .torrent (torf's piece size unless `piece_kib`)."""
    import torf

    data = workdir / "data" / "sample.mp4"
    sha = random_file(data, size)
    torrent = workdir / "sample.mp4.torrent"
    # Not private: libtorrent (the seeder) serves no metadata (ut_metadata) of private torrents, and Projectionist
    # gets a magnet. Nothing leaves 127.0.0.1 anyway: no client runs DHT or LSD.
    meta = torf.Torrent(path=data, trackers=[tracker.announce_url], private=False, created_by="projectionist bench")
    if piece_kib:
        meta.piece_size = piece_kib * 1024
    meta.generate()
    meta.write(torrent, overwrite=True)
    infohash = str(meta.infohash).lower()
    tracker.whitelist(infohash)
    return Media(data=data, torrent=torrent, infohash=infohash, size=size, sha256=sha, tracker=tracker)


def expected(media: Media, start: int, head: bytes) -> None:
    """The first bytes of a body are the file's bytes at `start` (every contender is checked alike)."""
    if head[: 64 * 1024] != media.read(start, start + min(len(head), 64 * 1024)):
        raise AssertionError(f"wrong bytes at {start}")


# --- contenders ----------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One run of one contender; seconds, bytes per second."""

    first_byte: float | None = None
    listening: float | None = None
    rate: float | None = None
    wait: float | None = None  # the whole file's longest wait for a byte
    seek50: float | None = None
    seek90: float | None = None


FIELDS = ("first_byte", "listening", "rate", "wait", "seek50", "seek90")


@dataclass
class Contender:
    key: str
    label: str
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def values(self, name: str) -> list[float]:
        return [v for s in self.samples if (v := getattr(s, name)) is not None]

    def median(self, name: str) -> float | None:
        values = self.values(name)
        return statistics.median(values) if values else None


class Run:
    """A contender started cold on the swarm; `begin()` returns once the first byte of its stream came."""

    url = ""
    started_at = 0.0  # when it was asked to stream (POST /streams, or the process start)
    first: Body | None = None  # the stream from byte 0, its first byte in
    listening: float | None = None

    def begin(self) -> None:
        raise NotImplementedError

    def seek_position(self, fraction: float, media: Media) -> int:
        return int(media.size * fraction)

    def stop(self) -> None:
        pass


STREAMER = """
import sys
from pathlib import Path
import libtorrent as lt
from chalicelib.observability import logger
from streamer.__main__ import settle_heap
from streamer.server import Streamer
from tests.integration.streamer_fixtures import streamer_config

logger.setLevel("WARNING")
config = streamer_config(
    Path(sys.argv[1]),
    maintenance_interval_seconds=5.0,  # the production defaults, not the tests' quick ones
    status_interval_seconds=30.0,
    stall_timeout_seconds=30.0,
)
streamer = Streamer(config).start()
settle_heap()  # as `python -m streamer` does once started
print("answer:", streamer.url, flush=True)
for line in sys.stdin:  # "position <infohash> <byte>", until "stop" or the end of stdin
    words = line.split()
    if len(words) != 3:
        break
    infohash, position = words[1], int(words[2])
    answer = position
    torrent = streamer.session.get(infohash)
    if torrent is not None and torrent.main_file is not None:
        have = torrent.handle.status(lt.status_flags_t.query_pieces).pieces
        started = {int(d["piece_index"]) for d in torrent.handle.get_download_queue()}
        file = torrent.main_file
        first = torrent.piece_at(file, position)
        for piece in range(first, torrent.last_piece(file) + 1):
            if not have[piece] and piece not in started:
                answer = position if piece == first else torrent.piece_start(file, piece)
                break
    print("answer:", answer, flush=True)
streamer.stop()
"""


class ProjectionistRun(Run):
    """A fresh streamer process (empty download folder) behind the running API, as `make run` and the container run
    it; the stream starts with POST /streams. Its stdin and stdout answer where a seek should go (below)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.folder = Path(tempfile.mkdtemp(prefix="streamer-", dir=bench.workdir))
        self.process = subprocess.Popen(
            [sys.executable, "-c", STREAMER, str(self.folder)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        os.environ["STREAMER_URL"] = url = self._answer()
        reset_settings()
        # Up once its health check answers, as `make run` and the load balancer take it (measured: without it, a
        # fresh process took ~12 ms more from POST /streams to the first byte than a streamer already serving).
        with urllib.request.urlopen(f"{url}/health", timeout=TIMEOUT) as health:  # (an error status raises)
            health.read()

    def _answer(self) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("answer: "):
                return line.removeprefix("answer: ").strip()
        raise RuntimeError(f"the streamer process ended ({self.process.wait()})")

    def begin(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.bench.api_port, timeout=TIMEOUT)
        body = json.dumps({"source_id": self.bench.media.infohash})
        headers = {"Content-Type": "application/json", **self.bench.auth}
        try:
            self.started_at = time.perf_counter()
            connection.request("POST", "/streams", body, headers)
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        if response.status != 201:
            raise RuntimeError(f"POST /streams: {response.status} {answer[:300]!r}")
        self.url = json.loads(answer)["stream_url"]
        self.first = get(self.url)

    def seek_position(self, fraction: float, media: Media) -> int:
        """`fraction` of the file, or the start of the first piece from there on that is neither downloaded nor
        being downloaded (the rest of the file downloads meanwhile, in order or, if so set, in random order)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"position {media.infohash} {int(media.size * fraction)}\n")
        self.process.stdin.flush()
        return int(self._answer())

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()  # the streamer stops (resume data saved) and the process ends
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        _stop(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


class ToolRun(Run):
    """A node CLI started on the .torrent, serving its stream over HTTP on 127.0.0.1."""

    def __init__(self, name: str, command: list[str], url: str, env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.folder = folder
        self.url = url
        self.log = folder.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    def begin(self) -> None:
        deadline = time.perf_counter() + TIMEOUT
        with open(self.log, "ab") as log:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.folder,
                preexec_fn=_die_with_parent,
            )
        listening: float | None = None
        while True:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {tail}")
            try:
                self.first = get(self.url)
                break
            except NotServing as exc:
                if listening is None and not exc.refused:
                    listening = time.perf_counter()
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{self.url} did not serve within {TIMEOUT:g}s: {exc}") from None
                time.sleep(POLL)
        self.listening = (listening or self.first.first_at) - self.started_at

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, grace=3.0)
            self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)
        self.log.unlink(missing_ok=True)


class Bench:
    """The swarm, the platform and the node tools; one method per measure."""

    def __init__(self, workdir: Path, media: Media, modules: Path | None) -> None:
        self.workdir = workdir
        self.media = media
        self.modules = modules
        self.api_port = 0
        self.runtime: LocalRuntime | None = None
        self.auth: dict[str, str] = {}

    def start_platform(self) -> LocalRuntime:
        """The local runtime's API on the emulator (as the tests start it), the media's Source, a signed-in user."""
        self.api_port = free_port()
        self.runtime = LocalRuntime(
            RuntimeOptions(
                data_dir=None,
                port=self.api_port,
                emulator_port=0,
                serve_api=True,
                run_pollers=False,
                run_ticker=False,
                run_migrations=False,
                torrent_worker=False,
                stage="bench",
            )
        )
        self.runtime.start()
        os.environ["STREAM_SIGNING_KEY"] = SIGNING_KEY
        reset_settings()
        add_source(self.media)  # a magnet naming only the tracker: the metadata comes from the seeder
        self.auth = signed_in()
        return self.runtime

    def start(self, key: str) -> Run:
        if key == "projectionist":
            return ProjectionistRun(self)
        assert self.modules is not None
        folder = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=self.workdir))
        port = free_port()
        if key == "webtorrent":
            command = [
                "node", "--import", str(PEERS / "wt-register.mjs"),
                str(self.modules / "webtorrent-cli" / "bin" / "cmd.js"), str(self.media.torrent),
                "--port", str(port), "--torrent-port", str(free_port()), "-o", str(folder / "out"),
                "--quiet", "--keep-seeding",
            ]  # fmt: skip
            url = f"http://127.0.0.1:{port}/webtorrent/{self.media.infohash}/{self.media.name}"
            return ToolRun(key, command, url, dict(os.environ, WT_MODULES=str(self.modules)), folder)
        command = [
            "node", str(self.modules / "peerflix" / "app.js"), str(self.media.torrent),
            "--port", str(port), "--hostname", "127.0.0.1", "--peer-port", str(free_port()),
            "--path", str(folder / "out"), "--tmp", str(folder / "tmp"), "--no-dht", "-q",
        ]  # fmt: skip
        return ToolRun(key, command, f"http://127.0.0.1:{port}/0", dict(os.environ), folder)

    def whole_file(self, key: str, sample: Sample) -> None:
        """Cold start, first byte, then the whole file in that one request."""
        run = self.start(key)
        try:
            run.begin()
            assert run.first is not None
            body = run.first
            try:
                expected(self.media, 0, body.head)
                body.read()
            finally:
                body.close()
            sample.first_byte = body.first_at - run.started_at
            sample.listening = run.listening
            sample.rate = body.length / max(1e-9, body.last_at - body.first_at)
            sample.wait = body.longest_wait
        finally:
            run.stop()

    def seeks(self, key: str, sample: Sample) -> None:
        """Cold start, a reader that takes LEAD bytes and stops reading, then Range requests at 50% and 90%."""
        run = self.start(key)
        try:
            run.begin()
            assert run.first is not None
            try:
                expected(self.media, 0, run.first.head)
                run.first.read(LEAD)  # from here on it reads nothing: the stream runs, the player's buffer is full
                for fraction, name in ((0.5, "seek50"), (0.9, "seek90")):
                    position = run.seek_position(fraction, self.media)
                    began = time.perf_counter()
                    body = get(run.url, position)
                    setattr(sample, name, body.first_at - began)
                    try:
                        expected(self.media, position, body.head)
                        body.read(LEAD)
                    finally:
                        body.close()
            finally:
                run.first.close()
        finally:
            run.stop()

    def libtorrent(self, sample: Sample) -> None:
        """A bare libtorrent session downloads the .torrent: its first piece after add, and the rate after it."""
        folder = Path(tempfile.mkdtemp(prefix="libtorrent-", dir=self.workdir))
        session = lt.session(
            {
                "listen_interfaces": "127.0.0.1:0",
                "enable_dht": False,
                "enable_lsd": False,
                "enable_upnp": False,
                "enable_natpmp": False,
                "enable_outgoing_utp": False,
                "enable_incoming_utp": False,
                "allow_multiple_connections_per_ip": True,
                "alert_mask": lt.alert_category.status | lt.alert_category.piece_progress,
            }
        )
        try:
            params = lt.add_torrent_params()
            params.ti = lt.torrent_info(str(self.media.torrent))
            params.save_path = str(folder)
            started = time.perf_counter()
            handle = session.add_torrent(params)
            first: float | None = None
            done: float | None = None
            while done is None:
                if time.perf_counter() - started > TIMEOUT:
                    raise TimeoutError("the plain libtorrent download did not finish")
                session.wait_for_alert(500)
                for alert in session.pop_alerts():
                    if isinstance(alert, lt.piece_finished_alert) and first is None:
                        first = time.perf_counter()
                    elif isinstance(alert, lt.torrent_finished_alert):
                        done = time.perf_counter()
            assert first is not None
            if handle.status(0).total_wanted_done != self.media.size:
                raise AssertionError("the plain libtorrent download is incomplete")
            sample.first_byte = first - started
            sample.rate = self.media.size / max(1e-9, done - first)
        finally:
            session.pause()
            del session
            shutil.rmtree(folder, ignore_errors=True)

    def steps(self, key: str) -> list[Callable[[Sample], None]]:
        if key == "libtorrent":
            return [self.libtorrent]
        return [lambda sample: self.whole_file(key, sample), lambda sample: self.seeks(key, sample)]


# --- webtorrent-cli and peerflix, installed on first use ---------------------------------------------------------

DATACHANNEL_REQUIRE = re.compile(
    r'(const|var|let) nodeDataChannel = require\("\.\./\.\./\.\./build/Release/node_datachannel\.node"\);'
)
DATACHANNEL_STUB = (
    'let nodeDataChannel; try { nodeDataChannel = require("../../../build/Release/node_datachannel.node"); } '
    'catch (e) { const T = class { constructor() { throw new Error("node-datachannel stub: WebRTC unavailable"); } }; '
    'nodeDataChannel = new Proxy({}, { get: (o, k) => (k === "getLibraryVersion" ? () => "stub" : '
    '["preload","initLogger","cleanup","setSctpSettings"].includes(k) ? () => {} : T) }); }'
)


def stub_node_datachannel(modules: Path) -> None:
    """node-datachannel (WebRTC, pulled in by webtorrent 3) ships no binary and its installer would download one:
    webtorrent only needs it for wss:// trackers, so a module that loads without the addon stands in."""
    folder = modules / "node-datachannel" / "dist"
    for path in (folder / "esm" / "lib" / "node-datachannel.mjs", folder / "cjs" / "lib" / "node-datachannel.cjs"):
        if not path.exists():
            continue
        original = path.with_name(path.name + ".orig")
        if not original.exists():
            shutil.copyfile(path, original)
        source = original.read_text()
        found = DATACHANNEL_REQUIRE.search(source)
        if found is None:
            raise RuntimeError(f"{path}: the require to stub was not found (another node-datachannel version?)")
        path.write_text(source.replace(found.group(0), DATACHANNEL_STUB))


def ensure_peers(cache: Path = PEERS_CACHE) -> tuple[Path | None, str]:
    """node_modules with webtorrent-cli and peerflix (installed when missing), or None and why not."""
    modules = cache / "node_modules"
    stamp = cache / "installed.json"
    entry_points = [modules / "webtorrent-cli" / "bin" / "cmd.js", modules / "peerflix" / "app.js"]
    installed = stamp.exists() and json.loads(stamp.read_text()).get("packages") == list(PACKAGES)
    if installed and all(p.exists() for p in entry_points):
        return modules, ""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        return None, "node and npm are not on PATH (make system-deps installs nodejs)"
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "package.json").exists():
        (cache / "package.json").write_text(json.dumps({"name": "bench-peers", "private": True}) + "\n")
    print(f"installing {' '.join(PACKAGES)} into {cache.relative_to(ROOT)} (npm, once)...", flush=True)
    # --ignore-scripts: a dependency (ip-set) has a preinstall that insists on pnpm; none of the scripts is needed.
    command = [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES]
    done = subprocess.run(command, cwd=cache, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not all(p.exists() for p in entry_points):
        return None, f"npm install failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}"
    stub_node_datachannel(modules)
    stamp.write_text(json.dumps({"packages": list(PACKAGES)}) + "\n")
    return modules, ""


def version(modules: Path | None, package: str) -> str:
    with contextlib.suppress(OSError, ValueError, TypeError):
        return str(json.loads((modules / package / "package.json").read_text())["version"])  # type: ignore[operator]
    return "?"


# --- report ------------------------------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def mbps(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.0f}"


def spread(c: Contender, name: str, fmt: Callable[[float | None], str]) -> str:
    values = c.values(name)
    return f"{fmt(min(values))}..{fmt(max(values))}" if values else "-"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def report(args: argparse.Namespace, media: Media, piece: int, contenders: dict[str, Contender], loads: str) -> None:
    low = args.seeder_low_watermark_kib
    low_watermark = f" whose send_buffer_low_watermark is {low} KiB: a diagnosis, not the benchmark" if low else ""
    print()
    print(
        f"Streaming a {media.size / MIB:.0f} MiB file ({piece // 1024} KiB pieces) on a loopback swarm (opentracker,"
        f" one libtorrent seeder{low_watermark}), {args.runs} runs, medians"
    )
    print(
        f"{'':30}{'first byte ms':>14}{'MB/s':>7}{'wait ms':>9}{'seek 50% ms':>13}{'seek 90% ms':>13}"
        f"{'listening ms':>14}"
    )
    for c in contenders.values():
        print(
            f"{c.label:30}{ms(c.median('first_byte')):>14}{mbps(c.median('rate')):>7}{ms(c.median('wait')):>9}"
            f"{ms(c.median('seek50')):>13}{ms(c.median('seek90')):>13}{ms(c.median('listening')):>14}"
        )
    print("min..max:")
    for c in contenders.values():
        print(
            f"  {c.label:28}first byte {spread(c, 'first_byte', ms)}, MB/s {spread(c, 'rate', mbps)},"
            f" wait {spread(c, 'wait', ms)}, seek 50% {spread(c, 'seek50', ms)}, seek 90% {spread(c, 'seek90', ms)}"
        )
    for c in contenders.values():
        for failure in c.failures:
            print(f"  {c.label}: {failure}")
    print(
        "first byte: Projectionist from POST /streams, the tools from starting the process, libtorrent from"
        " add_torrent to its first piece; MB/s: the whole file after its first byte; wait: the longest time the whole"
        " file's reader waited for a byte; seeks: a stalled reader open"
    )
    print(loads)

    ours = contenders.get("projectionist")
    tools = [contenders[k] for k in ("webtorrent", "peerflix") if k in contenders]
    floor = contenders.get("libtorrent")
    if ours is None:
        return

    def best(name: str, lower: bool) -> tuple[float | None, str]:
        values = [(v, c.label) for c in tools if (v := c.median(name)) is not None]
        if len(values) < 2:  # "the better of the two" needs both
            return None, ""
        return (min if lower else max)(values, key=lambda pair: pair[0])

    def verdict(ok: bool | None) -> str:
        return "n/a (a contender did not run)" if ok is None else ("PASS" if ok else "MISS")

    print("targets:")
    for name, title, ratio in (
        ("first_byte", "first byte", FIRST_BYTE_RATIO),
        ("seek50", "seek to 50%", SEEK_RATIO),
        ("seek90", "seek to 90%", SEEK_RATIO),
    ):
        mine = ours.median(name)
        theirs, label = best(name, lower=True)
        limit = None if theirs is None else theirs * ratio
        ok = None if limit is None or mine is None else mine <= limit
        versus = "" if theirs is None or mine is None else f" = {mine / theirs:.2f}x {label}"
        print(f"  {title}: {ms(mine)} ms{versus} (target <= {ratio:g}x the better tool: {ms(limit)} ms) {verdict(ok)}")
    mine = ours.median("rate")
    theirs, label = best("rate", lower=False)
    limit = None if theirs is None else theirs * THROUGHPUT_RATIO
    ok = None if limit is None or mine is None else mine >= limit
    versus = "" if theirs is None or mine is None else f" = {mine / theirs:.2f}x {label}"
    print(
        f"  throughput: {mbps(mine)} MB/s{versus} (target >= {THROUGHPUT_RATIO:g}x the better tool:"
        f" {mbps(limit)} MB/s) {verdict(ok)}"
    )
    base = None if floor is None else floor.median("rate")
    limit = None if base is None else base * FLOOR_RATIO
    ok = None if limit is None or mine is None else mine >= limit
    versus = "" if base is None or mine is None else f" = {mine / base:.2f}x"
    print(
        f"  throughput vs plain libtorrent: {mbps(mine)} MB/s{versus} (target >= {FLOOR_RATIO:g}x:"
        f" {mbps(limit)} MB/s) {verdict(ok)}"
    )


# --- main --------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024, help="MiB (default 1024: a movie's size; see the README)")
    parser.add_argument("--piece-kib", type=int, default=0, help="the torrent's piece size (default: torf's choice)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help=f"a subset of {','.join(CONTENDERS)}")
    parser.add_argument(
        "--seeder-low-watermark-kib",
        type=int,
        default=0,
        help="a diagnosis, not the benchmark: the seeder's send_buffer_low_watermark (default: libtorrent's, 10)",
    )
    args = parser.parse_args()
    wanted = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if set(wanted) - set(CONTENDERS):
        parser.error(f"unknown contenders: {', '.join(sorted(set(wanted) - set(CONTENDERS)))}")
    logger.setLevel("WARNING")
    setattr(ChaliceRequestHandler, "log_message", lambda *_: None)  # noqa: B010 (no access log lines)

    modules: Path | None = None
    if {"webtorrent", "peerflix"} & set(wanted):
        modules, why = ensure_peers()
        if modules is None:
            print(f"webtorrent-cli and peerflix are left out: {why}")
            wanted = [c for c in wanted if c not in ("webtorrent", "peerflix")]
    labels = {
        "projectionist": "Projectionist",
        "webtorrent": f"webtorrent-cli {version(modules, 'webtorrent-cli')}",
        "peerflix": f"peerflix {version(modules, 'peerflix')}",
        "libtorrent": f"libtorrent {lt.__version__} (floor)",
    }
    contenders = {key: Contender(key, labels[key]) for key in wanted}

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-stream-")))
        tracker = stack.enter_context(start_opentracker(workdir / "tracker"))
        media = make_swarm_media(tracker, workdir / "media", args.size * MIB, args.piece_kib)
        os.sync()  # the new file goes to disk now, not ~30 s later in the middle of someone's run
        piece = lt.torrent_info(str(media.torrent)).piece_length()
        low = args.seeder_low_watermark_kib
        stack.enter_context(seeder_process(media, {"send_buffer_low_watermark": low * 1024} if low else None))
        wait_until(lambda: tracker.counts(media.infohash)[0] >= 1, 30, "the tracker to count the seeder")
        bench = Bench(workdir, media, modules)
        if "projectionist" in contenders:
            stack.callback(bench.start_platform().stop)
        loads = f"before: {load()}"

        # Not counted: the seeder hashes each piece the first time it sends it (seed mode), and each contender's
        # first start pays for cold caches (node modules, imports).
        for key in ["libtorrent", *(k for k in wanted if k != "libtorrent")]:
            with contextlib.suppress(Exception):
                bench.steps(key)[0](Sample())

        steps = [(key, step) for key in wanted for step in bench.steps(key)]
        for run in range(args.runs):
            samples = {key: Sample() for key in wanted}
            shift = run % len(steps)  # the order rotates, so that no contender always goes first
            for key, step in steps[shift:] + steps[:shift]:
                try:
                    step(samples[key])
                except Exception as exc:
                    contenders[key].failures.append(f"run {run + 1} failed: {type(exc).__name__}: {exc}"[:400])
            for key, sample in samples.items():
                contenders[key].samples.append(sample)
            print(f"run {run + 1}/{args.runs} done", flush=True)
        loads += f"; after: {load()}"
    report(args, media, piece, contenders, loads)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (tracker, seeder, node) on a plain kill
    main()
