"""The catalog API: lists, movies, shows, seasons, genres, search, and user-triggered refreshes."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response

from chalicelib.catalog import read
from chalicelib.errors import NotFoundError, json_response
from chalicelib.jobs import enqueue
from chalicelib.models.catalog import Movie, Show

bp = Blueprint(__name__)


def _params() -> dict[str, str]:
    return dict(bp.current_request.query_params or {})


def _language() -> str:
    return read.language(_params().get("language"))


@bp.route("/lists", methods=["GET"])
def lists() -> dict[str, Any]:
    return read.lists()


@bp.route("/lists/{slug}", methods=["GET"])
def get_list(slug: str) -> dict[str, Any]:
    params = _params()
    return read.get_list(slug, _language(), read.limit(params.get("limit")), params.get("cursor"))


@bp.route("/movies/{movie_id}", methods=["GET"])
def get_movie(movie_id: str) -> dict[str, Any]:
    return read.get_movie(read.media_id(movie_id), _language())


@bp.route("/shows/{show_id}", methods=["GET"])
def get_show(show_id: str) -> dict[str, Any]:
    return read.get_show(read.media_id(show_id), _language())


@bp.route("/shows/{show_id}/seasons/{number}", methods=["GET"])
def get_season(show_id: str, number: str) -> dict[str, Any]:
    return read.get_season(read.media_id(show_id), read.season_number(number), _language())


@bp.route("/genres", methods=["GET"])
def genres() -> dict[str, Any]:
    return read.genres(_params().get("type"), _language())


@bp.route("/search", methods=["GET"])
def search() -> dict[str, Any]:
    params = _params()
    return read.find(params.get("q"), _language(), read.limit(params.get("limit")), params.get("cursor"))


def _refresh(job_name: str, model: Any, argument: str, raw_id: str) -> Response:
    item_id = read.media_id(raw_id)
    try:
        model.get(*model.key(item_id))
    except model.DoesNotExist:
        kind = "movie" if model is Movie else "show"
        raise NotFoundError(f"{kind} {item_id} is not in the catalog (GET it first to add it)") from None
    queued = enqueue.enqueue(job_name, {argument: item_id})
    body = {"job_id": queued.job_id, "already_pending": not queued.sent, "status_url": f"/admin/jobs/{queued.job_id}"}
    return json_response(202, body)


@bp.route("/movies/{movie_id}/refresh", methods=["POST"])
def refresh_movie(movie_id: str) -> Response:
    return _refresh("catalog.refresh_movie", Movie, "movie_id", movie_id)


@bp.route("/shows/{show_id}/refresh", methods=["POST"])
def refresh_show(show_id: str) -> Response:
    return _refresh("catalog.refresh_show", Show, "show_id", show_id)
