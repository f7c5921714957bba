"""Job platform cost: N no-op jobs through the local runtime (enqueue, poller, consumer, dispatch, run
records), next to a baseline measured in the same run: raw SQS send + receive + delete of the same number
of messages, batched by 10. Prints jobs per second and AWS API requests per job by type, medians of runs.

    python benchmarks/jobs.py [--jobs 500] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")

from chalice import Chalice

from chalicelib import aws
from chalicelib.jobs import enqueue
from chalicelib.jobs.consumer import register_consumers
from chalicelib.jobs.queues import QueueSpec
from chalicelib.jobs.registry import JobContext, job
from chalicelib.models.jobs import JobItem
from chalicelib.settings import get_settings
from infra.local.runtime import LocalRuntime, RuntimeOptions

SPEC = QueueSpec(
    name="maintenance", batch_size=10, max_concurrency=4, handler_timeout=10, visibility_timeout=60, max_receive_count=3
)


@job("bench.noop", queue="maintenance")
def noop(ctx: JobContext, n: int) -> None:
    return None


def succeeded() -> int:
    try:
        return int(JobItem.get("STATS#bench.noop", "TOTAL", consistent_read=True).succeeded or 0)
    except JobItem.DoesNotExist:
        return 0


def baseline(url: str, n: int) -> float:
    started = time.perf_counter()
    for start in range(0, n, 10):
        entries = [{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(min(10, n - start))]
        aws.sqs().send_message_batch(QueueUrl=url, Entries=entries)
    seen = 0
    while seen < n:
        got = aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if got:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
            aws.sqs().delete_message_batch(QueueUrl=url, Entries=entries)
            seen += len(got)
    return n / (time.perf_counter() - started)


def platform_run(runtime: LocalRuntime, n: int) -> float:
    done_before = succeeded()
    started = time.perf_counter()
    enqueue.send([enqueue.build("bench.noop", {"n": i}) for i in range(n)])
    runtime.start_pollers()
    while succeeded() < done_before + n:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    for poller in runtime.pollers:
        poller.stop()
    runtime.pollers.clear()
    return n / elapsed


def per_job(counts: Counter[tuple[str, str]], n: int, service: str) -> dict[str, float]:
    return {op: c / n for (svc, op), c in sorted(counts.items()) if svc == service}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    def app_factory() -> Chalice:
        app = Chalice(app_name="bench")
        register_consumers(app, [SPEC])
        return app

    runtime = LocalRuntime(
        RuntimeOptions(
            data_dir=None, emulator_port=0, serve_api=False, run_ticker=False, run_pollers=False,
            run_migrations=False, queues=(SPEC,), app_factory=app_factory, stage="bench",
        )
    )  # fmt: skip
    runtime.start()
    emulator = runtime.emulator
    assert emulator is not None
    try:
        url = aws.queue_url(SPEC.queue_name(get_settings()))
        base_rates: list[float] = []
        job_rates: list[float] = []
        base_counts: Counter[tuple[str, str]] = Counter()
        job_counts: Counter[tuple[str, str]] = Counter()
        for _ in range(args.runs):
            before = emulator.requests.copy()
            base_rates.append(baseline(url, args.jobs))
            base_counts += emulator.requests - before
            before = emulator.requests.copy()
            job_rates.append(platform_run(runtime, args.jobs))
            job_counts += emulator.requests - before
    finally:
        runtime.stop()
    n = args.jobs * args.runs
    # Counting polls: the platform's consumer reads stats in this loop too, so leave out GetItem from here.
    base_sqs = sum(per_job(base_counts, n, "AmazonSQS").values())
    job_sqs = sum(per_job(job_counts, n, "AmazonSQS").values())
    ddb = per_job(job_counts, n, "DynamoDB")
    writes = sum(v for op, v in ddb.items() if op in {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"})
    b, j = statistics.median(base_rates), statistics.median(job_rates)
    print(f"job platform, {args.jobs} no-op jobs x {args.runs} runs (batch 10, concurrency 4), medians")
    print(f"{'':34}{'jobs/s':>9}{'ratio':>8}{'SQS req/job':>13}")
    print(f"{'baseline: raw send+receive+delete':34}{b:>9.0f}{1.0:>8.2f}{base_sqs:>13.2f}")
    print(f"{'platform: enqueue..run record':34}{j:>9.0f}{j / b:>8.2f}{job_sqs:>13.2f}")
    print(f"SQS requests per job vs baseline: {job_sqs / base_sqs:.2f}x (target <= 1.5x)")
    print(f"DynamoDB writes per job: {writes:.2f} (target <= 2)")
    print("requests per job by type:")
    for (service, op), count in sorted(job_counts.items()):
        print(f"  {service:10} {op:24} {count / n:6.2f}")


if __name__ == "__main__":
    main()
