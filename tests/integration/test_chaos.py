"""Chaos: 2,000 jobs through worker processes that are killed at random mid-batch.

10% of the jobs fail transiently (1-3 attempts), 1% always fail (half with a permanent error, half until
their attempts run out), 5% of deliveries are duplicated, and a worker is SIGKILLed every 1-3 s while
batches are in flight. Afterwards: every poison job is in the DLQ with a failed run record; every other job
has succeeded, or (rarely: at most 1%) SQS dead-lettered it after max_receive_count deliveries whose workers
were all killed, without a failed run; every side effect happened exactly once; and no job is lost (enqueued =
succeeded + dead-lettered). Then the poison jobs' bug is fixed and a redrive from the DLQ completes them all.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chalicelib import aws
from chalicelib.health import queue_depth
from chalicelib.jobs import enqueue, redrive, runs
from chalicelib.jobs.queues import QueueSpec
from chalicelib.models.jobs import JobItem
from infra.local.runtime import ROOT, LocalRuntime
from tests.integration.chaos import EFFECTS, RETRY, SPEC
from tests.integration.platform_fixtures import platform, wait_for

__all__ = ["platform"]

JOBS = 2000
WORKERS = 3
SEED = int(os.environ.get("CHAOS_SEED", "20261123"))


class Workers:
    """Worker processes against the test's emulator, and a thread that kills one at random every 1-3 s."""

    def __init__(self, runtime: LocalRuntime, log_dir: Path, fixed_marker: Path) -> None:
        self.env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            CHAOS_EMULATOR_URL=runtime.emulator_url,
            CHAOS_STAGE=runtime.options.stage,
            CHAOS_SEED=str(SEED),
            CHAOS_FIXED=str(fixed_marker),
        )
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self.kills = 0
        self.rng = random.Random(SEED)
        self._stop_killing = threading.Event()
        self._killer: threading.Thread | None = None

    def spawn(self) -> None:
        self.started += 1
        log = open(self.log_dir / f"worker-{self.started}.log", "wb")  # noqa: SIM115  (the process owns it)
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.integration.chaos"], cwd=ROOT, env=self.env, stdout=log, stderr=log
            )
        )

    def start(self, count: int) -> None:
        for _ in range(count):
            self.spawn()

    def start_killing(self) -> None:
        self._killer = threading.Thread(target=self._kill_loop, name="chaos-killer", daemon=True)
        self._killer.start()

    def _kill_loop(self) -> None:
        while not self._stop_killing.wait(self.rng.uniform(1.0, 3.0)):
            alive = [p for p in self.procs if p.poll() is None]
            if alive:
                victim = self.rng.choice(alive)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                self.kills += 1
            self.spawn()

    def stop_killing(self) -> None:
        self._stop_killing.set()
        if self._killer is not None:
            self._killer.join()

    def stop(self) -> None:
        self.stop_killing()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.log_dir.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)
        return "\n".join(
            p.name + ":\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) for p in logs[-2:]
        )


def counters() -> tuple[int, int]:
    try:
        item = JobItem.get("STATS#chaos.work", "TOTAL", consistent_read=True)
    except JobItem.DoesNotExist:
        return 0, 0
    return int(item.succeeded or 0), int(item.failed or 0)


def pending(spec: QueueSpec) -> int:
    depth = queue_depth(spec)
    return depth["visible"] + depth["in_flight"] + depth["delayed"]


def dlq_job_ids() -> Counter[str]:
    """Job ids of every message in the DLQ (each read once, then made visible again for the redrive)."""
    url = aws.queue_url(SPEC.dlq_name())
    ids: Counter[str] = Counter()
    handles = []
    while True:
        got = aws.sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
        if not got:
            break
        for message in got:
            ids[json.loads(message["Body"])["id"]] += 1
            handles.append(message["ReceiptHandle"])
    for start in range(0, len(handles), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
            for i, h in enumerate(handles[start : start + 10])
        ]
        aws.sqs().change_message_visibility_batch(QueueUrl=url, Entries=entries)
    return ids


def final_runs() -> dict[str, dict[str, Any]]:
    """Each job's latest attempt (its run record), by job id, from the runs-by-job-name index."""
    latest: dict[str, dict[str, Any]] = {}
    for item in JobItem.by_gsi1.query("RUNS#chaos.work"):
        run = runs.to_dict(item)
        job_id = run["job_id"]
        if job_id not in latest or run["attempt"] > latest[job_id]["attempt"]:
            latest[job_id] = run
    return latest


def takeovers() -> int:
    """Attempts that a delivery took over after the worker running them was killed."""
    return sum(int(item.takeovers or 0) for item in JobItem.by_gsi1.query("RUNS#chaos.work"))


def effects() -> dict[str, int]:
    return {i.sk.removeprefix("EFFECT#"): int(i.total or 0) for i in JobItem.query(EFFECTS, consistent_read=True)}


def plan(rng: random.Random) -> list[dict[str, Any]]:
    """2,000 jobs: 20 poison (half permanent), 200 transient failing 1-3 attempts, the rest plain."""
    order = list(range(JOBS))
    rng.shuffle(order)
    poison, transient = set(order[: JOBS // 100]), set(order[JOBS // 100 : JOBS // 100 + JOBS // 10])
    jobs = []
    for n in range(JOBS):
        args: dict[str, Any] = {"n": n}
        if n in poison:
            args["poison"] = "permanent" if n % 2 else "transient"
        elif n in transient:
            args["fail_times"] = rng.randint(1, 3)
        jobs.append(args)
    return jobs


@pytest.mark.timeout(900)
def test_chaos_every_job_ends_once_and_nothing_is_lost(platform: Callable[..., LocalRuntime], tmp_path: Path) -> None:
    runtime = platform(SPEC, run_pollers=False)
    rng = random.Random(SEED)
    args = plan(rng)
    envelopes = [enqueue.build("chaos.work", a) for a in args]
    kind = {
        e.id: ("poison" if "poison" in a else "transient" if "fail_times" in a else "plain")
        for e, a in zip(envelopes, args, strict=True)
    }
    poison = {job_id for job_id, k in kind.items() if k == "poison"}
    workers = Workers(runtime, tmp_path, tmp_path / "fixed")
    assert runtime.emulator is not None
    requests_before = runtime.emulator.requests.copy()

    try:
        # Given 2,000 jobs on the queue and workers that are killed at random while they run them
        started = time.monotonic()
        enqueue.send(envelopes)
        workers.start(WORKERS)
        workers.start_killing()

        # When every job has ended (succeeded, or failed for good) or SQS has dead-lettered it: a message whose
        # max_receive_count deliveries all had their worker killed goes to the DLQ with its job not ended. That is
        # the platform's contract (the consumer's), and near the end, with few messages left, a kill every 1-3 s
        # finds the same ones in flight often enough to make it happen now and then.
        depth_due = 0.0

        def ended_or_drained() -> bool:  # the queue's depth only every few seconds: moto counts it under the
            nonlocal depth_due  # queue's lock, and asked 20 times a second it slowed the workers 2-3x
            if sum(counters()) >= JOBS:
                return True
            if time.monotonic() < depth_due:
                return False
            depth_due = time.monotonic() + 5
            return pending(SPEC) == 0

        try:
            wait_for(ended_or_drained, 600, f"{JOBS} jobs to end")
        except AssertionError:
            dead, latest = dlq_job_ids(), final_runs()
            unended = {j: r["status"] for j, r in latest.items() if r["status"] not in ("succeeded", "failed")}
            raise AssertionError(
                f"ended: {counters()}, queued: {pending(SPEC)}, in the DLQ but not poison: "
                f"{sorted(set(dead) - poison)}, latest runs not ended: {unended}, "
                f"never started: {sorted(set(kind) - set(latest))}\n{workers.log_tail()}"
            ) from None
        ended = time.monotonic()
        workers.stop_killing()
        wait_for(lambda: pending(SPEC) == 0, 120, "the queue to drain (late duplicates, killed batches)")

        # Then every poison job failed into the DLQ, every other job succeeded or (its deliveries all killed) is in
        # the DLQ without having failed, and those are few
        dead, latest = dlq_job_ids(), final_runs()
        crashed = set(dead) - poison
        done = {j for j, r in latest.items() if r["status"] == "succeeded"}
        assert {j for j, r in latest.items() if r["status"] == "failed"} == poison
        assert counters() == (len(done), len(poison))
        assert poison <= set(dead) and not done & poison
        assert len(crashed) <= JOBS // 100, f"{len(crashed)} jobs dead-lettered by their receive count"
        # A permanent error fails at its first attempt; the others after their last.
        assert {(r["attempt"], r["error_type"]) for j, r in latest.items() if j in poison} == {
            (1, "ValidationError"),
            (RETRY.max_attempts, "RuntimeError"),
        }
        # No job is lost: each one succeeded or is in the DLQ (a crashed one may have succeeded by a duplicate).
        assert done | set(dead) == set(kind)

        # ... each side effect happened exactly once, and only for a job that succeeded
        counted = effects()
        assert {j: n for j, n in counted.items() if n != 1} == {}
        assert set(counted) == done

        # ... and the chaos really happened: kills landed mid-job, and deliveries were duplicated.
        taken_over = takeovers()
        duplicates = (runtime.emulator.requests - requests_before)[("AmazonSQS", "SendMessage")]
        print(
            f"\nchaos: {JOBS} jobs ended in {ended - started:.0f}s with {workers.kills} workers killed,"
            f" {taken_over} attempts taken over, {duplicates} deliveries duplicated,"
            f" {len(crashed)} dead-lettered by their receive count"
        )
        assert workers.kills >= 5
        assert taken_over >= 1
        assert duplicates >= JOBS * 0.02

        # When the poison jobs' bug is fixed and the DLQ is redriven
        (tmp_path / "fixed").touch()
        moved = redrive.redrive(SPEC)
        assert moved["moved"] == sum(dead.values())

        # Then they complete (the dead-lettered ones too), each with its side effect once, and the DLQ is empty
        wait_for(lambda: counters()[0] == JOBS, 120, "the redriven jobs to succeed")
        wait_for(lambda: pending(SPEC) == 0, 120, "the queue to drain after the redrive")
        assert {j: r["status"] for j, r in final_runs().items() if r["status"] != "succeeded"} == {}
        assert effects() == dict.fromkeys(kind, 1)
        assert dlq_job_ids() == Counter()
    finally:
        workers.stop()
