"""The chaos test's job and its worker process.

A worker is a local runtime attached to the test's emulator (`RuntimeOptions.emulator_url`) that polls one
queue with the real consumer and dispatcher, as a Lambda would; the test kills workers with SIGKILL while
they are in the middle of batches and starts new ones. A worker also duplicates a share of the deliveries
it receives (sends the same envelope again, as SQS's at-least-once delivery may), so every job must be
recognised when it arrives twice.

    python -m tests.integration.chaos     # started by test_chaos.py with CHAOS_* in its environment
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from typing import Any, Literal

from chalice import Chalice

from chalicelib import aws
from chalicelib.errors import ValidationError
from chalicelib.jobs.consumer import register_consumers
from chalicelib.jobs.dispatch import dispatch
from chalicelib.jobs.envelope import Envelope
from chalicelib.jobs.queues import QueueSpec
from chalicelib.jobs.registry import JobContext, job
from chalicelib.jobs.retry import Retry
from chalicelib.models.jobs import JobItem

# A real queue name (jobs resolve their queue by name), with timings that make redelivery take seconds: a
# killed batch comes back after the 18 s visibility timeout, and a killed attempt's run lease (its 2 s
# timeout plus a margin) has run out by then, so the next delivery takes the attempt over.
SPEC = QueueSpec(
    name="sources", batch_size=10, max_concurrency=2, handler_timeout=3, visibility_timeout=18, max_receive_count=6
)
RETRY = Retry(max_attempts=5, base=0.5, cap=2.0)
EFFECTS = "CHAOS"


def fixed() -> bool:
    """Whether the poison jobs' bug has been fixed (the test creates this file before its redrive)."""
    marker = os.environ.get("CHAOS_FIXED")
    return bool(marker) and os.path.exists(marker)  # type: ignore[arg-type]


@job("chaos.work", queue="sources", retry=RETRY, timeout=2)
def work(
    ctx: JobContext, n: int, fail_times: int = 0, poison: Literal["", "permanent", "transient"] = ""
) -> dict[str, int]:
    time.sleep(random.uniform(0, 0.02))
    # The job's side effect, committed with its success: counted so the test can tell it happened once.
    ctx.add_write(
        lambda tx: tx.update(
            JobItem(EFFECTS, f"EFFECT#{ctx.job_id}"), actions=[JobItem.kind.set("chaos"), JobItem.total.add(1)]
        )
    )
    if poison and not fixed():
        if poison == "permanent":
            raise ValidationError(f"job {n}: bad data, will never work")
        raise RuntimeError(f"job {n}: always fails")
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"job {n}: attempt {ctx.attempt} fails")
    return {"n": n, "attempt": ctx.attempt}


def duplicating_dispatcher(rate: float, rng: random.Random) -> Any:
    """Dispatch, after sending a copy of `rate` of the deliveries back to the queue (0-2 s later)."""

    def dispatcher(envelope: Envelope, context: Any, *, jobs: Any) -> Any:
        if rng.random() < rate:
            aws.sqs().send_message(
                QueueUrl=aws.queue_url(SPEC.queue_name()),
                MessageBody=envelope.to_body(),
                DelaySeconds=rng.randint(0, 2),
            )
        return dispatch(envelope, context, jobs=jobs)

    return dispatcher


def main() -> int:
    from infra.local.runtime import LocalRuntime, RuntimeOptions

    env = os.environ
    rng = random.Random(f"{env['CHAOS_SEED']}-{os.getpid()}")
    dispatcher = duplicating_dispatcher(float(env.get("CHAOS_DUPLICATE_RATE", "0.05")), rng)

    def app_factory() -> Chalice:
        app = Chalice(app_name="chaos-worker")
        register_consumers(app, [SPEC], dispatcher=dispatcher)
        return app

    runtime = LocalRuntime(
        RuntimeOptions(
            emulator_url=env["CHAOS_EMULATOR_URL"],
            stage=env["CHAOS_STAGE"],
            data_dir=None,
            serve_api=False,
            run_ticker=False,
            run_migrations=False,
            queues=(SPEC,),
            app_factory=app_factory,
        )
    )
    signal.signal(signal.SIGTERM, lambda *_: runtime.request_stop())
    runtime.start()
    print("ready", flush=True)
    runtime.wait()
    runtime.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
