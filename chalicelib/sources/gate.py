"""The VPN gate's state as the torrent worker last recorded it: written by the streamer (streamer/vpn.py),
read by /health, which runs elsewhere (a Lambda) and cannot check the container's network itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.models.jobs import JobItem


@dataclass(frozen=True)
class GateState:
    open: bool
    reason: str
    checked_at: datetime


def _key() -> tuple[str, str]:
    return "VPN#gate", "GATE"


def record(state: GateState) -> None:
    JobItem(*_key()).update(
        actions=[
            JobItem.kind.set("vpn_gate"),
            JobItem.status.set("open" if state.open else "closed"),
            JobItem.updated_at.set(state.checked_at),
            JobItem.data.set({"reason": state.reason}),
        ]
    )


def last_recorded() -> dict[str, Any] | None:
    """The gate's last recorded state (for /health), or None when no torrent worker has run."""
    try:
        item = JobItem.get(*_key())
    except JobItem.DoesNotExist:
        return None
    return {
        "state": item.status,
        "reason": (item.data or {}).get("reason"),
        "checked_at": item.updated_at.isoformat() if item.updated_at else None,
    }
