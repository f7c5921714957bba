"""Shared fixtures. Tests never reach AWS: credentials are fake and every endpoint is on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib import aws
from chalicelib.settings import Settings, get_settings, reset_settings

ROOT = Path(__file__).resolve().parents[1]

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Argon2id at its cheapest for the suite's many sign-ins (the defaults cost ~0.1 s a hash); a test of
        # the hash upgrade on login changes them.
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "8192",
        "ARGON2_PARALLELISM": "1",
    }
)
for _key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS", "STAGE"):
    os.environ.pop(_key, None)


# Files that take minutes go first, so that the other pytest-xdist worker gets through the rest meanwhile (the
# scheduler hands out whole files in collection order, with --no-loadscope-reorder: by default it puts the files
# with most tests first, and the chaos test's file, one test, alone made the end of a run 4 minutes longer).
SLOW_FIRST = ("tests/integration/test_chaos.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in SLOW_FIRST)  # stable: the rest keeps its order


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique_stage() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def restore_environ() -> Iterator[None]:
    """Put os.environ back exactly as it was, and forget settings and clients built from it."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    reset_settings()
    aws.reset()


@pytest.fixture(scope="session")
def emulator() -> Iterator[object]:
    from infra.local.emulator import Emulator

    emu = Emulator(None, port=0)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def aws_env(emulator: object, restore_environ: None) -> Settings:
    """Settings pointing at the shared in-process emulator, with a stage of the test's own."""
    os.environ["AWS_ENDPOINT_URL"] = emulator.url  # type: ignore[attr-defined]
    os.environ["STAGE"] = unique_stage()
    reset_settings()
    aws.reset()
    return get_settings()
