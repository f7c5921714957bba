"""Health of the stack: can we reach DynamoDB and SQS, and how deep is every queue."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import __version__, aws
from chalicelib.errors import ServiceUnavailableError
from chalicelib.jobs.queues import QUEUES, QueueSpec
from chalicelib.models import all_models
from chalicelib.settings import Settings

_DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _attributes(queue_name: str) -> dict[str, int]:
    try:
        url = aws.queue_url(queue_name)
        attrs = aws.sqs().get_queue_attributes(QueueUrl=url, AttributeNames=_DEPTH_ATTRIBUTES)["Attributes"]
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailableError(f"cannot read queue {queue_name}: {_describe(exc)}") from exc
    return {name: int(attrs.get(name, 0)) for name in _DEPTH_ATTRIBUTES}


def queue_depth(spec: QueueSpec) -> dict[str, int]:
    main = _attributes(spec.queue_name())
    dlq = _attributes(spec.dlq_name())
    return {
        "visible": main["ApproximateNumberOfMessages"],
        "in_flight": main["ApproximateNumberOfMessagesNotVisible"],
        "delayed": main["ApproximateNumberOfMessagesDelayed"],
        "dlq": dlq["ApproximateNumberOfMessages"] + dlq["ApproximateNumberOfMessagesNotVisible"],
    }


def check_health(settings: Settings) -> tuple[bool, dict[str, Any]]:
    """Return (healthy, report). The report names every failing part under `failing`."""
    failing: dict[str, str] = {}
    for model in all_models():
        try:
            model.describe_table()
        except Exception as exc:  # PynamoDB wraps SDK errors in its own types; any failure counts
            failing.setdefault("dynamodb", f"{model.Meta.table_name}: {_describe(exc)}")
    queues: dict[str, Any] = {spec.name: None for spec in QUEUES}
    for spec in QUEUES:
        try:
            queues[spec.name] = queue_depth(spec)
        except ServiceUnavailableError as exc:
            failing["sqs"] = exc.message
            break  # one failure is enough to report; do not wait out every queue's timeouts
    report: dict[str, Any] = {
        "status": "ok" if not failing else "unavailable",
        "version": __version__,
        "stage": settings.stage,
        "scheduler_enabled": settings.enable_scheduler,
        "queues": queues,
    }
    if "dynamodb" not in failing:
        from chalicelib.sources.gate import last_recorded

        report["vpn_gate"] = last_recorded() or {"state": "unknown", "reason": "no torrent worker has checked yet"}
    if failing:
        report["failing"] = failing
    return not failing, report
