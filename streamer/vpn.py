"""The VPN gate: torrent-side network work runs only while the VPN check passes.

Settings: VPN_REQUIRED (off by default: a home server may have no VPN), VPN_INTERFACE (e.g. wg0 or tun0: it
must exist and not be down) and VPN_EXPECTED_EGRESS (the local address the system picks to reach the
outside must be this one, i.e. traffic leaves through the tunnel; found by connecting a UDP socket to
VPN_PROBE_ADDRESS, which sends nothing). The result is kept VPN_CHECK_INTERVAL seconds, and recorded in
DynamoDB when it changes (and at least every 10 minutes) so that /health, served elsewhere, can report it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chalicelib.clock import utcnow
from chalicelib.observability import logger
from chalicelib.settings import Settings, get_settings
from chalicelib.sources.gate import GateState, record

RECORD_EVERY = 600.0  # seconds


def interface_up(name: str, net: Path = Path("/sys/class/net")) -> tuple[bool, str]:
    names = {n for _, n in socket.if_nameindex()}
    if name not in names:
        return False, f"interface {name} does not exist"
    state = (net / name / "operstate").read_text().strip() if (net / name / "operstate").exists() else "unknown"
    if state == "down":
        return False, f"interface {name} is down"
    return True, f"interface {name} is {state}"  # tunnels report "unknown" while they work


def egress_address(probe: str) -> str:
    """The local address the system would send from to reach `probe` (connecting a UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((probe, 9))
        return str(sock.getsockname()[0])


class VpnGate:
    def __init__(self, settings: Settings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings  # None: the current settings at each check
        self.clock = clock
        self._lock = threading.Lock()
        self._state: GateState | None = None
        self._checked = -1e18
        self._recorded = -1e18

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    def _evaluate(self) -> GateState:
        s = self.settings
        now = utcnow()
        if not s.vpn_required:
            return GateState(True, "VPN not required (VPN_REQUIRED=false)", now)
        reasons = []
        if s.vpn_interface:
            ok, why = interface_up(s.vpn_interface)
            if not ok:
                return GateState(False, why, now)
            reasons.append(why)
        if s.vpn_expected_egress:
            try:
                address = egress_address(s.vpn_probe_address)
            except OSError as exc:
                return GateState(False, f"no route to {s.vpn_probe_address}: {exc}", now)
            if address != s.vpn_expected_egress:
                return GateState(False, f"traffic leaves from {address}, not {s.vpn_expected_egress}", now)
            reasons.append(f"traffic leaves from {address}")
        if not reasons:
            return GateState(False, "VPN_REQUIRED is set but neither VPN_INTERFACE nor VPN_EXPECTED_EGRESS", now)
        return GateState(True, "; ".join(reasons), now)

    def check(self) -> GateState:
        with self._lock:
            if self._state is None or self.clock() - self._checked >= self.settings.vpn_check_interval:
                previous, self._state = self._state, self._evaluate()
                self._checked = self.clock()
                changed = previous is None or previous.open != self._state.open
                if changed:
                    (logger.info if self._state.open else logger.warning)("VPN gate: %s", self._state.reason)
                if changed or self.clock() - self._recorded >= RECORD_EVERY:
                    record(self._state)
                    self._recorded = self.clock()
            return self._state
