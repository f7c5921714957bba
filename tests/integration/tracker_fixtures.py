"""A real BitTorrent tracker and a real seeder on 127.0.0.1, for tracker and end-to-end tests.

Plain context managers (usable outside pytest, e.g. by benchmarks/scrape.py) and thin pytest fixtures:

- `start_opentracker(workdir)` -> OpenTracker: Debian's opentracker, on free UDP and TCP ports of 127.0.0.1.
  `.udp_url` and `.announce_url` are its announce URLs; `.whitelist(*infohashes)` lets infohashes in (Debian
  builds opentracker in whitelist mode: it refuses to announce anything not listed, though it scrapes anything).
- `start_seeder(tracker, workdir)` -> Seeder: aria2c seeding a freshly generated small file (its .torrent made
  with torf, private, announcing to the tracker over HTTP), returned once the tracker counts it as a seeder.
- `ensure_tracker_tools()` installs opentracker and aria2 with apt-get when missing (root, like `make system-deps`).

Fixtures: `opentracker` (a fresh tracker per test), `seeder` (one seeder on that tracker, already counted) and
`make_seeder` (a factory: `make_seeder()` starts another seeder on `opentracker`, or on the tracker given).
Use them by importing them into a test module (or tests/integration/conftest.py) and listing them in `__all__`,
as tests/integration/test_trackers.py does.

Things worth knowing about the tools (Debian bookworm: opentracker 0.0~git20210823, aria2 1.36):

- opentracker binds 0.0.0.0:6969 unless told otherwise: `-i 127.0.0.1` must come before `-p` (TCP) and `-P`
  (UDP). Run as root it chroots to `-d DIR` and drops to `-u USER` (default nobody), so `-w FILE` is relative
  to DIR, and DIR and FILE must be readable by that user (we chmod them 755/644).
- The whitelist is read at start and again on SIGHUP, by a thread of its own: a reload is not instant, so
  `whitelist()` waits until a fresh canary infohash written with the new list is accepted by an announce.
  Only announces are whitelisted: a scrape of any infohash is answered (0s for one it does not know).
- opentracker answers at most 75 infohashes per UDP scrape and at most 64 per HTTP scrape, and silently
  leaves out the rest (they would read as 0): the client's batches (74, 50) stay under both.
- A UDP request with a connection id it no longer takes gets action 3, "Connection ID missmatch.".
- aria2c only speaks UDP tracker protocol when DHT is on, so the seeder announces over HTTP; DHT, LPD and
  peer exchange are off and the torrent is private, so nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from fastbencode import bdecode

_INSTALL_LOCK = threading.Lock()


def ensure_tracker_tools() -> None:
    """opentracker and aria2c on PATH, installed with apt-get when missing (needs root and Debian's repositories)."""
    with _INSTALL_LOCK:
        if shutil.which("opentracker") and shutil.which("aria2c"):
            return
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "opentracker", "aria2"], check=True, env=env, stdout=subprocess.DEVNULL
        )
        if not (shutil.which("opentracker") and shutil.which("aria2c")):
            raise RuntimeError("apt-get installed opentracker and aria2, yet opentracker or aria2c is not on PATH")


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: be killed when the process that started us dies (no orphan tracker or seeder).

    Linux ties this to the thread that started the child: start trackers and seeders from a long-lived thread
    (pytest's main thread is), not from a short-lived worker thread.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stop(process: subprocess.Popen[Any], grace: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def random_infohashes(n: int) -> list[str]:
    return [secrets.token_hex(20) for _ in range(n)]


# --- opentracker -------------------------------------------------------------------------------------------


@dataclass
class OpenTracker:
    """A running opentracker. Its whitelist starts with `initial` infohashes (and a canary)."""

    workdir: Path
    host: str = "127.0.0.1"
    http_port: int = 0
    udp_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    whitelisted: set[str] = field(default_factory=set)
    _canary: str = ""

    @property
    def udp_url(self) -> str:
        return f"udp://{self.host}:{self.udp_port}/announce"

    @property
    def announce_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/announce"

    @property
    def log(self) -> str:
        path = self.workdir / "opentracker.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, attempts: int = 5) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # opentracker chroots here and reads the whitelist as nobody
        self._write_whitelist()
        for _ in range(attempts):  # a free port can be taken between finding it and binding it
            self.http_port, self.udp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
            command = [
                "opentracker", "-i", self.host, "-p", str(self.http_port), "-P", str(self.udp_port),
                "-d", str(self.workdir), "-w", "whitelist.txt",
            ]  # fmt: skip
            with open(self.workdir / "opentracker.log", "ab") as log:
                self.process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
                )
            try:
                wait_until(lambda: self.process is None or self.process.poll() is not None or self._ready(), 10, "up")
            except AssertionError:
                self.stop()
                raise
            if self.process.poll() is None:
                self._wait_for_whitelist()
                return
        raise RuntimeError(f"opentracker did not start after {attempts} attempts:\n{self.log[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def __enter__(self) -> OpenTracker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def whitelist(self, *infohashes: str | Iterable[str]) -> None:
        """Add infohashes (hex strings, or iterables of them) to the whitelist; returns once opentracker uses it."""
        for item in infohashes:
            self.whitelisted.update([item.lower()] if isinstance(item, str) else (h.lower() for h in item))
        self.reload()

    def set_whitelist(self, infohashes: Iterable[str]) -> None:
        self.whitelisted = {h.lower() for h in infohashes}
        self.reload()

    def reload(self) -> None:
        """Rewrite the whitelist file and SIGHUP opentracker; wait until it accepts the new list's canary."""
        assert self.process is not None and self.process.poll() is None, "opentracker is not running"
        self._write_whitelist()
        self.process.send_signal(signal.SIGHUP)
        self._wait_for_whitelist()

    def _write_whitelist(self) -> None:
        self._canary = secrets.token_hex(20)
        path, temporary = self.workdir / "whitelist.txt", self.workdir / "whitelist.txt.new"
        temporary.write_text("".join(f"{h}\n" for h in sorted(self.whitelisted | {self._canary})))
        temporary.chmod(0o644)
        temporary.replace(path)  # atomic: a reload never reads half a file

    def _wait_for_whitelist(self) -> None:
        wait_until(lambda: self.announce_allowed(self._canary), 15, "opentracker to load its whitelist", 0.02)

    def announce_allowed(self, infohash: str) -> bool:
        """Whether the tracker takes announces for `infohash` (a `stopped` announce: it adds no peer)."""
        query = (
            f"info_hash={quote_from_bytes(bytes.fromhex(infohash), safe='')}&peer_id={'-PY0001-' + 'x' * 12}"
            "&port=1&uploaded=0&downloaded=0&left=0&compact=1&event=stopped"
        )
        data = self._http(f"/announce?{query}")
        return isinstance(data, dict) and b"failure reason" not in data

    def counts(self, infohash: str) -> tuple[int, int, int]:
        """(seeders, leechers, completed) by an HTTP scrape of our own, independent of the code under test."""
        raw = bytes.fromhex(infohash)
        data = self._http(f"/scrape?info_hash={quote_from_bytes(raw, safe='')}")
        entry = data.get(b"files", {}).get(raw) if isinstance(data, dict) else None
        if not isinstance(entry, dict):
            return (0, 0, 0)
        return (entry.get(b"complete", 0), entry.get(b"incomplete", 0), entry.get(b"downloaded", 0))

    def _http(self, path: str) -> object:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}{path}", timeout=2) as response:
                return bdecode(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _ready(self) -> bool:
        if self._http("/scrape") is None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # a BEP 15 connect
            sock.settimeout(0.2)
            try:
                sock.sendto(struct.pack(">QII", 0x41727101980, 0, 1), (self.host, self.udp_port))
                return len(sock.recv(64)) == 16
            except OSError:
                return False


@contextlib.contextmanager
def start_opentracker(workdir: Path | None = None, whitelist: Iterable[str] = ()) -> Iterator[OpenTracker]:
    """A running opentracker in `workdir` (a temporary directory if None), stopped on exit."""
    ensure_tracker_tools()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opentracker-")))
        tracker = OpenTracker(workdir=workdir, whitelisted={h.lower() for h in whitelist})
        with tracker:
            yield tracker


# --- the aria2c seeder -------------------------------------------------------------------------------------


@dataclass
class Seeder:
    infohash: str  # lower-case hex
    torrent: Path
    data: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


def make_torrent(data: Path, announce_url: str, torrent: Path) -> str:
    """A private single-file .torrent for `data` announcing to `announce_url`; returns its hex infohash."""
    import torf

    meta = torf.Torrent(path=data, trackers=[announce_url], private=True, created_by="projectionist tests")
    meta.generate()
    meta.write(torrent, overwrite=True)
    return str(meta.infohash).lower()


@contextlib.contextmanager
def start_seeder(
    tracker: OpenTracker, workdir: Path | None = None, size: int = 256 * 1024, timeout: float = 30
) -> Iterator[Seeder]:
    """aria2c seeding a new random file of `size` bytes to `tracker`; yields once the tracker counts 1 seeder."""
    ensure_tracker_tools()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="seeder-")))
        workdir.mkdir(parents=True, exist_ok=True)
        data = workdir / "data" / f"sample-{secrets.token_hex(4)}.bin"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_bytes(os.urandom(size))
        torrent = workdir / f"{data.stem}.torrent"
        infohash = make_torrent(data, tracker.announce_url, torrent)
        tracker.whitelist(infohash)  # before aria2c announces: opentracker refuses unlisted infohashes
        seeder = Seeder(infohash=infohash, torrent=torrent, data=data, port=free_port(), log=workdir / "aria2c.log")
        command = [
            "aria2c", "--no-conf=true", f"--dir={data.parent}", str(torrent),
            "--seed-ratio=0.0",  # seed whatever the ratio (and no --seed-time: until stopped)
            "--check-integrity=true", "--bt-seed-unverified=false", "--file-allocation=none",
            "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
            f"--listen-port={seeder.port}", "--interface=127.0.0.1", "--disable-ipv6=true",
            f"--stop-with-process={os.getpid()}",
            "--summary-interval=0", "--console-log-level=warn", f"--log={seeder.log}", "--log-level=info",
        ]  # fmt: skip
        seeder.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        stack.callback(seeder.stop)

        def counted() -> bool:
            if seeder.process is not None and seeder.process.poll() is not None:
                log = seeder.log.read_text(errors="replace")[-2000:] if seeder.log and seeder.log.exists() else ""
                raise RuntimeError(f"aria2c exited with {seeder.process.returncode}:\n{log}")
            return tracker.counts(infohash)[0] >= 1

        wait_until(counted, timeout, f"opentracker to count aria2c as a seeder of {infohash}", 0.1)
        yield seeder


# --- pytest fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def opentracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenTracker]:
    """A fresh opentracker on 127.0.0.1 (free UDP and TCP ports), its whitelist empty but for a canary."""
    with start_opentracker(tmp_path_factory.mktemp("opentracker")) as tracker:
        yield tracker


@pytest.fixture
def make_seeder(opentracker: OpenTracker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Seeder]]:
    """`make_seeder(tracker=opentracker, size=...)` starts an aria2c seeder, stopped after the test."""
    with contextlib.ExitStack() as stack:

        def make(tracker: OpenTracker | None = None, size: int = 256 * 1024) -> Seeder:
            workdir = tmp_path_factory.mktemp("seeder")
            return stack.enter_context(start_seeder(tracker or opentracker, workdir, size=size))

        yield make


@pytest.fixture
def seeder(make_seeder: Callable[..., Seeder]) -> Seeder:
    """One aria2c seeder of a fresh small torrent on `opentracker`, already counted by it (seeders == 1)."""
    return make_seeder()
