"""The torrent worker: the job platform's consumer for the `torrent` queue, behind the VPN gate.

While the gate is closed, every job it receives is put back on the queue with a delay (never dropped, never
run); once it opens they run as usual. Under `make run` the local runtime polls the queue with this handler;
in the streamer container `python -m streamer.worker` does (the container issue adds the streaming server).
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from chalicelib.jobs import enqueue
from chalicelib.jobs.consumer import consume
from chalicelib.jobs.dispatch import dispatch
from chalicelib.jobs.envelope import Envelope
from chalicelib.jobs.queues import get_queue
from chalicelib.sources import health, metadata  # noqa: F401  (register the torrent-side jobs)
from streamer.vpn import VpnGate


def gated_dispatcher(gate: VpnGate) -> Any:
    def dispatcher(envelope: Envelope, context: Any, *, jobs: Any) -> Any:
        state = gate.check()
        if not state.open:
            enqueue.send([envelope], delay=gate.settings.vpn_retry_delay, jobs=jobs)
            return "held back by the VPN gate"
        return dispatch(envelope, context, jobs=jobs)

    return dispatcher


def torrent_handler(gate: VpnGate | None = None) -> Any:
    """An SQS handler (event, context) for the torrent queue, as a Lambda consumer would be."""
    gate = gate or VpnGate()
    gate.check()  # at start, so /health reports the gate before the first job comes
    spec = get_queue("torrent")
    dispatcher = gated_dispatcher(gate)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return consume(event, context, spec, dispatcher=dispatcher)

    return handler


def main() -> int:
    """Poll the torrent queue until SIGTERM/SIGINT (handlers in flight finish first)."""
    from chalicelib import aws
    from chalicelib.jobs.poller import QueuePoller
    from chalicelib.settings import get_settings

    settings = get_settings()
    spec = get_queue("torrent")
    poller = QueuePoller(
        spec, torrent_handler(), sqs=aws.sqs(), queue_url=aws.queue_url(spec.queue_name()), region=settings.aws_region
    )
    stopping = {"signals": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signals"] += 1
        poller.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    poller.start()
    while stopping["signals"] == 0:
        signal.pause()
    poller.stop(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
