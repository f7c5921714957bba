"""Queue poller throughput: N no-op jobs through the local runtime's poller and the real consumer,
next to a baseline measured in the same run (raw SQS receive + delete of the same messages, batched by 10).

    python benchmarks/poller.py [--jobs 500] [--runs 3]

Prints medians of several runs and the ratio to the baseline. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")

from chalice import Chalice  # noqa: E402

from chalicelib import aws  # noqa: E402
from chalicelib.jobs.consumer import register_consumers  # noqa: E402
from chalicelib.jobs.envelope import Envelope  # noqa: E402
from chalicelib.jobs.queues import QueueSpec  # noqa: E402
from chalicelib.jobs.registry import JobContext, job  # noqa: E402
from chalicelib.settings import get_settings  # noqa: E402
from infra.local.runtime import LocalRuntime, RuntimeOptions  # noqa: E402

SPEC = QueueSpec(
    name="bench", batch_size=10, max_concurrency=4, handler_timeout=10, visibility_timeout=60, max_receive_count=3
)
done: list[int] = []


@job("bench.noop", queue="maintenance")
def noop(ctx: JobContext, n: int) -> None:
    done.append(n)


def send(url: str, n: int) -> None:
    bodies = [Envelope(name="bench.noop", args={"n": i}).to_body() for i in range(n)]
    for start in range(0, n, 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])]
        aws.sqs().send_message_batch(QueueUrl=url, Entries=entries)


def baseline(url: str, n: int) -> float:
    """Receive and delete n messages in batches of 10: the floor any poller pays."""
    send(url, n)
    started, seen = time.perf_counter(), 0
    while seen < n:
        messages = (
            aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        )
        if messages:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            aws.sqs().delete_message_batch(QueueUrl=url, Entries=entries)
            seen += len(messages)
    return n / (time.perf_counter() - started)


def through_poller(runtime: LocalRuntime, url: str, n: int) -> float:
    done.clear()
    send(url, n)
    started = time.perf_counter()
    runtime.start_pollers()
    while len(done) < n:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    for poller in runtime.pollers:
        poller.stop()
    runtime.pollers.clear()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    def app_factory() -> Chalice:
        app = Chalice(app_name="bench")
        register_consumers(app, [SPEC])
        return app

    options = RuntimeOptions(
        data_dir=None, emulator_port=0, serve_api=False, run_ticker=False, run_pollers=False,
        queues=(SPEC,), app_factory=app_factory, stage="bench",
    )  # fmt: skip
    runtime = LocalRuntime(options)
    runtime.start()
    try:
        url = aws.queue_url(SPEC.queue_name(get_settings()))
        base = [baseline(url, args.jobs) for _ in range(args.runs)]
        polled = [through_poller(runtime, url, args.jobs) for _ in range(args.runs)]
    finally:
        runtime.stop()
    b, p = statistics.median(base), statistics.median(polled)
    print(f"poller throughput, {args.jobs} no-op jobs, median of {args.runs} runs (batch 10, concurrency 4)")
    print(f"{'':32}{'jobs/s':>10}{'ratio':>8}")
    print(f"{'baseline: raw receive+delete':32}{b:>10.0f}{1.0:>8.2f}")
    print(f"{'local poller + consumer':32}{p:>10.0f}{p / b:>8.2f}")


if __name__ == "__main__":
    main()
