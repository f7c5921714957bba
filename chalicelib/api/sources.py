"""Sources API: a movie's ranked sources, and asking for a search now."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response

from chalicelib.auth import guard
from chalicelib.catalog import read
from chalicelib.errors import NotFoundError, ValidationError, json_response
from chalicelib.jobs import enqueue
from chalicelib.models.catalog import Movie
from chalicelib.sources import feeds, store

bp = Blueprint(__name__)


def _movie(raw_id: str) -> Movie:
    movie_id = read.media_id(raw_id)
    try:
        return Movie.get(*Movie.key(movie_id))
    except Movie.DoesNotExist:
        raise NotFoundError(f"movie {movie_id} is not in the catalog") from None


@bp.route("/movies/{movie_id}/sources", methods=["GET"])
def movie_sources(movie_id: str) -> dict[str, Any]:
    """The movie's live sources, best first, with how old their stats are (two DynamoDB calls)."""
    movie = _movie(movie_id)
    limit = read.limit(dict(bp.current_request.query_params or {}).get("limit"))
    searched = movie.sources_searched_at
    return {
        "movie_id": int(movie.tmdb_id),
        "searched_at": searched.isoformat() if searched else None,
        "sources": [store.view(s) for s in store.best(int(movie.tmdb_id), limit)],
    }


@bp.route("/movies/{movie_id}/sources/search", methods=["POST"])
def search_sources(movie_id: str) -> Response:
    movie = _movie(movie_id)
    queued = enqueue.enqueue("sources.search_movie", {"movie_id": int(movie.tmdb_id)})
    body = {"job_id": queued.job_id, "already_pending": not queued.sent, "status_url": f"/admin/jobs/{queued.job_id}"}
    return json_response(202, body)


# -- feeds (each user's own; the system's to admins) ------------------------------------------------------


@bp.route("/feeds", methods=["GET"])
def list_feeds() -> dict[str, Any]:
    me = guard.current(bp.current_request)
    return {"feeds": [feeds.view(f) for f in feeds.all_feeds() if feeds.visible_to(f, me.username, me.is_admin)]}


@bp.route("/feeds", methods=["POST"])
def add_feed() -> Response:
    """Register a Torznab feed: {"name", "url", "api_key"}; its first fetch is sent at once."""
    me = guard.current(bp.current_request)
    body = bp.current_request.json_body if bp.current_request.raw_body else None
    if not isinstance(body, dict):
        raise ValidationError('the body must be a JSON object: {"name", "url", "api_key"}')
    unknown = set(body) - {"name", "url", "api_key"}
    if unknown:
        raise ValidationError(f"unknown fields: {', '.join(sorted(unknown))}", details={"field": sorted(unknown)[0]})
    for field in ("name", "url"):
        if not isinstance(body.get(field), str):
            raise ValidationError(f"{field} is required (a string)", details={"field": field})
    if body.get("api_key") is not None and not isinstance(body["api_key"], str):
        raise ValidationError("api_key must be a string", details={"field": "api_key"})
    feed = feeds.register(body["name"], body["url"], body.get("api_key"), owner=me.username)
    enqueue.enqueue("sources.fetch_feed", {"feed_id": feed.feed_id})
    return json_response(201, feeds.view(feed))


@bp.route("/feeds/{feed_id}", methods=["DELETE"])
def delete_feed(feed_id: str) -> Response:
    me = guard.current(bp.current_request)
    feeds.get_for(feed_id, me.username, me.is_admin).delete()
    return Response(body="", status_code=204)
