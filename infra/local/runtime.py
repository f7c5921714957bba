"""The local runtime: emulator, provisioning, HTTP API, schedule ticker and queue pollers in one process.

    python -m infra.local            # what `make run` starts

Nothing in chalicelib/ knows it runs here: the runtime only sets the endpoint in the environment, imports
the same `app.py` Lambda imports, and invokes the same handlers with the same events.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib import aws
from chalicelib.jobs.poller import QueuePoller
from chalicelib.jobs.queues import QUEUES, QueueSpec
from chalicelib.settings import get_settings, reset_settings
from infra.local.emulator import Emulator
from infra.local.provision import provision
from infra.local.schedules import Ticker, schedules_from_app

log = logging.getLogger("projectionist.local")

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RuntimeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    emulator_port: int = 8001
    data_dir: Path | None = ROOT / ".data"
    stage: str = "dev"
    # An external AWS endpoint (LocalStack) for SQS and S3; DynamoDB stays on the embedded emulator,
    # because LocalStack without Docker does not serve it.
    external_endpoint: str | None = None
    serve_api: bool = True
    run_pollers: bool = True
    run_ticker: bool = True
    queues: tuple[QueueSpec, ...] = QUEUES
    snapshot_every: float = 5.0
    # Enqueue pending data migrations on start, as the stack does after a deploy.
    run_migrations: bool = True
    # Attach to an emulator another runtime serves (e.g. extra worker processes polling the same queues)
    # instead of starting one: this runtime then neither serves nor snapshots AWS state.
    emulator_url: str | None = None
    # Serve sample upstreams for what the environment does not configure (see _start_samples): the sample TMDB
    # on this port (0: any free port), the others on free ports; None: none at all. `make run`: 8002.
    sample_tmdb_port: int | None = None
    # Poll the torrent queue with the streamer's worker (behind its VPN gate), as the container would.
    torrent_worker: bool = True
    # Run the streamer (`python -m streamer`: libtorrent session, stream server, and the torrent queue's worker
    # in place of the one above) as a child process on this port; None: no streamer. `make run`: 8003. With
    # the samples on, it also seeds a generated sample video that the sample YTS lists for Big Buck Bunny.
    streamer_port: int | None = None
    # Extra handlers by queue name, for queues no Chalice consumer reads (e.g. the streamer's).
    extra_handlers: dict[str, Any] = field(default_factory=dict)
    # Builds the Chalice app to run, called once the environment is set (as Lambda imports app.py after
    # its environment is in place); by default it imports the project's app.py.
    app_factory: Callable[[], Any] | None = None


def chalice_stage_environment(stage: str) -> dict[str, str]:
    """The environment variables .chalice/config.json gives the stage, as Lambda would see them."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = dict(config.get("environment_variables", {}))
    env.update(config.get("stages", {}).get(stage, {}).get("environment_variables", {}))
    return env


def load_project_app() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("app").app


class LocalRuntime:
    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options
        self.emulator: Emulator | None = None
        self.pollers: list[QueuePoller] = []
        self.ticker: Ticker | None = None
        self.app: Any = None
        self.migrations_started: list[str] = []
        self.samples: dict[str, Any] = {}  # sample upstreams this runtime serves, by name
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self.streamer: subprocess.Popen[bytes] | None = None
        self.streamer_url: str | None = None
        self.sample_media: Any = None  # (video path, info-hash, seeder) when the sample video is seeded
        self._schedule_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="schedule")

    # -- start -------------------------------------------------------------------------------------------
    def start(self) -> None:
        opts = self.options
        if opts.emulator_url is None:
            self.emulator = Emulator(opts.data_dir, port=opts.emulator_port, snapshot_every=opts.snapshot_every)
            self.emulator.start()
        self._start_samples()
        self._configure_environment()
        settings = get_settings()
        provision(settings, dynamodb=aws.dynamodb(), sqs=aws.sqs(), s3=aws.s3(), queues=opts.queues)
        self._register_sample_feed()
        if opts.streamer_port is not None:
            self._start_sample_media()
            self._start_streamer(opts.streamer_port)
        self.app = (opts.app_factory or load_project_app)()
        if opts.run_pollers:
            self.start_pollers()
        if opts.run_migrations:
            self.migrations_started = self._start_migrations()
        if opts.run_ticker:
            schedules = schedules_from_app(self.app)
            self.ticker = Ticker(schedules, submit=self._schedule_pool.submit, region=settings.aws_region)
            self._spawn("ticker", self.ticker.run, self._stop)
        if opts.serve_api:
            self._start_api()

    def _start_samples(self) -> None:
        """Sample upstreams for what is not configured (with `sample_tmdb_port` set, as `make run` sets it): the
        sample TMDB without TMDB credentials, the sample YTS (five mirrors, the first down and the second
        serving a maintenance page) without YTS_MIRRORS, a sample tracker without TRACKERS, and a sample
        Torznab indexer, registered as a feed once the tables exist."""
        port = self.options.sample_tmdb_port
        if port is None:
            return
        from infra.local.upstreams.tmdb import SampleTMDB
        from infra.local.upstreams.torznab import SampleTorznab
        from infra.local.upstreams.tracker import SampleTracker
        from infra.local.upstreams.yts import SampleYTS

        if not (os.environ.get("TMDB_TOKEN") or os.environ.get("TMDB_API_KEY")):
            self.samples["TMDB"] = SampleTMDB(port=port).start()
            os.environ["TMDB_BASE_URL"] = self.samples["TMDB"].url
            os.environ["TMDB_API_KEY"] = self.samples["TMDB"].api_key
        if not os.environ.get("YTS_MIRRORS"):
            yts = self.samples["YTS"] = SampleYTS().start()
            os.environ["YTS_MIRRORS"] = ",".join(yts.mirror_urls[name] for name in yts.mirrors)
        if not os.environ.get("TRACKERS"):
            self.samples["tracker"] = SampleTracker().start()
            os.environ["TRACKERS"] = self.samples["tracker"].url
        self.samples["Torznab"] = SampleTorznab().start()

    def _register_sample_feed(self) -> None:
        indexer = self.samples.get("Torznab")
        if indexer is None:
            return
        from chalicelib.sources import feeds

        if not feeds.all_feeds():
            feeds.register("sample indexer", indexer.feed_url("alpha"), indexer.api_key("alpha"))

    def _start_sample_media(self) -> None:
        """The sample video, its .torrent on the sample tracker, a libtorrent seeder of it on 127.0.0.1, and the
        sample YTS listing it as Big Buck Bunny's only torrent: the catalog-to-playing-stream flow, with no keys."""
        yts, tracker = self.samples.get("YTS"), self.samples.get("tracker")
        if yts is None or tracker is None:
            return
        from infra.local import media

        folder = self.options.data_dir / "sample-media" if self.options.data_dir else Path(tempfile.mkdtemp())
        video = media.ensure_video(folder)
        torrent, infohash = media.make_torrent(video, [tracker.url])
        seeder = media.SampleSeeder(torrent, folder).start()
        yts.set_torrents(media.SAMPLE_IMDB, [media.sample_torrent_fields(infohash, video.stat().st_size)])
        self.sample_media = (video, infohash, seeder)

    def _start_streamer(self, port: int) -> None:
        """`python -m streamer` as a child process on 127.0.0.1 (DHT, LSD, UPnP, NAT-PMP off), on this runtime's
        emulator; it polls the torrent queue itself. Its torrents are kept in the data folder."""
        if port == 0:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        folder = self.options.data_dir / "torrents" if self.options.data_dir else Path(tempfile.mkdtemp())
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "STREAMER_PARENT_PID": str(os.getpid()),  # it stops if this process dies without stopping it
            "STREAMER_HOST": "127.0.0.1",
            "STREAMER_PORT": str(port),
            "STREAMER_DOWNLOAD_DIR": str(folder),
            "STREAMER_QUEUE_WAIT_SECONDS": "0",  # the emulator serves one SQS call at a time: no long polls
            "TORRENT_LISTEN_INTERFACES": "127.0.0.1:0",
            "TORRENT_ALLOW_MULTIPLE_CONNECTIONS_PER_IP": "true",  # the sample seeder shares 127.0.0.1
            **{f"TORRENT_{name}": "false" for name in ("DHT", "LSD", "UPNP", "NATPMP")},
        }
        # A session of its own: a Ctrl-C on the terminal reaches only this runtime, which then stops the streamer
        # gracefully (one SIGTERM; a second signal would stop it at once).
        self.streamer = subprocess.Popen([sys.executable, "-m", "streamer"], cwd=ROOT, env=env, start_new_session=True)
        self.streamer_url = f"http://127.0.0.1:{port}"
        os.environ["STREAMER_URL"] = self.streamer_url
        reset_settings()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.streamer.poll() is not None:
                raise RuntimeError(f"the streamer exited at start with status {self.streamer.returncode}")
            try:
                with urllib.request.urlopen(f"{self.streamer_url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the streamer did not answer on {self.streamer_url} within 60 s")

    def _stop_streamer(self) -> None:
        if self.streamer is None or self.streamer.poll() is not None:
            return
        self.streamer.terminate()  # graceful: jobs in flight finish, resume data is saved
        try:
            self.streamer.wait(30)
        except subprocess.TimeoutExpired:
            self.streamer.kill()
            self.streamer.wait()

    def _local_key(self, name: str) -> str:
        """A key made once and kept with the data (in memory without a data folder), so a restart can still
        read what it stored and honour the grants it gave."""
        from chalicelib.secrets import new_key

        if self.options.data_dir is None:
            return new_key()
        path = self.options.data_dir / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new_key())
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def emulator_url(self) -> str:
        if self.emulator is not None:
            return self.emulator.url
        assert self.options.emulator_url is not None
        return self.options.emulator_url

    def _configure_environment(self) -> None:
        for key, value in chalice_stage_environment(self.options.stage).items():
            os.environ.setdefault(key, value)
        os.environ["STAGE"] = self.options.stage
        os.environ.setdefault("EMIT_METRICS", "false")
        # The admin API's static token; on one machine bound to 127.0.0.1 a known default is convenient.
        os.environ.setdefault("ADMIN_TOKEN", "local-admin-token")
        os.environ.setdefault("SECRETS_KEY", self._local_key("secrets.key"))
        os.environ.setdefault("STREAM_SIGNING_KEY", self._local_key("stream-signing.key"))
        os.environ.setdefault("JWT_SECRET", self._local_key("jwt.key"))
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        os.environ.setdefault("AWS_REGION", "us-east-1")
        os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])
        if self.options.external_endpoint:
            os.environ["AWS_ENDPOINT_URL"] = self.options.external_endpoint
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = self.emulator_url
        else:
            os.environ["AWS_ENDPOINT_URL"] = self.emulator_url
            os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
        reset_settings()
        aws.reset()

    def _start_migrations(self) -> list[str]:
        handler = self.app.handler_map.get("run_migrations") if hasattr(self.app, "handler_map") else None
        if handler is None:
            return []
        return list(handler({}, None).get("enqueued", []))

    def start_pollers(self) -> None:
        handlers = {
            source.queue: self.app.handler_map[source.name]
            for source in self.app.event_sources
            if getattr(source, "queue", None)
        }
        settings = get_settings()
        extra = dict(self.options.extra_handlers)
        in_process = self.options.torrent_worker and self.options.streamer_port is None  # else the streamer polls
        if in_process and "torrent" not in extra:  # the streamer's worker, in this process
            from streamer.worker import torrent_handler

            extra["torrent"] = torrent_handler()
        for spec in self.options.queues:
            handler = handlers.get(spec.queue_name(settings)) or extra.get(spec.name)
            if handler is None:
                continue  # e.g. the torrent queue: consumed by the streamer, not by a Lambda
            url = aws.queue_url(spec.queue_name(settings))
            # No long polls against the emulator: it serves one SQS request at a time (see emulator.py).
            poller = QueuePoller(
                spec, handler, sqs=aws.sqs(), queue_url=url, region=settings.aws_region, wait_seconds=0
            )
            poller.start()
            self.pollers.append(poller)

    def _start_api(self) -> None:
        from chalice.cli.factory import CLIFactory
        from chalice.local import create_local_server

        factory = CLIFactory(str(ROOT), environ=os.environ)
        config = factory.create_config_obj(chalice_stage_name=self.options.stage)
        self._server = create_local_server(self.app, config, self.options.host, self.options.port)
        self._spawn("api", self._server.server.serve_forever)

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- run and stop ------------------------------------------------------------------------------------
    def banner(self) -> str:
        opts = self.options
        settings = get_settings()
        lines = [
            "Projectionist local runtime",
            f"  API           http://{opts.host}:{opts.port}  (try /health)",
            f"  AWS emulator  {self.emulator_url}  (DynamoDB, SQS, S3; moto)",
            f"  AWS endpoint  {settings.aws_endpoint_url}" if opts.external_endpoint else "",
            *self._upstream_lines(settings),
            *self._streamer_lines(),
            f"  data          {opts.data_dir or '(in memory only)'}",
            f"  stage         {settings.stage}   scheduler {'on' if settings.enable_scheduler else 'off'}",
            f"  queues        {', '.join(p.spec.name for p in self.pollers) or '(none polled)'}",
            f"  schedules     {', '.join(s.name for s in self.ticker.schedules) if self.ticker else '(off)'}",
            f"  admin token   {settings.admin_token.get_secret_value() if settings.admin_token else '(unset)'}"
            "  (Authorization: Bearer <token> on /admin/...)",
            "Ctrl-C stops it (handlers in flight finish first; Ctrl-C twice stops at once).",
        ]
        return "\n".join(line for line in lines if line)

    def _upstream_lines(self, settings: Any) -> list[str]:
        tmdb = self.samples.get("TMDB")
        lines = [
            f"  TMDB          {tmdb.url}  (the sample TMDB: set TMDB_TOKEN or TMDB_API_KEY to use TMDB)"
            if tmdb is not None
            else f"  TMDB          {settings.tmdb_base_url}  ({'token' if settings.tmdb_token else 'API key'})"
        ]
        yts = self.samples.get("YTS")
        if yts is not None:
            down = ", ".join(f"{name} {mode}" for name, mode in yts.modes.items() if mode != "ok")
            lines.append(f"  YTS           {len(yts.mirrors)} sample mirrors ({down}: watch the failover)")
        if "tracker" in self.samples:
            lines.append(
                f"  tracker       {self.samples['tracker'].url}  (a sample tracker: set TRACKERS for real ones)"
            )
        if "Torznab" in self.samples:
            lines.append(f"  Torznab       {self.samples['Torznab'].url}  (a sample indexer, registered as a feed)")
        return lines

    def _streamer_lines(self) -> list[str]:
        if self.streamer_url is None:
            return []
        lines = [f"  streamer      {self.streamer_url}  (python -m streamer; POST /streams plays through it)"]
        if self.sample_media is not None:
            video = self.sample_media[0]
            lines.append(
                f"  sample video  {video.name} seeded on 127.0.0.1, listed by the sample YTS for Big Buck Bunny:"
                f' POST /streams {{"movie_id": 10378}} once its sources are found'
            )
        return lines

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        self._stop.set()
        for poller in self.pollers:  # all stop receiving at once, then each lets its handlers finish
            poller.request_stop()
        for poller in self.pollers:
            poller.stop(wait=True)
        self._schedule_pool.shutdown(wait=True)
        self._stop_streamer()
        if self.sample_media is not None:
            self.sample_media[2].stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server.server_close()
        if self.emulator is not None:
            self.emulator.stop()
        for sample in self.samples.values():
            sample.stop()
