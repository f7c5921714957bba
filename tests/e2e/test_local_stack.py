"""The local runtime as a user runs it: started as a subprocess, stopped with Ctrl-C, started again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.jobs.queues import get_queue
from chalicelib.settings import Settings
from tests.conftest import ROOT, free_port
from tests.e2e.runner import Process

pytestmark = pytest.mark.e2e


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STAGE", "PYTEST", "TMDB_"))}
    env["SAMPLE_TMDB_PORT"] = str(free_port())  # never the default ones, which a `make run` may hold
    env["STREAMER_PORT"] = str(free_port())
    env.update(extra)
    return env


def aws_client(service: str, endpoint: str) -> object:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def test_a_restart_keeps_a_queued_message_a_table_item_and_an_object(tmp_path: Path) -> None:
    port, emulator_port = free_port(), free_port()
    args = [sys.executable, "-m", "infra.local", "--port", str(port), "--emulator-port", str(emulator_port)]
    args += ["--data-dir", str(tmp_path / "data")]
    endpoint = f"http://127.0.0.1:{emulator_port}"
    settings = Settings(stage="dev")

    # Given a running stack with a message on a dead-letter queue, a table item and an object,
    first = Process(args, ROOT, clean_env(), tmp_path / "first.log")
    first.wait_for_health(f"http://127.0.0.1:{port}", timeout=60)
    sqs, ddb, s3 = (aws_client(s, endpoint) for s in ("sqs", "dynamodb", "s3"))
    # (a dead-letter queue: nothing polls those)
    queue_url = sqs.get_queue_url(QueueName=get_queue("torrent").dlq_name(settings))["QueueUrl"]  # type: ignore[attr-defined]
    sqs.send_message(QueueUrl=queue_url, MessageBody="survives a restart")  # type: ignore[attr-defined]
    table = settings.resource_name("jobs")
    ddb.put_item(TableName=table, Item={"pk": {"S": "restart"}, "sk": {"S": "item"}, "kind": {"S": "test"}})  # type: ignore[attr-defined]
    s3.put_object(Bucket=settings.bucket_name, Key="blob.bin", Body=b"\x00" * 4096)  # type: ignore[attr-defined]

    # when it is stopped with Ctrl-C and started again,
    assert first.interrupt() == 0
    assert "stopped; state saved" in first.output()
    second = Process(args, ROOT, clean_env(), tmp_path / "second.log")
    try:
        _, health = second.wait_for_health(f"http://127.0.0.1:{port}", timeout=60)
        # then the message, the item and the object are all still there.
        assert health["queues"]["torrent"]["dlq"] == 1
        sqs, ddb, s3 = (aws_client(s, endpoint) for s in ("sqs", "dynamodb", "s3"))
        messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]  # type: ignore[attr-defined]
        assert [m["Body"] for m in messages] == ["survives a restart"]
        item = ddb.get_item(TableName=table, Key={"pk": {"S": "restart"}, "sk": {"S": "item"}})  # type: ignore[attr-defined]
        assert item["Item"]["kind"] == {"S": "test"}
        body = s3.get_object(Bucket=settings.bucket_name, Key="blob.bin")["Body"].read()  # type: ignore[attr-defined]
        assert body == b"\x00" * 4096
    finally:
        assert second.interrupt() == 0


# make run's static admin token: it signs in until the first admin account is made (then `POST /auth/login`).
ADMIN = {"Authorization": "Bearer local-admin-token"}


def get_json(url: str) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=ADMIN), timeout=10) as response:
        return json.loads(response.read())


def test_the_banner_says_what_runs_where_and_the_sample_tmdb_fills_the_catalog(tmp_path: Path) -> None:
    port, emulator_port = free_port(), free_port()
    args = [sys.executable, "-m", "infra.local", "--port", str(port), "--emulator-port", str(emulator_port)]
    args += ["--data-dir", str(tmp_path / "data")]
    env = clean_env()
    proc = Process(args, ROOT, env, tmp_path / "run.log")
    try:
        proc.wait_for_health(f"http://127.0.0.1:{port}", timeout=60)
        out = proc.output()
        assert f"http://127.0.0.1:{port}" in out
        assert f"http://127.0.0.1:{emulator_port}" in out
        assert str(tmp_path / "data") in out
        # Without TMDB credentials the sample TMDB serves, and the banner says so;
        assert f"TMDB          http://127.0.0.1:{env['SAMPLE_TMDB_PORT']}  (the sample TMDB" in out
        # the first start fills the catalog from it (a one-time migration), lists and members synced.
        api = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            lists = get_json(f"{api}/lists")["lists"]
            if len(lists) == 5 and all(item["count"] for item in lists):
                break
            time.sleep(1)
        assert [item["count"] > 0 for item in lists] == [True] * 5, lists
        page = get_json(f"{api}/lists/popular-movies?limit=5")
        assert len(page["items"]) == 5 and page["next_cursor"]
        movie = get_json(f"{api}/movies/{page['items'][0]['id']}?language=fr")
        assert movie["title"] and movie["language"] in ("fr", "en")

        # The first admin, from the CLI `make admin` runs (against this stack's emulator): the static token retires.
        cli = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{emulator_port}", "STAGE": "dev",
               "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_REGION": "us-east-1"}  # fmt: skip
        made = subprocess.run(
            [sys.executable, "-m", "chalicelib.auth.cli", "create-admin", "alice", "--password-stdin"],
            input="Long-Passphrase-For-Admin-1\n", env=cli, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert made.returncode == 0 and "admin 'alice' created" in made.stdout, made.stderr
        weak = subprocess.run(
            [sys.executable, "-m", "chalicelib.auth.cli", "create-admin", "bob12", "--password-stdin"],
            input="password123\n", env=cli, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert weak.returncode == 2 and "too easy to guess" in weak.stderr
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(f"{api}/lists")
        assert refused.value.code == 401
        login = {"username": "alice", "password": "Long-Passphrase-For-Admin-1"}
        status, pair = call("POST", f"{api}/auth/login", login)
        assert status == 200 and pair["user"]["role"] == "admin"
    finally:
        assert proc.interrupt() == 0


def checkout_copy(dest: Path) -> None:
    """The files a fresh clone of this working tree would have: tracked and new, never ignored ones."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def test_make_run_on_a_fresh_checkout_serves_health_within_60_seconds(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout_copy(checkout)
    assert not (checkout / ".venv").exists() and not (checkout / ".data").exists()
    port, emulator_port = free_port(), free_port()
    # The suite's virtualenv stands in for the one `make run` would create: installing it is `make test`'s
    # first step, and what this test measures is the start of the stack from a checkout.
    venv = Path(sys.prefix)
    args = ["make", "run", f"VENV={venv}"]
    env = clean_env(PORT=str(port), EMULATOR_PORT=str(emulator_port))

    proc = Process(args, checkout, env, tmp_path / "make-run.log")
    try:
        seconds, health = proc.wait_for_health(f"http://127.0.0.1:{port}", timeout=60)
        assert health["status"] == "ok" and health["stage"] == "dev"
        assert (checkout / ".data").is_dir()
    finally:
        proc.interrupt()  # make itself reports the interrupt; the runtime below it must stop cleanly
    assert "stopped; state saved" in proc.output()
    assert (checkout / ".data" / "emulator.pickle").is_file()
    print(f"make run served /health in {seconds:.1f}s")


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **ADMIN}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_make_run_plays_the_sample_video_from_the_catalog_with_nothing_configured(tmp_path: Path) -> None:
    port, emulator_port = free_port(), free_port()
    data = tmp_path / "data"
    args = [sys.executable, "-m", "infra.local", "--port", str(port), "--emulator-port", str(emulator_port)]
    args += ["--data-dir", str(data)]
    env = clean_env()
    proc = Process(args, ROOT, env, tmp_path / "run.log")
    api = f"http://127.0.0.1:{port}"
    big_buck_bunny = 10378
    try:
        proc.wait_for_health(api, timeout=90)
        streamer = f"http://127.0.0.1:{env['STREAMER_PORT']}"
        assert f"streamer      {streamer}" in proc.output()
        [video] = (data / "sample-media").glob("*.mp4")
        expected = video.read_bytes()
        assert expected[4:8] == b"ftyp" and b"moov" in expected[:4096]  # an MP4 with its index at the front

        def until(what: str, seconds: float, check: Any) -> Any:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                found = check()
                if found:
                    return found
                time.sleep(0.5)
            raise AssertionError(f"{what} within {seconds}s; log:\n{proc.output()[-3000:]}")

        # The catalog fills from the sample TMDB; a search finds the sample YTS's torrent of the seeded video,
        until("Big Buck Bunny in the catalog", 90, lambda: call("GET", f"{api}/movies/{big_buck_bunny}")[0] == 200)
        status, _ = call("POST", f"{api}/movies/{big_buck_bunny}/sources/search")
        assert status == 202

        def seeded() -> Any:
            sources = call("GET", f"{api}/movies/{big_buck_bunny}/sources")[1]["sources"]
            return next((s for s in sources if s["size_bytes"] == len(expected) and s["files"]), None)

        # whose metadata the streamer's worker resolves from the seeder (files recorded),
        source = until("the sample's source with its files", 90, seeded)
        assert source["files"] == [{"path": video.name, "size": len(expected)}]
        # and POST /streams plays it through the streamer: every byte, and a range.
        status, answer = call("POST", f"{api}/streams", {"movie_id": big_buck_bunny})
        assert status == 201, answer
        assert answer["source"]["infohash"] == source["infohash"]
        assert answer["stream_url"].startswith(f"{streamer}/stream/")
        with urllib.request.urlopen(answer["stream_url"], timeout=60) as response:
            assert response.headers["Content-Type"] == "video/mp4"
            assert response.read() == expected
        ranged = urllib.request.Request(answer["stream_url"], headers={"Range": "bytes=1000-1999"})
        with urllib.request.urlopen(ranged, timeout=60) as response:
            assert response.status == 206 and response.read() == expected[1000:2000]
        until("the status to say all of it is here", 15, lambda: call("GET", answer["status_url"])[1]["progress"] == 1)
    finally:
        assert proc.interrupt() == 0
    out = proc.output()
    assert "stopped; state saved" in out
    assert list((data / "torrents" / ".resume").glob("*.fastresume"))  # the streamer stopped gracefully
