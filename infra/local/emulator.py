"""The embedded AWS emulator: moto's server on 127.0.0.1, with its state kept on disk.

moto keeps everything in memory. Its maintainers' suggestion for persistence is to snapshot the backends,
so this module pickles the DynamoDB, SQS and S3 backends to `<data dir>/emulator.pickle` every few seconds
and on shutdown, and restores them before serving. A readers-writer lock around the WSGI app makes each
snapshot consistent: requests share the lock, a snapshot takes it alone, between requests.
"""

from __future__ import annotations

import copy
import copyreg
import logging
import os
import pickle
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from moto import backends as moto_backends
from moto.backends import get_backend
from moto.core.utils import unix_time
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sqs.models import Message, SQSBackend
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger("projectionist.local.emulator")

PERSISTED_SERVICES = ("dynamodb", "sqs", "s3")
SNAPSHOT_FILE = "emulator.pickle"

# SQS backends hold locks, which pickle cannot serialise by default: a fresh lock is the right restore.
_LOCK_TYPE = type(threading.Lock())
_RLOCK_TYPE = type(threading.RLock())
copyreg.pickle(_LOCK_TYPE, lambda _lock: (threading.Lock, ()))
copyreg.pickle(_RLOCK_TYPE, lambda _lock: (threading.RLock, ()))


def _retention_check(self: SQSBackend, queue_name: str, message: Message) -> bool:
    """moto checks each received message's retention by computing *all* queue attributes, which counts every
    message in the queue: a receive costs O(queue length x batch). Reading the one attribute keeps a receive
    from a queue of thousands as fast as from an empty one (measured: 300 queued, 160 ms -> ~5 ms)."""
    queue = self.get_queue(queue_name)
    return int(queue.message_retention_period) + message.sent_timestamp / 1000 > unix_time()  # type: ignore[attr-defined,operator]


SQSBackend.is_message_valid_based_on_retention_period = _retention_check  # type: ignore[method-assign]

# moto's dispatcher lists its package folder on disk for every request to tell whether the Host header
# names a service; the folder does not change while we run, so list it once (a fifth of a request's time).
_MOTO_MODULES = tuple(moto_backends.list_of_moto_modules())
moto_backends.list_of_moto_modules = lambda: _MOTO_MODULES


class _ShallowTableCopy:
    """Stands in for the `copy` module inside moto's DynamoDB backend: its transactions deep-copy every table
    they touch to roll back on failure, so one TransactWriteItems costs O(table size) and a table of a few
    thousand items makes each transaction take a second. `_transact_write_items` backs up only the items a
    transaction touches instead; here a Table "copy" is the table itself (everything else is copied as usual).
    """

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, dynamodb_models.Table) else copy.deepcopy(value, memo)


_moto_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    backups: list[tuple[Any, DynamoType, DynamoType | None, Any]] = []
    for entry in transact_items:
        op = next(iter(entry.values()), None)
        table = self.tables.get(str(op.get("TableName"))) if isinstance(op, dict) else None
        key = (op.get("Key") or op.get("Item")) if isinstance(op, dict) else None
        if table is None or not isinstance(key, dict) or table.hash_key_attr not in key:
            continue
        hash_value = DynamoType(key[table.hash_key_attr])
        range_attr = table.range_key_attr
        range_value = DynamoType(key[range_attr]) if range_attr and range_attr in key else None
        if range_attr and range_value is None:
            continue
        backups.append((table, hash_value, range_value, copy.deepcopy(table.get_item(hash_value, range_value))))
    try:
        _moto_transact_write_items(self, transact_items)
    except Exception:
        for table, hash_value, range_value, item in reversed(backups):  # undo in reverse: first backup wins
            table.delete_item(hash_value, range_value)
            if item is not None:
                if range_value is not None:
                    table.items[hash_value][range_value] = item
                else:
                    table.items[hash_value] = item
        raise


dynamodb_models.copy = _ShallowTableCopy  # type: ignore[assignment]
DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]


# Actions moto does not implement: answered as SQS answers an unsupported operation (a 400 the SDK does
# not retry), instead of moto's HTML 500, so callers can fall back to another way at once.
UNSUPPORTED = {"AmazonSQS.StartMessageMoveTask", "AmazonSQS.ListMessageMoveTasks", "AmazonSQS.CancelMessageMoveTask"}


def _unsupported(operation: str, start_response: Any) -> list[bytes]:
    body = f'{{"__type":"com.amazonaws.sqs#UnsupportedOperation","message":"{operation} is not supported here"}}'
    start_response(
        "400 Bad Request",
        [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-query-error", "AWS.SimpleQueueService.UnsupportedOperation;Sender"),
        ],
    )
    return [body.encode()]


def _service_of(environ: dict[str, Any]) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.partition(".")[0]
    auth = environ.get("HTTP_AUTHORIZATION", "")  # SigV4: Credential=KEY/DATE/REGION/SERVICE/aws4_request
    parts = auth.split("Credential=", 1)[-1].split("/")
    return parts[3] if len(parts) > 3 else "other"


class ReadersWriterLock:
    """Many readers or one writer; a waiting writer holds new readers back so snapshots are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class _QuietHandler(MotoRequestHandler):
    def log_request(self, code: Any = "-", size: Any = "-") -> None:  # one line per AWS call is noise
        pass


class Emulator:
    def __init__(self, data_dir: Path | None, host: str = "127.0.0.1", port: int = 8001, snapshot_every: float = 5.0):
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.snapshot_every = snapshot_every
        self._lock = ReadersWriterLock()
        self._server: BaseWSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._dirty = False
        # AWS API requests served, by (service, operation): what benchmarks and cost tests count.
        self.requests: Counter[tuple[str, str]] = Counter()
        self._service_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def snapshot_path(self) -> Path | None:
        return self.data_dir / SNAPSHOT_FILE if self.data_dir else None

    def _app(self) -> Any:
        inner = DomainDispatcherApplication(create_backend_app)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            target = environ.get("HTTP_X_AMZ_TARGET")
            if target:  # JSON protocols (DynamoDB, SQS): "DynamoDB_20120810.PutItem", "AmazonSQS.SendMessage"
                service, _, operation = target.partition(".")
                self.requests[(service.split("_")[0], operation)] += 1
                if target in UNSUPPORTED:
                    return _unsupported(operation, start_response)
            self._lock.acquire_read()
            # moto's backends are not thread-safe (concurrent SQS receives deep-copy messages another thread
            # changes): one request at a time per service. Pollers here do not long-poll, so none holds it.
            service_lock = self._service_locks[_service_of(environ)]
            service_lock.acquire()
            try:
                # Materialise the body inside the lock so the request is complete before a snapshot runs.
                result = list(inner(environ, start_response))
                if environ.get("REQUEST_METHOD") != "GET":
                    self._dirty = True
                return result
            finally:
                service_lock.release()
                self._lock.release_read()

        return app

    def start(self) -> None:
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.restore()
        self._server = make_server(self.host, self.port, self._app(), threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_address[1]
        serve = threading.Thread(target=self._server.serve_forever, name="emulator", daemon=True)
        serve.start()
        self._threads.append(serve)
        if self.data_dir and self.snapshot_every > 0:
            saver = threading.Thread(target=self._snapshot_loop, name="emulator-snapshots", daemon=True)
            saver.start()
            self._threads.append(saver)

    def _snapshot_loop(self) -> None:
        while not self._stopping.wait(self.snapshot_every):
            if self._dirty:
                try:
                    self.snapshot()
                except Exception:
                    log.exception("emulator snapshot failed; will retry")

    def snapshot(self) -> None:
        """Write every persisted backend to disk, atomically (write a temp file, fsync, rename)."""
        path = self.snapshot_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire_write()
        try:
            self._dirty = False
            state = {service: dict(get_backend(service)) for service in PERSISTED_SERVICES}  # type: ignore[call-overload]
            data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            self._lock.release_write()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def restore(self) -> bool:
        path = self.snapshot_path
        if path is None or not path.exists():
            return False
        started = time.monotonic()
        with open(path, "rb") as fh:
            state = pickle.load(fh)
        for service, accounts in state.items():
            backend = get_backend(service)
            backend.clear()
            backend.update(accounts)
        log.info("restored emulator state from %s in %.2fs", path, time.monotonic() - started)
        return True

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.snapshot()
