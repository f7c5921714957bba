"""The stream server: torrents over HTTP range requests, behind signed stream grants.

    GET|HEAD /stream/{token}          the granted file; Range requests get 206, none 200, past the end 416
    POST     /streams/{token}/start   add the torrent now and warm the file up (the API calls it): 202
    GET      /streams/{token}/status  state (idle, metadata, buffering, streaming, seeding), buffered bytes
                                      ahead of the readers, rates, peers, progress, the file's name and size
    GET      /health                  torrents, readers and the VPN gate; 503 while shutting down

A token is checked before anything else: a missing or malformed one gets 401, a forged or expired one 403,
and neither starts a torrent. The grant's info-hash names a Source in DynamoDB; its stored .torrent (S3) is
used if it has one, else its magnet. Every error body is JSON `{"error": {"code", "message"}}`, as the API's.

The body is written piece by piece as pieces come (never the whole range at once), each piece waited for at
most the stall timeout of no download progress: before the headers that is a 504, after them the connection
is closed, so a player never waits forever on a torrent nobody seeds.

`Streamer(config).start()` runs the session and this server in threads of the calling process (`.url`,
`.stop()`); `python -m streamer` adds the torrent-queue worker and signal handling around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web

from chalicelib.errors import NotFoundError, ProjectionistError, ServiceUnavailableError, UnauthorizedError, error_body
from chalicelib.observability import logger as log
from chalicelib.streams import grants
from streamer import records
from streamer.config import StreamerConfig, get_config
from streamer.session import (
    PREFETCH_BYTES,
    FileInfo,
    MetadataTimeoutError,
    Reader,
    StalledError,
    StreamerError,
    Torrent,
    TorrentSession,
    TorrentSource,
)

STALL_CHECK = 0.25  # seconds between checks of a waiting reader
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
    ".mov": "video/quicktime",
    ".ts": "video/mp2t",
    ".m2ts": "video/mp2t",
    ".mpg": "video/mpeg",
    ".mpeg": "video/mpeg",
    ".wmv": "video/x-ms-wmv",
    ".flv": "video/x-flv",
    ".ogv": "video/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".flac": "audio/flac",
    ".srt": "application/x-subrip",
    ".vtt": "text/vtt",
}


class RangeNotSatisfiableError(ProjectionistError):
    status_code = 416
    code = "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the file's {size} bytes")
        self.headers = {"Content-Range": f"bytes */{size}"}


def content_type(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def etag(infohash: str, file_index: int) -> str:
    """A strong ETag of a torrent's file: the info-hash fixes every byte of it."""
    return f'"{infohash}-{file_index}"'


def byte_range(request: web.BaseRequest, size: int, tag: str) -> tuple[int, int] | None:
    """The (start, stop) byte range asked for (stop exclusive), or None for the whole file.

    One range is served; a header aiohttp cannot parse (malformed, or several ranges) is ignored, as RFC 9110
    allows, and the whole file is sent. A range starting past the end, or the last 0 bytes, is unsatisfiable.
    With If-Range the range counts only if its validator is `tag` (strong comparison; a date never matches, as
    no Last-Modified is sent): a client whose copy is not this file gets the whole file."""
    header = request.headers.get("Range")
    if header is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != tag:
        return None
    try:
        wanted = request.http_range
    except ValueError:
        return None
    if re.fullmatch(r"bytes=-0+", header.strip(), re.IGNORECASE):
        raise RangeNotSatisfiableError(size)
    start, stop = wanted.start, wanted.stop
    if start is None:
        return None
    if start < 0:  # the last -start bytes
        start, stop = max(0, size + start), size
    if start >= size:
        raise RangeNotSatisfiableError(size)
    return start, size if stop is None else min(stop, size)


def json_error(exc: ProjectionistError) -> web.Response:
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return web.json_response(error_body(exc.code, exc.message, exc.details), status=exc.status_code, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ProjectionistError as exc:
        return json_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = re.sub(r"[^a-z]+", "_", (exc.reason or "error").lower()).strip("_")
        # Its own headers (Allow on a 405) but not its text body's: the body here is JSON.
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return web.json_response(error_body(code, exc.reason or "error"), status=exc.status, headers=headers)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response(error_body("internal_error", "Internal server error"), status=500)


def resolve_source(infohash: str) -> TorrentSource:
    """The Source of `infohash` from DynamoDB, with its stored .torrent from S3 when it has one (blocking)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from pynamodb.exceptions import PynamoDBException

    from chalicelib import aws
    from chalicelib.models.sources import Source
    from chalicelib.settings import get_settings

    try:
        source = Source.get(*Source.key(infohash))
    except Source.DoesNotExist:
        raise NotFoundError(f"no source {infohash}") from None
    except PynamoDBException as exc:
        raise ServiceUnavailableError("the sources table cannot be read", retry_after=5) from exc
    data = None
    if source.torrent_key:
        try:
            obj = aws.s3().get_object(Bucket=get_settings().bucket_name, Key=source.torrent_key)
            data = obj["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            log.warning("stored .torrent %s unreadable (%s); using the magnet", source.torrent_key, exc)
    return TorrentSource(infohash=source.infohash, magnet=source.magnet, torrent=data, name=source.title)


def warm_source_clients() -> None:
    """Build the clients `resolve_source` uses. In a fresh process each costs ~150 ms (botocore loads its service
    models, and on AWS fetches the task's credentials): a streamer that just started would charge that to its first
    viewer's press of play."""
    from chalicelib import aws
    from chalicelib.models.sources import Source

    try:
        _ = Source._get_connection().connection.client  # PynamoDB's client of the table, shared by all threads
        aws.s3()
    except Exception as exc:  # the first request builds them then, or reports what is wrong
        log.warning("the streamer could not prepare its AWS clients: %s", exc)


class StreamServer:
    """The aiohttp handlers over one TorrentSession."""

    def __init__(self, streamer: Streamer) -> None:
        self.streamer = streamer
        self.session: TorrentSession = streamer.session
        self.config: StreamerConfig = streamer.config
        self._adding: dict[str, asyncio.Future[Torrent]] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_middleware])
        app.router.add_get("/health", self.health)
        app.router.add_get("/stream/{token:[^/]*}", self.stream)  # HEAD too
        app.router.add_post("/streams/{token:[^/]*}/start", self.start)
        app.router.add_get("/streams/{token:[^/]*}/status", self.status)
        return app

    # -- routes ----------------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        gate = self.streamer.gate
        vpn: dict[str, Any] = {"open": self.session.network_open, "reason": None}
        if gate is not None:
            with contextlib.suppress(Exception):
                state = await asyncio.get_running_loop().run_in_executor(None, gate.check)
                vpn = {"open": state.open, "reason": state.reason}
        torrents = self.session.torrents()
        body = {
            "status": "draining" if self.streamer.draining else "ok",
            "torrents": sum(1 for t in torrents if not t.fetch_only),
            "readers": sum(t.reader_count for t in torrents),
            "vpn": vpn,
        }
        return web.json_response(body, status=503 if self.streamer.draining else 200)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self._accepting()
        grant = self._grant(request)
        torrent = await self._torrent(grant.infohash)
        with torrent.interest():
            return await self._respond(request, grant, torrent)

    async def _respond(self, request: web.Request, grant: grants.Grant, torrent: Torrent) -> web.StreamResponse:
        await self._ready(torrent)
        file = torrent.file(grant.file_index)
        tag = etag(torrent.infohash, file.index)
        wanted = byte_range(request, file.size, tag)
        start, stop = wanted or (0, file.size)
        response = web.StreamResponse(status=206 if wanted else 200)
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["ETag"] = tag
        response.headers["Content-Type"] = content_type(file.path)
        response.headers["Cache-Control"] = "private, no-transform"
        if wanted:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{file.size}"
        response.content_length = stop - start
        if request.method == "HEAD" or stop == start:
            await response.prepare(request)
            await response.write_eof()
            return response
        with torrent.open_reader(file, start) as reader:
            try:
                await self._send(request, response, torrent, reader, start, stop)
            except ConnectionError:  # the player hung up (a seek opens a new request): nothing to answer
                log.debug("a reader of %s hung up", torrent.infohash)
        return response

    async def start(self, request: web.Request) -> web.Response:
        self._accepting()
        grant = self._grant(request)
        torrent = await self._torrent(grant.infohash)

        def warm(_: Future[None]) -> None:
            with contextlib.suppress(Exception):
                torrent.warm(torrent.file(grant.file_index))

        torrent.ready.future().add_done_callback(warm)
        return web.json_response({"infohash": torrent.infohash, "state": torrent.state()}, status=202)

    async def status(self, request: web.Request) -> web.Response:
        grant = self._grant(request)
        idle = {"infohash": grant.infohash, "state": "idle"}  # not in the session (never started, or evicted)
        torrent = self.session.get(grant.infohash)
        if torrent is None or torrent.fetch_only:
            return web.json_response(idle)
        loop = asyncio.get_running_loop()
        try:
            return web.json_response(await loop.run_in_executor(None, torrent.snapshot, grant.file_index))
        except Exception:
            if torrent.removed.is_set():  # it left the session while we looked
                return web.json_response(idle)
            raise

    # -- parts -----------------------------------------------------------------------------------------------
    def _grant(self, request: web.Request) -> grants.Grant:
        try:
            return grants.verify(request.match_info.get("token") or None)
        except ProjectionistError:  # 401, 403; 503 without a signing key
            raise
        except Exception as exc:  # anything odd about a token is the token's fault
            raise UnauthorizedError("the stream token is malformed") from exc

    def _accepting(self) -> None:
        if self.streamer.draining:
            raise ServiceUnavailableError("the streamer is shutting down", retry_after=5)
        if not self.session.network_open:
            raise ServiceUnavailableError("the VPN gate is closed: streams are held back", retry_after=30)

    async def _torrent(self, infohash: str) -> Torrent:
        """The torrent in the session, else resolved from its Source and added (once, however many ask)."""
        torrent = self.session.get(infohash)
        if torrent is not None and not torrent.fetch_only:
            torrent.touch()
            return torrent
        pending = self._adding.get(infohash)
        if pending is None:
            pending = asyncio.ensure_future(self._add(infohash))
            self._adding[infohash] = pending
            pending.add_done_callback(lambda _: self._adding.pop(infohash, None))
        return await asyncio.shield(pending)

    async def _add(self, infohash: str) -> Torrent:
        loop = asyncio.get_running_loop()
        source = await loop.run_in_executor(None, self.streamer.resolve, infohash)
        return await loop.run_in_executor(None, self.session.add, source)

    async def _ready(self, torrent: Torrent) -> None:
        if torrent.ready.wait(0):  # (raises its error if it failed) no round through the loop for a seek
            return
        timeout = self.config.metadata_timeout_seconds
        try:
            await asyncio.wait_for(asyncio.wrap_future(torrent.ready.future()), timeout)
        except TimeoutError:
            raise MetadataTimeoutError(f"no metadata for {torrent.infohash} from peers within {timeout:g}s") from None

    async def _piece(self, torrent: Torrent, future: Future[bytes]) -> bytes:
        """A piece's bytes; StalledError once the torrent made no progress for the stall timeout."""
        if future.done():
            return future.result()
        waiting = asyncio.wrap_future(future)
        started = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=STALL_CHECK)
                if done:
                    return waiting.result()
                quiet = time.monotonic() - max(started, torrent.last_progress)
                if quiet >= self.config.stall_timeout_seconds:
                    raise StalledError(f"torrent {torrent.infohash}: nothing downloaded for {quiet:.0f}s")
        finally:
            if not waiting.done():
                waiting.cancel()

    async def _send(
        self,
        request: web.Request,
        response: web.StreamResponse,
        torrent: Torrent,
        reader: Reader,
        start: int,
        stop: int,
    ) -> None:
        """Write [start, stop) of the reader's file, piece by piece, a few pieces asked for ahead."""
        file: FileInfo = reader.file
        depth = max(2, min(8, PREFETCH_BYTES // max(1, torrent.piece_length)))
        queue: deque[tuple[int, Future[bytes]]] = deque()
        next_piece, last_piece = reader.locate(start), reader.locate(stop - 1)
        position = start
        try:
            while position < stop:
                while next_piece <= last_piece and len(queue) < depth:
                    queue.append((next_piece, reader.request(next_piece)))
                    next_piece += 1
                piece, future = queue[0]
                reader.seek(position)
                try:
                    data = await self._piece(torrent, future)
                except StreamerError as exc:
                    if not response.prepared:
                        raise
                    log.warning("stream of %s ended early at byte %d: %s", torrent.infohash, position, exc.message)
                    if request.transport is not None:
                        request.transport.close()  # the client sees a short body, not a silent end
                    return
                queue.popleft()
                if not response.prepared:
                    await response.prepare(request)
                base = torrent.piece_start(file, piece)
                end = min(len(data), stop - base)
                await response.write(memoryview(data)[position - base : end])
                position = base + end
            await response.write_eof()
        finally:
            for _, future in queue:
                future.cancel()


class Streamer:
    """The torrent session and the stream server, in threads of this process.

    `Streamer(config).start()` returns once the server listens (`.url`); `.drain()` makes new requests get
    503; `.stop()` drains, gives responses in flight the shutdown grace, saves every torrent's resume data and
    ends the session. `gate`: the VPN gate (by default a VpnGate on the settings; False: none), `record`:
    whether Storage records are written (both need DynamoDB), `resolve`: how a grant's info-hash becomes a
    TorrentSource (by default from the sources table and the bucket)."""

    def __init__(
        self,
        config: StreamerConfig | None = None,
        *,
        gate: Any = None,
        record: bool = True,
        resolve: Callable[[str], TorrentSource] = resolve_source,
    ) -> None:
        self.config = config or get_config()
        self.resolve = resolve  # info-hash -> what to add (by default the Source in DynamoDB, its .torrent in S3)
        if gate is None:
            from streamer.vpn import VpnGate

            gate = VpnGate()
        self.gate = gate or None  # False: no gate at all (nothing recorded in DynamoDB)
        self.session = TorrentSession(self.config, gate=self.gate, record=records.write if record else None)
        self.server = StreamServer(self)
        self.draining = False
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the streamer is not started")
        host = self.config.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        return f"http://{host}:{self.port}"

    def start(self) -> Streamer:
        if self.resolve is resolve_source:  # before it serves: the first POST /streams should not wait for them
            warm_source_clients()
        self.session.start()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="streamer-http", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self.session.stop()
            raise failure[0]
        log.info("streamer listening on %s", self.url)
        return self

    async def _serve(self) -> None:
        self._runner = web.AppRunner(
            self.server.app(),
            handler_cancellation=True,  # a client that goes away cancels its handler: its reader is released
            shutdown_timeout=self.config.shutdown_grace_seconds,
            access_log=None,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def drain(self) -> None:
        """New requests get 503 from now on; responses in flight go on."""
        self.draining = True

    def stop(self) -> None:
        self.drain()
        loop, runner = self._loop, self._runner
        if loop is not None and runner is not None and self._thread is not None:
            done = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            with contextlib.suppress(Exception):
                done.result(self.config.shutdown_grace_seconds + 10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        self._loop = self._runner = self._thread = None
        self.session.stop()

    def __enter__(self) -> Streamer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
