"""POST /streams: choose what to play, grant it, and warm the streamer up.

The best live source of the movie is taken (the ranking index's first; among the top ones, one whose files
are already known is preferred, since it starts without a metadata round), or the source asked for. The
answer carries the signed stream URL the player opens on the streamer, its status URL, and the source.
"""

from __future__ import annotations

from typing import Any

import requests
from chalice import Blueprint, Response

from chalicelib.auth import guard
from chalicelib.catalog import read
from chalicelib.errors import ConflictError, NotFoundError, ServiceUnavailableError, ValidationError, json_response
from chalicelib.jobs import enqueue
from chalicelib.models.catalog import Movie
from chalicelib.models.sources import Source
from chalicelib.settings import get_settings
from chalicelib.sources import ranking, store
from chalicelib.streams import grants

bp = Blueprint(__name__)
CANDIDATES = 5  # of the best ranked, one with known files goes first


def choose(movie_id: int, quality: str | None = None) -> Source:
    try:
        Movie.get(*Movie.key(movie_id))
    except Movie.DoesNotExist:
        raise NotFoundError(f"movie {movie_id} is not in the catalog") from None
    ranked = [s for s in store.best(movie_id, 50) if quality is None or s.quality == quality]
    if not ranked:
        enqueue.enqueue("sources.search_movie", {"movie_id": movie_id})
        wanted = f" in {quality}" if quality else ""
        raise NotFoundError(f"movie {movie_id} has no live source{wanted} yet; a search has been asked for")
    top = ranked[:CANDIDATES]
    return next((s for s in top if s.files), top[0])


def _body() -> dict[str, Any]:
    body = bp.current_request.json_body if bp.current_request.raw_body else None
    if not isinstance(body, dict):
        raise ValidationError('the body must be a JSON object: {"movie_id"} or {"source_id"}')
    unknown = set(body) - {"movie_id", "source_id", "quality", "file_index"}
    if unknown:
        raise ValidationError(f"unknown fields: {', '.join(sorted(unknown))}", details={"field": sorted(unknown)[0]})
    if ("movie_id" in body) == ("source_id" in body):
        raise ValidationError("give exactly one of movie_id and source_id", details={"field": "movie_id"})
    if "movie_id" in body and (not isinstance(body["movie_id"], int) or isinstance(body["movie_id"], bool)):
        raise ValidationError("movie_id must be a whole number", details={"field": "movie_id"})
    if "source_id" in body and (not isinstance(body["source_id"], str) or not store.INFOHASH.match(body["source_id"])):
        raise ValidationError("source_id must be a source's info-hash (40 hex digits)", details={"field": "source_id"})
    if body.get("quality") is not None and body["quality"] not in (*ranking.QUALITIES, "3D"):
        raise ValidationError(f"quality must be one of {', '.join(ranking.QUALITIES)}", details={"field": "quality"})
    file_index = body.get("file_index")
    if file_index is not None and (not isinstance(file_index, int) or isinstance(file_index, bool) or file_index < 0):
        raise ValidationError("file_index must be a whole number >= 0", details={"field": "file_index"})
    return body


def _warm_up(token: str) -> None:
    """Ask the streamer to start the torrent now, so the player's first request finds it moving."""
    url = get_settings().streamer_url
    if not url:
        raise ServiceUnavailableError("STREAMER_URL is not set: there is no streamer to play on")
    try:
        response = requests.post(f"{url.rstrip('/')}/streams/{token}/start", timeout=(3.05, 10))
    except requests.RequestException as exc:
        raise ServiceUnavailableError(f"the streamer cannot be reached: {type(exc).__name__}", retry_after=10) from None
    if response.status_code >= 400:
        raise ServiceUnavailableError(
            f"the streamer refused to start the stream ({response.status_code})", retry_after=10
        )


@bp.route("/streams", methods=["POST"])
def start_stream() -> Response:
    body = _body()
    if "source_id" in body:
        try:
            source = Source.get(*Source.key(body["source_id"].lower()))
        except Source.DoesNotExist:
            raise NotFoundError(f"no source {body['source_id']}") from None
        if source.dead:
            raise ConflictError(f"source {source.infohash} is dead (no seeder on its last checks)")
    else:
        source = choose(read.media_id(str(body["movie_id"])), body.get("quality"))
    user = guard.current(bp.current_request).username  # the grant carries who plays it
    token = grants.issue(source.infohash, user, body.get("file_index"))
    _warm_up(token)
    settings = get_settings()
    public = (settings.streamer_public_url or settings.streamer_url or "").rstrip("/")
    return json_response(
        201,
        {
            "stream_url": f"{public}/stream/{token}",
            "status_url": f"{public}/streams/{token}/status",
            "expires_at": grants.verify(token).expires_at,
            "source": store.view(source),
        },
    )
