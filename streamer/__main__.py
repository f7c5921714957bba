"""`python -m streamer`: the streamer container's process.

It runs the libtorrent session and the stream server (streamer.server.Streamer) and, unless STREAMER_WORKER is
false, the torrent-queue worker (streamer.worker.torrent_handler behind the same VPN gate). On SIGTERM or
SIGINT it stops gracefully: new requests get 503, the worker takes no new batch and lets the jobs it runs
finish, responses in flight get STREAMER_SHUTDOWN_GRACE_SECONDS, every torrent's resume data is saved, and the
process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from typing import Any

from streamer.config import StreamerConfig, get_config


def torrent_poller(gate: Any, config: StreamerConfig) -> Any:
    """A poller of the torrent queue delivering to the worker's handler, as a Lambda consumer would."""
    from chalicelib import aws
    from chalicelib.jobs.poller import QueuePoller
    from chalicelib.jobs.queues import get_queue
    from chalicelib.settings import get_settings
    from streamer.worker import torrent_handler

    settings = get_settings()
    spec = get_queue("torrent")
    return QueuePoller(
        spec,
        torrent_handler(gate),
        sqs=aws.sqs(),
        queue_url=aws.queue_url(spec.queue_name()),
        region=settings.aws_region,
        wait_seconds=config.queue_wait_seconds,
    )


def settle_heap() -> None:
    """Once started: collect what start-up left behind, then freeze what lives on (the imports, botocore's service
    models, the AWS clients: ~175,000 objects) out of the garbage collector's sight. A full collection with them
    in it held the interpreter lock for 100-140 ms (every stream, the seek lane and the alerts wait meanwhile), and
    a fresh streamer's first one came 0.3-1.3 s after start, while its first viewer was served; with them frozen
    it takes 6-13 ms (measured in the stream benchmark's streamer process)."""
    gc.collect()
    gc.freeze()


def main() -> int:
    logging.basicConfig(level=logging.WARNING)  # other libraries' (ours log JSON through powertools)
    from chalicelib.observability import logger as log
    from streamer.server import Streamer
    from streamer.vpn import VpnGate

    config = get_config()
    gate = VpnGate()
    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(signum: int, _frame: object) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            os._exit(128 + signum)  # the second signal: at once
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    streamer = Streamer(config, gate=gate).start()
    poller = torrent_poller(gate, config) if config.worker else None
    if poller is not None:
        poller.start()
    settle_heap()
    print(
        f"Projectionist streamer on {streamer.url} (torrents in {config.download_dir}; "
        f"torrent worker {'on' if poller else 'off'}). SIGTERM stops it gracefully, twice at once.",
        flush=True,
    )
    parent = int(os.environ.get("STREAMER_PARENT_PID") or 0)  # set by `make run`, which starts it as a child
    while not stop.wait(0.5):
        if parent and os.getppid() != parent:
            log.warning("the process that started this streamer is gone: stopping")
            break
    log.info("stopping: no new streams; the torrent jobs in flight finish; resume data is saved")
    streamer.drain()
    if poller is not None:
        poller.request_stop()
        poller.stop(wait=True)
    streamer.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
