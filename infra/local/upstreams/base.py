"""Plumbing shared by the sample upstream servers (YTS, Torznab): one or more HTTP endpoints, a request log, faults.

Each endpoint is a named ThreadingHTTPServer on 127.0.0.1 (HTTP/1.1 keep-alive, every answer with Content-Length,
Nagle off) whose handler hands the request to the sample, which answers under one lock-guarded state. An endpoint can
be taken down and brought back on the same port: while down, its port is held by a socket that is bound but not
listening, so connecting to it is refused (ECONNREFUSED) and no other process can take the port meanwhile.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

Reply = tuple[int, dict[str, str], bytes]  # status, headers (Content-Length is added), body
DROPPED = 0  # the status logged for a request answered by closing the connection


@dataclass
class Served:
    """One request the server answered, faulted ones included."""

    at: float  # time.monotonic() when it arrived
    wall: float  # time.time() when it arrived
    method: str
    path: str
    query: dict[str, str]
    status: int  # DROPPED (0): the connection was closed without an answer
    server: str = ""  # which of the sample's endpoints answered (a YTS mirror's name)


@dataclass
class Fault:
    pattern: re.Pattern[str]
    kind: str
    times: int  # -1: forever
    delay: float = 5.0
    server: str | None = None  # None: any endpoint
    extra: dict[str, Any] = field(default_factory=dict)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    # Headers and body go out in two sends: with Nagle on, the body waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are closed after a minute
    sample: SampleServer
    endpoint: str

    def do_GET(self) -> None:
        reply = self.sample._serve(self.endpoint, "GET", self.path, self.headers)
        if reply is None:  # the endpoint is down: the connection closes without an answer
            self.close_connection = True
            return
        status, headers, body = reply
        try:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, e.g. on a read timeout
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # no line per request on stderr
        pass


@dataclass
class _Endpoint:
    port: int
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None
    holder: socket.socket | None = None  # bound, not listening: the port stays ours, connections are refused


class SampleServer:
    """The base: subclasses define `start()` (opening endpoints with `_listen`/`_refuse`) and `_respond()`."""

    server_version = "Sample/1.0"
    fault_kinds: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.requests: list[Served] = []
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._endpoints: dict[str, _Endpoint] = {}

    # -- lifecycle --

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Close every endpoint; each keeps its port, so a later start() listens where it did."""
        with self._lock:
            endpoints = list(self._endpoints.values())
        for endpoint in endpoints:
            self._close(endpoint)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self, name: str, port: int = 0) -> int:
        """Serve endpoint `name` on `port` (0: a free one; an endpoint that was down keeps its port)."""
        with self._lock:
            endpoint = self._endpoints.get(name) or _Endpoint(port)
            if endpoint.server is not None:
                return endpoint.port
            if endpoint.holder is not None:
                endpoint.holder.close()
                endpoint.holder = None
            handler = type("Handler", (Handler,), {"sample": self, "endpoint": name,
                                                   "server_version": self.server_version})  # fmt: skip
            server = ThreadingHTTPServer(("127.0.0.1", endpoint.port), handler)
            server.block_on_close = False
            endpoint.server, endpoint.port = server, server.server_address[1]
            endpoint.thread = threading.Thread(
                target=server.serve_forever, args=(0.05,), daemon=True, name=f"{type(self).__name__}:{name}"
            )
            endpoint.thread.start()
            self._endpoints[name] = endpoint
            return endpoint.port

    def _refuse(self, name: str, port: int = 0) -> int:
        """Take endpoint `name` down: new connections are refused; requests on open connections are dropped."""
        with self._lock:
            endpoint = self._endpoints.get(name) or _Endpoint(port)
            if endpoint.holder is not None:
                return endpoint.port
            self._close(endpoint)
            holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind(("127.0.0.1", endpoint.port))
            endpoint.holder, endpoint.port = holder, holder.getsockname()[1]
            self._endpoints[name] = endpoint
            return endpoint.port

    @staticmethod
    def _close(endpoint: _Endpoint) -> None:
        if endpoint.server is not None:
            endpoint.server.shutdown()
            endpoint.server.server_close()
        if endpoint.thread is not None:
            endpoint.thread.join(timeout=5)
        if endpoint.holder is not None:
            endpoint.holder.close()
        endpoint.server, endpoint.thread, endpoint.holder = None, None, None

    def _port(self, name: str) -> int:
        return self._endpoints[name].port

    # -- faults and the request log --

    def _add_fault(
        self, path_pattern: str, kind: str, times: int, delay: float, server: str | None, **extra: Any
    ) -> None:
        if kind not in self.fault_kinds:
            raise ValueError(f"unknown fault kind {kind!r}, expected one of {self.fault_kinds}")
        if times != 0:
            with self._lock:
                self._faults.append(Fault(re.compile(path_pattern), kind, times, delay, server, extra))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def served(self, path_pattern: str | None = None, server: str | None = None) -> list[Served]:
        with self._lock:
            return [
                r for r in self.requests
                if (path_pattern is None or re.search(path_pattern, r.path)) and server in (None, r.server)
            ]  # fmt: skip

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def _take_fault(self, server: str, path: str) -> Fault | None:
        with self._lock:
            fault = next((f for f in self._faults if f.server in (None, server) and f.pattern.search(path)), None)
            if fault is not None and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
            return fault

    # -- serving --

    def _serve(self, server: str, method: str, target: str, headers: Message) -> Reply | None:
        at, wall = time.monotonic(), time.time()
        split = urlsplit(target)
        path, query = split.path, dict(parse_qsl(split.query, keep_blank_values=True))
        reply = self._respond(server, path, query, headers)
        with self._lock:
            self.requests.append(Served(at, wall, method, path, query, reply[0] if reply else DROPPED, server))
        return reply

    def _respond(self, server: str, path: str, query: dict[str, str], headers: Message) -> Reply | None:
        """The answer to a request (None: close the connection without one). Called without the lock held."""
        raise NotImplementedError
