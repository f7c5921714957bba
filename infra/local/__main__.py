"""`python -m infra.local`: start the local runtime (what `make run` does)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from infra.local.runtime import ROOT, LocalRuntime, RuntimeOptions


def parse_args(argv: list[str]) -> RuntimeOptions:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m infra.local", description="Run Projectionist on this machine.")
    parser.add_argument("--host", default=env.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("PORT", "8000")), help="HTTP API port")
    parser.add_argument("--emulator-port", type=int, default=int(env.get("EMULATOR_PORT", "8001")))
    parser.add_argument(
        "--sample-tmdb-port",
        type=int,
        default=int(env.get("SAMPLE_TMDB_PORT", "8002")),
        help="where the sample TMDB listens when neither TMDB_TOKEN nor TMDB_API_KEY is set",
    )
    parser.add_argument(
        "--streamer-port",
        type=int,
        default=int(env.get("STREAMER_PORT", "8003")),
        help="where the streamer (python -m streamer) serves streams; -1: do not start one",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(env.get("DATA_DIR", ROOT / ".data")))
    parser.add_argument("--stage", default=env.get("STAGE", "dev"))
    parser.add_argument(
        "--aws-endpoint",
        default=env.get("LOCALSTACK_ENDPOINT") or None,
        help="use this endpoint (e.g. LocalStack) for SQS and S3 instead of the embedded emulator",
    )
    args = parser.parse_args(argv)
    return RuntimeOptions(
        host=args.host,
        port=args.port,
        emulator_port=args.emulator_port,
        sample_tmdb_port=args.sample_tmdb_port,
        streamer_port=None if args.streamer_port < 0 else args.streamer_port,
        data_dir=args.data_dir,
        stage=args.stage,
        external_endpoint=args.aws_endpoint,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "pynamodb", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    options = parse_args(sys.argv[1:] if argv is None else argv)
    runtime = LocalRuntime(options)
    signals = {"count": 0}

    def on_signal(signum: int, _frame: object) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            print("\nsecond signal: stopping at once", flush=True)
            os._exit(130)
        print("\nstopping: letting handlers in flight finish (Ctrl-C again to stop at once)", flush=True)
        runtime.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        runtime.start()
    except OSError as exc:
        print(f"cannot start: {exc} (is another `make run` using the ports? set PORT / EMULATOR_PORT)", flush=True)
        runtime.stop()
        return 1
    print(runtime.banner(), flush=True)
    runtime.wait()
    runtime.stop()
    print("stopped; state saved to", options.data_dir, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
