"""JSON over HTTP for upstream clients: rate limit, retries with backoff, a DynamoDB response cache, and one
way to turn what went wrong into our errors.

- 5xx, timeouts, dropped connections and answers that are not the JSON we expect (an HTML maintenance page,
  a truncated body) are transient: retried here a few times with exponential backoff and jitter (tenacity),
  then raised as UpstreamError, which a job retries later.
- 429 is retried here when its Retry-After is short, else raised as RetryLaterError so the job platform
  sends the job again after that delay instead of holding a Lambda.
- 404 is a result, not a failure: UpstreamNotFoundError is permanent (and cached, for a shorter time).
- Other 4xx (a bad key, a bad request) are permanent: the same request fails the same way.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import requests
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from chalicelib.clock import utcnow
from chalicelib.errors import UpstreamError
from chalicelib.jobs.retry import RetryLaterError
from chalicelib.models.cache import CachedResponse
from chalicelib.observability import logger
from chalicelib.upstreams.ratelimit import RateLimiter

Model = TypeVar("Model", bound=BaseModel)
T = TypeVar("T")

# DynamoDB items hold 400 KB; a compressed response larger than this is simply not cached.
MAX_CACHED_BYTES = 300_000
NOT_FOUND_TTL = 3600.0


class TransientUpstreamError(UpstreamError):
    """Worth trying again: 5xx, a timeout, a dropped connection, a malformed answer."""

    code = "upstream_unavailable"


class UpstreamNotFoundError(UpstreamError):
    """The upstream says the thing does not exist (404): a result, not worth retrying."""

    status_code = 404
    code = "not_found_upstream"
    permanent = True


class UpstreamRejectedError(UpstreamError):
    """A 4xx other than 404 and 429: our request or credentials are wrong, and will stay wrong."""

    code = "upstream_rejected"
    permanent = True


@dataclass
class ResponseCache:
    """Responses by upstream, path and query (credentials left out), with a TTL checked on read."""

    upstream: str

    def key(self, path: str, params: Mapping[str, Any]) -> tuple[str, str]:
        url = path + "?" + "&".join(f"{k}={params[k]}" for k in sorted(params))
        return f"{self.upstream}:{hashlib.sha256(url.encode()).hexdigest()}", url

    def get(self, path: str, params: Mapping[str, Any], *, newer_than: datetime, now: datetime) -> Any:
        """The cached JSON (or UpstreamNotFoundError for a cached 404), or None when absent or too old."""
        key, _ = self.key(path, params)
        try:
            item = CachedResponse.get(key)
        except CachedResponse.DoesNotExist:
            return None
        if item.expires_at <= now or item.fetched_at < newer_than:
            return None
        if item.status == 404:
            raise UpstreamNotFoundError(f"{self.upstream}: {item.url} was not found (cached)")
        return json.loads(zlib.decompress(item.body or b"{}"))

    def put(self, path: str, params: Mapping[str, Any], status: int, body: Any, *, ttl: float, now: datetime) -> None:
        key, url = self.key(path, params)
        data = zlib.compress(json.dumps(body, separators=(",", ":")).encode()) if body is not None else None
        if ttl <= 0 or (data is not None and len(data) > MAX_CACHED_BYTES):
            return
        CachedResponse(
            key, url=url, status=status, body=data, fetched_at=now, expires_at=now + timedelta(seconds=ttl)
        ).save()


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, TransientUpstreamError) or (
        isinstance(error, RetryLaterError) and error.retry_after <= JsonApi.max_inline_retry_after
    )


def _wait(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, RetryLaterError):
        return error.retry_after
    return float(wait_random_exponential(multiplier=0.5, max=4)(state))


@dataclass
class JsonApi:
    name: str
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # sent with every request, never cached or logged
    timeout: tuple[float, float] = (3.05, 10.0)
    limiter: RateLimiter | None = None
    cache: ResponseCache | None = None
    attempts: int = 3
    session: requests.Session = field(default_factory=requests.Session)
    clock: Callable[[], datetime] = utcnow
    max_inline_retry_after = 5.0

    def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        model: type[Model],
        ttl: float,
        max_age: float | None = None,
    ) -> Model:
        """GET `path`, validated as `model`. A cached answer younger than `max_age` (default: the TTL) is used."""
        params = dict(params or {})
        now = self.clock()
        if self.cache is not None and ttl > 0 and max_age != 0:
            newer_than = now - timedelta(seconds=ttl if max_age is None else max_age)
            cached = self.cache.get(path, params, newer_than=newer_than, now=now)
            if cached is not None:
                try:
                    return self._validate(path, cached, model)
                except TransientUpstreamError:
                    pass  # cached before our expectations changed: fetch it again
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts), wait=_wait, retry=retry_if_exception(_is_transient), reraise=True
        )
        try:
            data = retrying(self._fetch, path, params, model)
        except UpstreamNotFoundError:
            if self.cache is not None:
                self.cache.put(path, params, 404, None, ttl=min(ttl, NOT_FOUND_TTL), now=self.clock())
            raise
        if self.cache is not None:
            self.cache.put(path, params, 200, data.model_dump(mode="json", by_alias=True), ttl=ttl, now=self.clock())
        return data

    def get_parsed(self, path: str, params: Mapping[str, Any], parse: Callable[[requests.Response], T]) -> T:
        """GET `path` with the same limits, retries and error mapping, read by `parse` (e.g. XML), uncached.
        `parse` raises TransientUpstreamError for an answer it cannot read, which is retried like a 5xx."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts), wait=_wait, retry=retry_if_exception(_is_transient), reraise=True
        )
        return retrying(lambda: parse(self._response(path, dict(params))))

    def _fetch(self, path: str, params: dict[str, Any], model: type[Model]) -> Model:
        response = self._response(path, params)
        try:
            data = response.json()
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "?").split(";")[0]
            raise TransientUpstreamError(f"{self.name}: {path} answered {kind} that is not JSON") from exc
        return self._validate(path, data, model)

    def _response(self, path: str, params: dict[str, Any]) -> requests.Response:
        if self.limiter is not None:
            self.limiter.acquire()
        url = self.base_url.rstrip("/") + path
        try:
            response = self.session.get(url, params=params | self.params, headers=self.headers, timeout=self.timeout)
        except requests.Timeout as exc:
            raise TransientUpstreamError(f"{self.name}: {path} timed out") from exc
        except requests.RequestException as exc:
            raise TransientUpstreamError(f"{self.name}: {path} could not be reached: {type(exc).__name__}") from exc
        status = response.status_code
        if status == 404:
            raise UpstreamNotFoundError(f"{self.name}: {path} was not found")
        if status == 429:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            logger.warning("%s asked us to slow down for %.1fs", self.name, retry_after)
            raise RetryLaterError(f"{self.name}: rate limited on {path}", retry_after=retry_after)
        if status >= 500:
            raise TransientUpstreamError(f"{self.name}: {path} answered {status}")
        if status >= 400:
            raise UpstreamRejectedError(f"{self.name}: {path} answered {status}: {_message(response)}")
        return response

    def _validate(self, path: str, data: Any, model: type[Model]) -> Model:
        try:
            return model.model_validate(data)
        except PydanticValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise TransientUpstreamError(
                f"{self.name}: {path} answered an unexpected shape ({where}: {first['msg']})"
            ) from exc


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0  # an HTTP date: rare from APIs; a second is a safe guess


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("status_message") or body.get("message") or body)[:200]
    return str(body)[:200]
