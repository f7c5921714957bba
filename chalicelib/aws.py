"""AWS clients, built lazily (never at import time) and honouring AWS_ENDPOINT_URL.

Nothing here knows whether the endpoint is AWS, the embedded emulator or LocalStack: only the settings differ.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.settings import get_settings

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_queue_urls: dict[str, str] = {}


def client(service: str) -> Any:
    """A cached boto3 client for `service` ("sqs", "s3", "dynamodb", "scheduler", ...)."""
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        if service not in _clients:
            settings = get_settings()
            config = Config(
                connect_timeout=settings.aws_connect_timeout,
                read_timeout=settings.aws_read_timeout,
                retries={"mode": "standard", "max_attempts": settings.aws_max_attempts},
                max_pool_connections=50,
            )
            _clients[service] = boto3.session.Session().client(
                service,
                region_name=settings.aws_region,
                endpoint_url=settings.endpoint_url(service),
                config=config,
            )
        return _clients[service]


def sqs() -> Any:
    return client("sqs")


def s3() -> Any:
    return client("s3")


def dynamodb() -> Any:
    return client("dynamodb")


def queue_url(queue_name: str) -> str:
    """The URL of a queue by its physical name, looked up once."""
    url = _queue_urls.get(queue_name)
    if url is None:
        url = sqs().get_queue_url(QueueName=queue_name)["QueueUrl"]
        _queue_urls[queue_name] = url
    return url


def reset() -> None:
    """Drop every cached client and model connection (after the settings changed)."""
    from chalicelib.models import all_models
    from chalicelib.models.base import reset_connection

    with _lock:
        _clients.clear()
        _queue_urls.clear()
    for model in all_models():
        model._connection = None
    reset_connection()
