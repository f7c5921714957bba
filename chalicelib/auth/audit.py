"""The audit log: who did what, when, from where, and how it went. Append-only, kept 90 days.

Events are written by the login, token and password flows, by the users API, and by the guard for every
mutating admin or feed request. Listing reads day partitions newest first, with optional filters.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from chalicelib.clock import utcnow
from chalicelib.errors import ValidationError
from chalicelib.models.auth import AuditEvent
from chalicelib.models.base import checked_start_key
from chalicelib.observability import logger

RETENTION = timedelta(days=90)
SENSITIVE = ("password", "token", "secret", "api_key", "authorization")


def _clean(details: dict[str, Any]) -> dict[str, Any]:
    """Never a secret in the log: keys that name one are dropped."""
    return {k: v for k, v in details.items() if not any(word in k.lower() for word in SENSITIVE)}


def record(
    action: str,
    *,
    actor: str | None,
    outcome: str = "success",
    target: str | None = None,
    ip: str | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEvent:
    now = now or utcnow()
    event_id = uuid.uuid4().hex
    event = AuditEvent(
        f"DAY#{now.date().isoformat()}",
        f"{now.isoformat()}#{event_id}",
        id=event_id,
        at=now,
        actor=actor,
        action=action,
        target=target,
        ip=ip,
        outcome=outcome,
        details=_clean(details or {}),
        expires_at=now + RETENTION,
    )
    event.save()
    logger.info("audit", extra={"audit": {"action": action, "actor": actor, "target": target, "outcome": outcome}})
    return event


def view(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "ip": event.ip,
        "outcome": event.outcome,
        "details": event.details or {},
    }


def _encode(day: str, last: dict[str, Any] | None) -> str:
    return base64.urlsafe_b64encode(json.dumps({"d": day, "k": last}).encode()).decode()


def _decode(cursor: str) -> tuple[str, dict[str, Any] | None]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        day = datetime.fromisoformat(data["d"]).date().isoformat()
        return day, checked_start_key(data["k"], {"pk", "sk"})
    except (ValueError, KeyError, TypeError):
        raise ValidationError("cursor is not one this API gave", details={"field": "cursor"}) from None


def listing(
    *,
    limit: int = 50,
    cursor: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Events newest first between `since` (default 90 days ago) and `until` (default now)."""
    now = now or utcnow()
    until = min(until or now, now)
    since = max(since or now - RETENTION, now - RETENTION)
    if since > until:
        return [], None
    day, last = _decode(cursor) if cursor else (until.date().isoformat(), None)
    if not since.date().isoformat() <= day <= until.date().isoformat():  # a cursor from another range, or forged
        raise ValidationError("cursor is not one this API returned for this range", details={"field": "cursor"})
    condition = None
    if action:
        condition = AuditEvent.action == action
    if actor:
        condition = (AuditEvent.actor == actor) if condition is None else condition & (AuditEvent.actor == actor)
    found: list[dict[str, Any]] = []
    current = datetime.fromisoformat(day).date()
    while current >= since.date():
        pk = f"DAY#{current.isoformat()}"
        range_condition = AuditEvent.sk.between(since.isoformat(), until.isoformat() + "~")
        query = AuditEvent.query(
            pk,
            range_condition,
            filter_condition=condition,
            scan_index_forward=False,
            last_evaluated_key=last,
            limit=limit - len(found),
        )
        for event in query:
            if event.expires_at is not None and event.expires_at <= now:
                continue
            found.append(view(event))
            if len(found) >= limit:
                key = query.last_evaluated_key
                return found, _encode(current.isoformat(), key) if key else _next_day(current, since)
        last = None
        current -= timedelta(days=1)
    return found, None


def _next_day(current: Any, since: datetime) -> str | None:
    previous = current - timedelta(days=1)
    return _encode(previous.isoformat(), None) if previous >= since.date() else None


def audit_request(request: Any, principal: Any, status: int) -> None:
    """An admin or feed change, whatever route made it: "POST /admin/tasks/{name}/toggle", its target, outcome."""
    try:
        body = request.json_body if request.raw_body else None
    except Exception:
        body = None
    details: dict[str, Any] = {"status": status}
    if isinstance(body, dict):
        details["body"] = {k: v for k, v in _clean(body).items() if isinstance(v, (str, int, float, bool))}
    params = request.uri_params or {}
    try:
        record(
            f"{request.method} {request.path}",
            actor=principal.username,
            target=",".join(f"{k}={v}" for k, v in sorted(params.items())) or None,
            ip=(request.context.get("identity") or {}).get("sourceIp"),
            outcome="success" if status < 400 else "failure",
            details=details,
        )
    except Exception:  # the change stands; a lost audit line is logged loudly rather than failing the request
        logger.exception("could not write the audit log", extra={"path": request.path})
