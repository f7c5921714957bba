"""The SQS consumer every Lambda-consumed queue runs.

Records are processed one by one with powertools' batch utility, which returns `batchItemFailures`, so
one bad record never fails or replays its batch: only the failed records come back after the visibility
timeout, and SQS moves a record to the queue's DLQ after maxReceiveCount receives. A record that is not a
job envelope at all goes to the DLQ at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.errors import InvalidEnvelopeError, UnknownJobError
from chalicelib.jobs.dispatch import dispatch
from chalicelib.jobs.enqueue import send_to_queue
from chalicelib.jobs.envelope import Envelope
from chalicelib.jobs.queues import QueueSpec, lambda_queues
from chalicelib.jobs.registry import Registry, registry
from chalicelib.observability import logger

Dispatcher = Callable[..., Any]
DeadLetter = Callable[[str], None]


def register_consumers(
    app: Any,
    specs: Iterable[QueueSpec] | None = None,
    namespace: dict[str, Any] | None = None,
    dispatcher: Dispatcher = dispatch,
) -> dict[str, Any]:
    """Register one `@app.on_sqs_message` consumer per queue spec on a Chalice app.

    Chalice names a Lambda handler `app.<function name>`, so each consumer gets its own name and, when a
    `namespace` (the app module's globals) is given, its own module attribute.
    """
    registered = {}
    for spec in lambda_queues() if specs is None else [s for s in specs if s.consumer == "lambda"]:

        def handler(event: Any, _spec: QueueSpec = spec) -> dict[str, Any]:
            return consume(event.to_dict(), event.context, _spec, dispatcher=dispatcher)

        handler.__name__ = handler.__qualname__ = spec.consumer_name
        registered[spec.consumer_name] = app.on_sqs_message(
            queue=spec.queue_name(),
            batch_size=spec.batch_size,
            name=spec.consumer_name,
            maximum_batching_window_in_seconds=spec.max_batching_window,
            maximum_concurrency=spec.max_concurrency,
        )(handler)
    if namespace is not None:
        namespace.update(registered)
    return registered


def consume(
    event: dict[str, Any],
    context: Any,
    spec: QueueSpec,
    jobs: Registry = registry,
    dispatcher: Dispatcher = dispatch,
    dead_letter: DeadLetter | None = None,
) -> dict[str, Any]:
    """Handle one SQS event; return `{"batchItemFailures": [...]}` naming the records to redeliver."""
    to_dlq = dead_letter or (lambda body: send_to_queue(spec.name, [body], dlq=True))

    def handle(record: SQSRecord) -> Any:
        return handle_record(record, context, jobs, dispatcher, to_dlq)

    # A FIFO queue must stop at the first failure so later messages of the group keep their order.
    processor: BatchProcessor = (
        SqsFifoPartialProcessor()
        if spec.fifo
        else BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    )
    return dict(process_partial_response(event=event, record_handler=handle, processor=processor, context=context))


def handle_record(
    record: SQSRecord,
    context: Any,
    jobs: Registry = registry,
    dispatcher: Dispatcher = dispatch,
    dead_letter: DeadLetter | None = None,
) -> Any:
    receive_count = record.attributes.approximate_receive_count
    try:
        envelope = Envelope.parse(record.body)
    except InvalidEnvelopeError as exc:
        # Not a job at all: no delivery will ever read it, so it goes to the DLQ at once (where it can be
        # inspected), instead of being received maxReceiveCount times first.
        logger.error(
            "rejected SQS record, moved to the DLQ: %s",
            exc.message,
            extra={"message_id": record.message_id, "receive_count": receive_count, "error_code": exc.code},
        )
        if dead_letter is None:
            raise
        dead_letter(record.body)
        return {"rejected": exc.code}
    try:
        jobs.get(envelope.name)
    except UnknownJobError as exc:
        # A job this code does not know is most likely one that newer code sent while a deploy is rolling
        # out: reported failed, it comes back after the visibility timeout (to the new code), and only after
        # maxReceiveCount receives does SQS move it to the DLQ.
        logger.error(
            "rejected SQS record: %s",
            exc.message,
            extra={"message_id": record.message_id, "receive_count": receive_count, "error_code": exc.code},
        )
        raise
    # Per thread (the local runtime runs several batches at once in one process), removed after the record.
    keys = {
        "job_id": envelope.id,
        "job_name": envelope.name,
        "attempt": envelope.attempt,
        "correlation_id": envelope.correlation_id,
    }
    logger.thread_safe_append_keys(**keys)
    try:
        return dispatcher(envelope, context, jobs=jobs)
    finally:
        logger.thread_safe_remove_keys(keys)
