"""YTS API v2 across a list of mirrors, with a circuit breaker per mirror and one shared request budget.

Mirrors are tried in the configured order within one call: one that fails (an error status, a 5xx, a
timeout, a refused connection, an HTML maintenance page instead of JSON) is recorded and the next one is
tried at once. A mirror that failed 3 times in a row is skipped for a cooldown (1 minute, doubling up to an
hour), shared by every process through DynamoDB; its first success closes the breaker again. All mirrors
share the rate budget (YTS_REQUESTS_PER_MINUTE, 20 by default, like the original system).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pynamodb.expressions.update import Action

from chalicelib.clock import utcnow
from chalicelib.errors import UpstreamError
from chalicelib.jobs.retry import RetryLaterError
from chalicelib.models.jobs import JobItem
from chalicelib.settings import Settings, get_settings
from chalicelib.upstreams.http import JsonApi, UpstreamNotFoundError
from chalicelib.upstreams.ratelimit import RateLimiter

FAILURES_TO_OPEN = 3
COOLDOWN = timedelta(minutes=1)
MAX_COOLDOWN = timedelta(hours=1)


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Torrent(_Shape):
    hash: str = Field(pattern=r"^[0-9a-fA-F]{40}$")
    quality: str | None = None
    type: str | None = None
    video_codec: str | None = None
    bit_depth: str | None = None
    audio_channels: str | None = None
    seeds: int = 0
    peers: int = 0
    size_bytes: int | None = None
    url: str | None = None
    date_uploaded_unix: int | None = None


class Movie(_Shape):
    id: int
    imdb_code: str | None = None
    title: str
    title_long: str | None = None
    year: int | None = None
    torrents: list[Torrent] = Field(default_factory=list)

    @field_validator("torrents", mode="before")
    @classmethod
    def _no_torrents(cls, value: Any) -> Any:
        return [] if value is None else value


class ListData(_Shape):
    movie_count: int = 0
    movies: list[Movie] = Field(default_factory=list)  # YTS leaves the key out when nothing matched


class ListResponse(_Shape):
    status: Literal["ok", "error"]
    status_message: str = ""
    data: ListData | None = None


class MirrorsUnavailableError(UpstreamError):
    """Every mirror failed or is cooling down: try again later."""

    code = "yts_unavailable"


@dataclass
class YTS:
    mirrors: list[str]
    limiter: RateLimiter | None = None
    timeout: float = 10.0
    clock: Callable[[], datetime] = utcnow
    _apis: dict[str, JsonApi] = field(default_factory=dict, repr=False)

    def _api(self, mirror: str) -> JsonApi:
        if mirror not in self._apis:
            # One attempt per mirror: the next mirror is the retry.
            self._apis[mirror] = JsonApi(
                name=f"yts {mirror}", base_url=mirror, timeout=(min(3.05, self.timeout), self.timeout),
                limiter=self.limiter, attempts=1, clock=self.clock,
            )  # fmt: skip
        return self._apis[mirror]

    def movies_by_imdb(self, imdb_id: str) -> list[Movie]:
        """The YTS movies whose IMDb code is `imdb_id` (usually one), with their torrents; [] when none."""
        params = {"query_term": imdb_id, "limit": 50}
        data = self._get("/api/v2/list_movies.json", params)
        return [m for m in (data.movies if data else []) if (m.imdb_code or "").lower() == imdb_id.lower()]

    def _get(self, path: str, params: dict[str, Any]) -> ListData | None:
        now = self.clock()
        states = _breakers(self.mirrors)
        open_until = {m: s.lease_until for m, s in states.items() if s.lease_until is not None and s.lease_until > now}
        tried: list[str] = []
        for mirror in self.mirrors:
            if mirror in open_until:
                continue
            tried.append(mirror)
            try:
                response = self._api(mirror).get(path, params, model=ListResponse, ttl=0)
            except RetryLaterError:
                raise  # the shared budget (or YTS itself) says wait: not this mirror's fault
            except (UpstreamError, UpstreamNotFoundError) as exc:
                _record_failure(mirror, f"{type(exc).__name__}: {exc}", states.get(mirror), now)
                continue
            if response.status != "ok":
                _record_failure(mirror, f"status error: {response.status_message}", states.get(mirror), now)
                continue
            if states.get(mirror) is not None and (states[mirror].failed or 0) > 0:
                _record_success(mirror)
            return response.data
        if not tried and open_until:
            wait = (min(open_until.values()) - now).total_seconds()
            raise RetryLaterError("every YTS mirror is cooling down", retry_after=max(1.0, wait))
        raise MirrorsUnavailableError(f"no YTS mirror answered ({len(tried)} tried, {len(open_until)} cooling down)")


def _key(mirror: str) -> tuple[str, str]:
    return f"MIRROR#yts#{mirror}", "MIRROR"


def _breakers(mirrors: list[str]) -> dict[str, JobItem]:
    """Each mirror's breaker state (one BatchGetItem); mirrors never seen failing have none."""
    found = JobItem.batch_get([_key(m) for m in mirrors])
    return {item.pk.removeprefix("MIRROR#yts#"): item for item in found}


def _record_failure(mirror: str, error: str, state: JobItem | None, now: datetime) -> None:
    failures = int(state.failed or 0) + 1 if state is not None else 1
    actions: list[Action] = [
        JobItem.kind.set("mirror"),
        JobItem.failed.add(1),
        JobItem.data.set({"last_error": error[:300]}),
    ]
    if failures >= FAILURES_TO_OPEN:
        cooldown = min(MAX_COOLDOWN, COOLDOWN * 2 ** (failures - FAILURES_TO_OPEN))
        actions.append(JobItem.lease_until.set(now + cooldown))
    JobItem(*_key(mirror)).update(actions=actions)


def _record_success(mirror: str) -> None:
    JobItem(*_key(mirror)).update(actions=[JobItem.failed.set(0), JobItem.lease_until.remove()])


def mirror_health(mirrors: list[str], now: datetime | None = None) -> list[dict[str, Any]]:
    """Each mirror's breaker, for /health and the admin API."""
    now = now or utcnow()
    states = _breakers(mirrors)
    rows = []
    for mirror in mirrors:
        state = states.get(mirror)
        until = state.lease_until if state is not None else None
        rows.append(
            {
                "mirror": mirror,
                "state": "open" if until is not None and until > now else "closed",
                "consecutive_failures": int(state.failed or 0) if state is not None else 0,
                "open_until": until.isoformat() if until is not None and until > now else None,
                "last_error": (state.data or {}).get("last_error") if state is not None else None,
            }
        )
    return rows


def build(settings: Settings) -> YTS:
    limiter = RateLimiter("yts", settings.yts_requests_per_minute / 60.0, max_wait=30.0)
    return YTS(mirrors=list(settings.yts_mirrors), limiter=limiter, timeout=settings.yts_timeout)


_client: dict[str, tuple[Settings, YTS]] = {}


def get_yts() -> YTS:
    settings = get_settings()
    found = _client.get("yts")
    if found is None or found[0] is not settings:
        found = _client["yts"] = (settings, build(settings))
    return found[1]
