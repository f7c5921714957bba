"""A queue poller that delivers SQS batches to a handler the way Lambda's event source mapping does.

The local runtime runs one per Lambda-consumed queue (invoking the very same Chalice handler), and the
streamer container runs one for the `torrent` queue. It honours the queue spec: at most `batch_size`
records per invocation, a batching window, never more than `max_concurrency` handlers in flight, the
visibility timeout (set on the queue), the handler's returned `batchItemFailures` (only the successful
records are deleted), and a handler error or an invalid response fails the whole batch, as on Lambda.
Failed records reappear after the visibility timeout; SQS moves them to the DLQ after maxReceiveCount.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from chalicelib.jobs.queues import QueueSpec

log = logging.getLogger("projectionist.poller")

Handler = Callable[[dict[str, Any], Any], Any]


class LambdaContext:
    """The parts of Lambda's context object a handler uses, with a real deadline."""

    def __init__(self, function_name: str, timeout: float, region: str = "us-east-1") -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{region}:123456789012:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = self.aws_request_id
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _lambda_message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    converted = {}
    for name, value in attributes.items():
        binary = value.get("BinaryValue")
        converted[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode() if binary is not None else None,
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": [base64.b64encode(b).decode() for b in value.get("BinaryListValues", [])],
            "dataType": value["DataType"],
        }
    return converted


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event Lambda builds from received SQS messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes", {})),
                "messageAttributes": _lambda_message_attributes(m.get("MessageAttributes", {})),
                "md5OfBody": m["MD5OfBody"],
                "md5OfMessageAttributes": m.get("MD5OfMessageAttributes"),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


@dataclass
class PollerStats:
    batches: int = 0
    records: int = 0
    deleted: int = 0
    failed: int = 0
    handler_errors: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class QueuePoller:
    def __init__(
        self,
        spec: QueueSpec,
        handler: Handler,
        *,
        sqs: Any,
        queue_url: str,
        region: str = "us-east-1",
        wait_seconds: int = 1,
        function_name: str | None = None,
        idle_sleep: float = 0.1,
    ) -> None:
        self.spec = spec
        self.handler = handler
        self.sqs = sqs
        self.queue_url = queue_url
        self.region = region
        # Short long-polls keep shutdown prompt; Lambda's pollers also poll continuously.
        self.wait_seconds = wait_seconds
        self.idle_sleep = idle_sleep
        self.function_name = function_name or spec.consumer_name
        self.stats = PollerStats()
        self._slots = threading.BoundedSemaphore(spec.max_concurrency)
        self._executor = ThreadPoolExecutor(max_workers=spec.max_concurrency, thread_name_prefix=f"q-{spec.name}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue_arn: str | None = None

    @property
    def queue_arn(self) -> str:
        if self._queue_arn is None:
            attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
            self._queue_arn = attrs["Attributes"]["QueueArn"]
        return self._queue_arn

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"poll-{self.spec.name}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Stop receiving new batches (returns at once)."""
        self._stop.set()

    def stop(self, wait: bool = True) -> None:
        """Stop receiving; with `wait`, let the handlers in flight finish first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._executor.shutdown(wait=wait)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.2):
                continue
            try:
                messages = self._receive_batch()
            except Exception:
                self._slots.release()
                log.exception("receive from %s failed; retrying", self.spec.name)
                self._stop.wait(1.0)
                continue
            if not messages:
                self._slots.release()
                if not self.wait_seconds:
                    self._stop.wait(self.idle_sleep)  # no long poll: back off a little on an empty queue
                continue
            self._executor.submit(self._run_batch, messages)

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Receive up to batch_size messages, waiting up to the batching window to fill the batch."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.spec.max_batching_window
        while len(messages) < self.spec.batch_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            wait = self.wait_seconds if not messages else max(0, min(self.wait_seconds, int(remaining)))
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.spec.batch_size - len(messages),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got = response.get("Messages", [])
            messages.extend(got)
            if not got and messages:
                break
            if not messages or time.monotonic() >= deadline:
                break
        return messages

    def _run_batch(self, messages: list[dict[str, Any]]) -> None:
        stats = self.stats
        with stats._lock:
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            stats.batches += 1
            stats.records += len(messages)
        try:
            self._deliver(messages)
        finally:
            with stats._lock:
                stats.in_flight -= 1
            self._slots.release()

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        event = sqs_event(messages, self.queue_arn, self.region)
        context = LambdaContext(self.function_name, self.spec.handler_timeout, self.region)
        try:
            response = self.handler(event, context)
        except Exception:
            log.exception("handler %s failed; the whole batch of %d returns", self.function_name, len(messages))
            with self.stats._lock:
                self.stats.handler_errors += 1
                self.stats.failed += len(messages)
            return
        failed_ids = self._failed_ids(response, messages)
        if failed_ids is None:  # an invalid response fails the whole batch, as on Lambda
            with self.stats._lock:
                self.stats.failed += len(messages)
            return
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        self._delete(done)
        with self.stats._lock:
            self.stats.deleted += len(done)
            self.stats.failed += len(messages) - len(done)

    def _failed_ids(self, response: Any, messages: list[dict[str, Any]]) -> set[str] | None:
        if response is None:
            return set()
        if not isinstance(response, dict):
            log.error("handler %s returned %r, not a dict", self.function_name, type(response).__name__)
            return None
        failures = response.get("batchItemFailures", [])
        known = {m["MessageId"] for m in messages}
        ids = set()
        for failure in failures if isinstance(failures, list) else [None]:
            ident = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not ident or ident not in known:
                log.error("handler %s returned an invalid batchItemFailures entry %r", self.function_name, failure)
                return None
            ids.add(ident)
        return ids

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
            result = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            for failure in result.get("Failed", []):
                log.error("could not delete a message from %s: %s", self.spec.name, failure)
