"""The OpenAPI 3.0 document of the whole HTTP API, kept beside the routes.

`document()` describes every route app.py registers (tests/unit/test_openapi.py fails on a route without an
entry, or an entry without a route), its parameters with their types and ranges, its request body, and its
answers: the success body as the handler builds it, and every error as the one `Error` shape of errors.py.
Bodies are described as the code returns them, precisely enough for a response-schema check to mean
something (tests/integration/test_schemathesis.py runs one against the app served over HTTP).

Every route needs `Authorization: Bearer <access token>` (the `bearerAuth` scheme, applied globally) but
/health, /auth/login and /auth/refresh; so every other route can answer 401, and /admin/* 403.
"""

from __future__ import annotations

import copy
from typing import Any

from chalicelib import __version__

Schema = dict[str, Any]

MAX_MEDIA_ID = 2**31 - 1
PUBLIC = ("/health", "/auth/login", "/auth/refresh")  # no bearer token needed


# -- schema helpers ---------------------------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def _int(**extra: Any) -> Schema:
    return {"type": "integer", **extra}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def _time(nullable: bool = False) -> Schema:
    schema = _string(format="date-time")
    return _nullable(schema) if nullable else schema


def _obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), **extra: Any) -> Schema:
    """An object whose properties are all required but `optional`."""
    schema: Schema = {"type": "object", "properties": properties, **extra}
    required = [name for name in properties if name not in optional]
    if required:
        schema["required"] = required
    return schema


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


ANY: Schema = {}  # any JSON value
FREE_OBJECT: Schema = {"type": "object", "additionalProperties": True}


# -- components -------------------------------------------------------------------------------------------


def _queue_depth(nullable: bool = False) -> Schema:
    schema = _obj({name: _int(minimum=0) for name in ("visible", "in_flight", "delayed", "dlq")})
    return _nullable(schema) if nullable else schema


def _media_summary() -> Schema:
    return _obj(
        {
            "id": _int(minimum=1),
            "type": _string(enum=["movie", "show"]),
            "title": _string(),
            "overview": _nullable(_string()),
            "year": _nullable(_int()),
            "poster_path": _nullable(_string()),
            "genre_ids": _array(_int()),
            "popularity": {"type": "number"},
            "vote_average": {"type": "number"},
        }
    )


def _media_detail(extra: dict[str, Schema]) -> Schema:
    """read._detail(): the summary, the texts in the language served, and the rest of the item."""
    properties = copy.deepcopy(_media_summary()["properties"])
    properties.update(
        {
            "tagline": _nullable(_string()),
            "language": _string(description="the language of the title served (else English)"),
            "original_title": _nullable(_string()),
            "original_language": _nullable(_string()),
            "genres": _array(_obj({"id": _int(), "name": _nullable(_string())})),
            "vote_count": _int(minimum=0),
            "backdrop_path": _nullable(_string()),
            "imdb_id": _nullable(_string()),
            "status": _nullable(_string()),
            "complete": {"type": "boolean", "description": "false: a list stub, not fully synced yet"},
            "removed": {"type": "boolean", "description": "TMDB no longer has it"},
            "synced_at": _time(nullable=True),
            **extra,
        }
    )
    return _obj(properties)


def _source() -> Schema:
    """sources.store.view()."""
    return _obj(
        {
            "infohash": _string(pattern="^[0-9a-f]{40}$"),
            "title": _string(),
            "quality": _nullable(_string()),
            "codec": _nullable(_string()),
            "type": _nullable(_string()),
            "size_bytes": _nullable(_int(minimum=0)),
            "seeders": _int(minimum=0),
            "leechers": _int(minimum=0),
            "score": _nullable({"type": "number"}),
            "stats_checked_at": _time(nullable=True),
            "stats_age_seconds": _nullable(_int()),
            "discovered_via": _array(_string()),
            "magnet": _string(),
            "files": _nullable(_array(FREE_OBJECT)),
        }
    )


def _run() -> Schema:
    """jobs.runs.to_dict(): the attempt, and what its record carries (args, timings, error, result)."""
    return _obj(
        {
            "job_id": _string(),
            "attempt": _int(minimum=0),
            "status": _string(enum=["queued", "running", "succeeded", "failed", "retrying", "skipped", "cancelled"]),
            "takeovers": _int(minimum=0),
            "name": _string(),
            "queue": _string(),
            "args": FREE_OBJECT,
            "started_at": _time(nullable=True),
            "ended_at": _time(),
            "duration_ms": _int(minimum=0),
            "error_type": _string(),
            "error_message": _string(),
            "result": ANY,
        },
        optional=("name", "queue", "args", "ended_at", "duration_ms", "error_type", "error_message", "result"),
        additionalProperties=True,
    )


def _user() -> Schema:
    return _obj(
        {
            "username": _string(),
            "email": _nullable(_string()),
            "role": _string(enum=["admin", "user"]),
            "disabled": {"type": "boolean"},
            "created_at": _time(),
            "last_login_at": _time(nullable=True),
        }
    )


def _components() -> dict[str, Any]:
    error = _obj(
        {
            "error": _obj(
                {
                    "code": _string(description="machine-readable, e.g. invalid_request, not_found"),
                    "message": _string(description="for people"),
                    "details": {"description": "more about it, e.g. {'field': 'limit'}"},
                },
                optional=("details",),
            )
        }
    )
    job_accepted = _obj(
        {
            "job_id": _string(),
            "already_pending": {"type": "boolean", "description": "the same job was already queued or running"},
            "status_url": _string(description="where the job's runs can be followed (admin)"),
        }
    )
    task = _obj(
        {
            "name": _string(),
            "schedule": _string(),
            "description": _string(),
            "enabled": {"type": "boolean"},
            "last_run": _nullable(FREE_OBJECT),
            "next_run": _time(),
        }
    )
    feed = _obj(
        {
            "id": _string(),
            "owner": _nullable(_string(description="its user; none: the system's own, shown to admins")),
            "name": _string(),
            "url": _string(),
            "api_key": _nullable(_string(description="masked: its last four characters at most")),
            "enabled": {"type": "boolean"},
            "created_at": _time(),
            "last_fetch": _nullable(FREE_OBJECT),
        }
    )
    health = _obj(
        {
            "status": _string(enum=["ok", "unavailable"]),
            "version": _string(),
            "stage": _string(),
            "scheduler_enabled": {"type": "boolean"},
            "queues": {"type": "object", "additionalProperties": _queue_depth(nullable=True)},
            "vpn_gate": _obj(
                {"state": _nullable(_string()), "reason": _nullable(_string()), "checked_at": _time(nullable=True)},
                optional=("checked_at",),
            ),
            "failing": {"type": "object", "additionalProperties": _string()},
        },
        optional=("vpn_gate", "failing"),
    )
    schemas: dict[str, Schema] = {
        "Error": error,
        "HealthReport": health,
        "JobAccepted": job_accepted,
        "MediaSummary": _media_summary(),
        "Movie": _media_detail({"release_date": _nullable(_string()), "runtime": _nullable(_int())}),
        "Show": _media_detail(
            {
                "first_air_date": _nullable(_string()),
                "last_air_date": _nullable(_string()),
                "in_production": {"type": "boolean"},
                "number_of_seasons": _int(minimum=0),
                "number_of_episodes": _int(minimum=0),
                "seasons": _array(FREE_OBJECT),
                "last_episode": _nullable(FREE_OBJECT),
                "next_episode": _nullable(FREE_OBJECT),
            }
        ),
        "Source": _source(),
        "Feed": feed,
        "Task": task,
        "Run": _run(),
        "QueueDepth": _queue_depth(),
        "User": _user(),
        "TokenPair": _obj(
            {
                "access_token": _string(),
                "token_type": _string(enum=["bearer"]),
                "expires_in": _int(minimum=0, description="seconds the access token is valid for"),
                "refresh_token": _string(),
                "user": _ref("User"),
            }
        ),
        "AuditEvent": _obj(
            {
                "id": _string(),
                "at": _time(),
                "actor": _nullable(_string()),
                "action": _string(),
                "target": _nullable(_string()),
                "ip": _nullable(_string()),
                "outcome": _string(enum=["success", "failure"]),
                "details": FREE_OBJECT,
            }
        ),
    }

    def error_response(description: str, retry_after: bool | None = None) -> dict[str, Any]:
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        if retry_after is not None:
            response["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before trying again",
                    "required": retry_after,
                    "schema": _int(minimum=1),
                }
            }
        return response

    responses = {
        "BadRequest": error_response("The request is malformed or a parameter is invalid (code invalid_request)"),
        "Unauthorized": error_response("No bearer token, or one that is wrong, expired or revoked"),
        "Forbidden": error_response("Signed in, but not allowed (e.g. not an admin)"),
        "NotFound": error_response("There is no such thing"),
        "Conflict": error_response("The request conflicts with the current state"),
        "PayloadTooLarge": error_response("The request body is too large"),
        "TooManyRequests": error_response("Too many attempts: wait Retry-After seconds", retry_after=True),
        "ServiceUnavailable": error_response(
            "A part of the stack or an upstream cannot be reached now; try again", retry_after=False
        ),
    }
    return {
        "schemas": schemas,
        "responses": responses,
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    }


# -- parameters -------------------------------------------------------------------------------------------


def _path(name: str, schema: Schema, description: str = "", example: Any = None) -> Schema:
    parameter: Schema = {"name": name, "in": "path", "required": True, "schema": schema}
    if description:
        parameter["description"] = description
    if example is not None:
        parameter["example"] = example
    return parameter


def _query(name: str, schema: Schema, description: str = "", *, required: bool = False, example: Any = None) -> Schema:
    parameter: Schema = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        parameter["description"] = description
    if example is not None:
        parameter["example"] = example
    return parameter


MEDIA_ID = _int(minimum=1, maximum=MAX_MEDIA_ID)
MOVIE_ID = _path("movie_id", MEDIA_ID, "TMDB id of the movie", 10331)
SHOW_ID = _path("show_id", MEDIA_ID, "TMDB id of the show", 2310)
LANGUAGE = _query(
    "language", _string(pattern="^[a-z]{2}(-[A-Z]{2})?$"), "texts in this language where stored, else English"
)
CURSOR = _query("cursor", _string(), "the next_cursor of the previous page")


def _limit(high: int, default: int) -> Schema:
    return _query("limit", _int(minimum=1, maximum=high, default=default), "page size")


# -- operations -------------------------------------------------------------------------------------------


def _json(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *errors: str,
    status: str = "200",
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    body_required: bool = True,
    body_example: Any = None,
    tag: str = "",
) -> dict[str, Any]:
    """An operation: its success answer under `status` and its error answers, by status code."""
    names = {
        "400": "BadRequest",
        "401": "Unauthorized",
        "403": "Forbidden",
        "404": "NotFound",
        "409": "Conflict",
        "413": "PayloadTooLarge",
        "429": "TooManyRequests",
        "503": "ServiceUnavailable",
    }
    codes = set(errors)
    operation: dict[str, Any] = {"summary": summary}
    if tag:
        operation["tags"] = [tag]
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        media: dict[str, Any] = {"schema": body}
        if body_example is not None:
            media["example"] = body_example
        operation["requestBody"] = {"required": body_required, "content": {"application/json": media}}
        codes |= {"400", "413"}  # a body that is not JSON, or too large
    operation["responses"] = {status: ok} | {
        code: {"$ref": f"#/components/responses/{names[code]}"} for code in sorted(codes)
    }
    return operation


NO_CONTENT = {"description": "Done (no body)"}
AUTHED = ("401",)
ADMIN = ("401", "403")


def _health_paths() -> dict[str, Any]:
    unavailable = _json(
        {"allOf": [_ref("Error"), _ref("HealthReport"), {"type": "object", "required": ["failing"]}]},
        "Some part of the stack cannot be reached: the error, and the report naming what fails under `failing`",
    )
    return {
        "/health": {
            "get": {
                "summary": "Whether DynamoDB and SQS can be reached, and how deep each queue is",
                "tags": ["health"],
                "security": [],
                "responses": {"200": _json(_ref("HealthReport")), "503": unavailable},
            }
        }
    }


def _auth_paths() -> dict[str, Any]:
    """chalicelib/api/auth.py: bodies are pydantic models that forbid unknown fields."""
    tag = "auth"
    password = _string(minLength=1, maxLength=1024)
    refresh = _obj({"refresh_token": _string(minLength=1, maxLength=200)}, additionalProperties=False)
    new_user = _obj(
        {
            "username": _string(pattern="^[a-z0-9][a-z0-9._-]{2,31}$", minLength=3, maxLength=32),
            "password": _string(minLength=1, maxLength=1024, description="must pass the password policy"),
            "role": _string(enum=["admin", "user"], default="user"),
            "email": _nullable(_string(pattern="^[^@\\s]+@[^@\\s]+$", maxLength=254)),
        },
        optional=("role", "email"),
        additionalProperties=False,
    )
    username = _path("username", _string(), "a username", "ada")
    return {
        "/auth/login": {
            "post": _op(
                "Sign in: an access token and a refresh token",
                _json(_ref("TokenPair")),
                "401",
                "429",
                body=_obj(
                    {"username": _string(minLength=1, maxLength=64), "password": password},
                    additionalProperties=False,
                ),
                tag=tag,
            )
            | {"security": []}
        },
        "/auth/refresh": {
            "post": _op(
                "A new token pair for a refresh token (which is used up)",
                _json(_ref("TokenPair")),
                "401",
                body=refresh,
                tag=tag,
            )
            | {"security": []}
        },
        "/auth/logout": {
            "post": _op("Revoke a refresh token", NO_CONTENT, *AUTHED, status="204", body=refresh, tag=tag)
        },
        "/auth/me": {"get": _op("The signed-in user", _json(_ref("User")), *AUTHED, tag=tag)},
        "/auth/password": {
            "post": _op(
                "Change one's own password (403 when the current one is wrong)",
                NO_CONTENT,
                "401",
                "403",
                status="204",
                body=_obj({"current_password": password, "new_password": password}, additionalProperties=False),
                tag=tag,
            )
        },
        "/admin/users": {
            "get": _op(
                "Users, a page at a time",
                _json(_obj({"users": _array(_ref("User")), "next_cursor": _nullable(_string())})),
                "400",
                *ADMIN,
                parameters=[_limit(100, 50), CURSOR],
                tag=tag,
            ),
            "post": _op(
                "Create a user",
                _json(_ref("User"), "Created"),
                *ADMIN,
                "409",
                status="201",
                body=new_user,
                body_example={"username": "ada", "password": "an Analytical Engine of 1843", "role": "user"},
                tag=tag,
            ),
        },
        "/admin/users/{username}": {
            "get": _op("One user", _json(_ref("User")), *ADMIN, "404", parameters=[username], tag=tag),
            "patch": _op(
                "Change a user's role, or disable or enable them (not one's own)",
                _json(_ref("User")),
                *ADMIN,
                "404",
                parameters=[username],
                body=_obj(
                    {
                        "role": _nullable(_string(enum=["admin", "user"])),
                        "disabled": _nullable({"type": "boolean"}),
                    },
                    optional=("role", "disabled"),
                    additionalProperties=False,
                ),
                body_example={"role": "user", "disabled": False},
                tag=tag,
            ),
        },
        "/admin/users/{username}/password": {
            "post": _op(
                "Set a user's password",
                NO_CONTENT,
                *ADMIN,
                "404",
                status="204",
                parameters=[username],
                body=_obj({"password": password}, additionalProperties=False),
                body_example={"password": "a Difference Engine of 1822"},
                tag=tag,
            ),
        },
        "/admin/audit": {
            "get": _op(
                "The audit log, newest first, filtered",
                _json(_obj({"events": _array(_ref("AuditEvent")), "next_cursor": _nullable(_string())})),
                "400",
                *ADMIN,
                parameters=[
                    _limit(200, 50),
                    CURSOR,
                    _query("action", _string(), "e.g. auth.login"),
                    _query("actor", _string(), "a username"),
                    _query("since", _time(), "events at or after this time (ISO 8601)"),
                    _query("until", _time(), "events before this time (ISO 8601)"),
                ],
                tag=tag,
            )
        },
    }


def _catalog_paths() -> dict[str, Any]:
    tag = "catalog"
    list_summary = _obj(
        {
            "slug": _string(),
            "name": _string(),
            "media_type": _string(enum=["movie", "show"]),
            "count": _int(minimum=0),
            "refreshed_at": _time(nullable=True),
        }
    )
    media_list = _obj(
        {
            "slug": _string(),
            "name": _string(),
            "media_type": _string(enum=["movie", "show"]),
            "refreshed_at": _time(nullable=True),
            "total": _int(minimum=0),
            "items": _array(_ref("MediaSummary")),
            "next_cursor": _nullable(_string()),
        }
    )
    episode = _obj(
        {
            "episode_number": _int(),
            "name": _nullable(_string()),
            "overview": _nullable(_string()),
            "air_date": _nullable(_string()),
            "runtime": _nullable(_int()),
            "still_path": _nullable(_string()),
            "vote_average": {"type": "number"},
            "episode_type": _nullable(_string()),
        }
    )
    season = _obj(
        {
            "show_id": _int(),
            "season_number": _int(minimum=0),
            "name": _nullable(_string()),
            "overview": _nullable(_string()),
            "air_date": _nullable(_string()),
            "poster_path": _nullable(_string()),
            "episode_count": _int(minimum=0),
            "complete": {"type": "boolean"},
            "episodes": _array(episode),
        }
    )
    genre = _obj({"id": _int(), "type": _string(enum=["movie", "tv"]), "name": _nullable(_string())})
    search = _obj(
        {
            "query": _string(),
            "results": _array(_ref("MediaSummary")),
            "total": _int(minimum=0, description="exact when total_is_exact, else how many were found so far"),
            "total_is_exact": {"type": "boolean"},
            "next_cursor": _nullable(_string()),
        }
    )
    fetched = ("400", *AUTHED, "404", "503")  # fetched from TMDB when missing: 503 when TMDB cannot answer
    return {
        "/lists": {
            "get": _op(
                "Every list, without its members", _json(_obj({"lists": _array(list_summary)})), *AUTHED, tag=tag
            )
        },
        "/lists/{slug}": {
            "get": _op(
                "One page of a list",
                _json(media_list),
                "400",
                *AUTHED,
                "404",
                parameters=[
                    _path("slug", _string(), "e.g. popular-movies", "popular-movies"),
                    LANGUAGE,
                    _limit(100, 20),
                    CURSOR,
                ],
                tag=tag,
            )
        },
        "/movies/{movie_id}": {
            "get": _op("A movie", _json(_ref("Movie")), *fetched, parameters=[MOVIE_ID, LANGUAGE], tag=tag)
        },
        "/shows/{show_id}": {
            "get": _op(
                "A show, with its season summaries",
                _json(_ref("Show")),
                *fetched,
                parameters=[SHOW_ID, LANGUAGE],
                tag=tag,
            )
        },
        "/shows/{show_id}/seasons/{number}": {
            "get": _op(
                "A season and its episodes (episodes in English)",
                _json(season),
                *fetched,
                parameters=[SHOW_ID, _path("number", _int(minimum=0, maximum=9999), "season number", 1), LANGUAGE],
                tag=tag,
            )
        },
        "/genres": {
            "get": _op(
                "Genre names",
                _json(_obj({"genres": _array(genre)})),
                "400",
                *AUTHED,
                parameters=[_query("type", _string(enum=["movie", "tv"])), LANGUAGE],
                tag=tag,
            )
        },
        "/search": {
            "get": _op(
                "Title search over the catalog, most popular first",
                _json(search),
                "400",
                *AUTHED,
                parameters=[
                    _query(
                        "q", _string(), "words of a title (one of at least 2 letters)", required=True, example="night"
                    ),
                    LANGUAGE,
                    _limit(100, 20),
                    CURSOR,
                ],
                tag=tag,
            )
        },
        "/movies/{movie_id}/refresh": {
            "post": _op(
                "Refetch a movie from TMDB now (a job)",
                _json(_ref("JobAccepted"), "Accepted"),
                "400",
                *AUTHED,
                "404",
                status="202",
                parameters=[MOVIE_ID],
                tag=tag,
            )
        },
        "/shows/{show_id}/refresh": {
            "post": _op(
                "Refetch a show and its seasons from TMDB now (a job)",
                _json(_ref("JobAccepted"), "Accepted"),
                "400",
                *AUTHED,
                "404",
                status="202",
                parameters=[SHOW_ID],
                tag=tag,
            )
        },
    }


def _sources_paths() -> dict[str, Any]:
    tag = "sources"
    movie_sources = _obj({"movie_id": _int(), "searched_at": _time(nullable=True), "sources": _array(_ref("Source"))})
    new_feed = _obj(
        {
            "name": _string(minLength=1, maxLength=80),
            "url": _string(pattern="^https?://", maxLength=500, description="the feed's Torznab API"),
            "api_key": _nullable(_string(minLength=1, maxLength=200)),
        },
        optional=("api_key",),
        additionalProperties=False,
    )
    stream_request = {
        "type": "object",
        "description": "exactly one of movie_id (its best live source) and source_id",
        "properties": {
            "movie_id": MEDIA_ID,
            "source_id": _string(pattern="^[0-9a-fA-F]{40}$", description="a source's info-hash"),
            "quality": _nullable(_string(enum=["480p", "720p", "1080p", "2160p", "3D"])),
            "file_index": _nullable(_int(minimum=0, description="the file to play; default: the main video")),
        },
        "additionalProperties": False,
        "oneOf": [{"required": ["movie_id"]}, {"required": ["source_id"]}],
    }
    stream = _obj(
        {
            "stream_url": _string(description="what the player opens (range requests) on the streamer"),
            "status_url": _string(),
            "expires_at": _int(description="unix seconds"),
            "source": _ref("Source"),
        }
    )
    return {
        "/movies/{movie_id}/sources": {
            "get": _op(
                "The movie's live sources, best first",
                _json(movie_sources),
                "400",
                *AUTHED,
                "404",
                parameters=[MOVIE_ID, _limit(100, 20)],
                tag=tag,
            )
        },
        "/movies/{movie_id}/sources/search": {
            "post": _op(
                "Search the movie's sources now (a job)",
                _json(_ref("JobAccepted"), "Accepted"),
                "400",
                *AUTHED,
                "404",
                status="202",
                parameters=[MOVIE_ID],
                tag=tag,
            )
        },
        "/feeds": {
            "get": _op(
                "The signed-in user's Torznab feeds",
                _json(_obj({"feeds": _array(_ref("Feed"))})),
                *AUTHED,
                "503",
                tag=tag,
            ),
            "post": _op(
                "Register a Torznab feed; its first fetch is sent at once",
                _json(_ref("Feed"), "Created"),
                *AUTHED,
                "503",
                status="201",
                body=new_feed,
                body_example={
                    "name": "my indexer",
                    "url": "https://indexer.example/api",
                    "api_key": "0123456789abcdef",
                },
                tag=tag,
            ),
        },
        "/feeds/{feed_id}": {
            "delete": _op(
                "Remove one of the signed-in user's feeds",
                NO_CONTENT,
                *AUTHED,
                "404",
                status="204",
                parameters=[_path("feed_id", _string())],
                tag=tag,
            )
        },
        "/streams": {
            "post": _op(
                "Choose a source, grant it and warm the streamer up: the signed stream URL",
                _json(stream, "Created"),
                *AUTHED,
                "404",
                "409",
                "503",
                status="201",
                body=stream_request,
                body_example={"movie_id": 10331},
                tag="streams",
            )
        },
    }


def _admin_paths() -> dict[str, Any]:
    tag = "admin"
    batch = _obj(
        {
            "batch_id": _string(),
            "status": _nullable(_string()),
            "total": _int(minimum=0),
            "done": _int(minimum=0),
            "succeeded": _int(minimum=0),
            "failed": _int(minimum=0),
            "pending": _int(),
            "created_at": _time(nullable=True),
            "updated_at": _time(nullable=True),
            "then": _nullable(FREE_OBJECT),
        }
    )
    stats = _obj(
        {
            "window_hours": {"type": "number"},
            "tasks": _obj({"total": _int(minimum=0), "enabled": _int(minimum=0)}),
            "runs": _obj({name: _int(minimum=0) for name in ("total", "succeeded", "failed", "in_window")}),
            "per_task": {
                "type": "object",
                "additionalProperties": _obj(
                    {
                        "runs": _int(minimum=0),
                        "success_rate": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
                        "p50_ms": _nullable({"type": "number"}),
                        "p95_ms": _nullable({"type": "number"}),
                    }
                ),
            },
        }
    )
    redriven = _obj(
        {
            "queue": _string(),
            "method": _string(enum=["start_message_move_task", "receive_send_delete"]),
            "task_handle": _nullable(_string()),
            "moved": _int(minimum=0),
        },
        optional=("task_handle", "moved"),
    )
    migration = _obj(
        {
            "id": _string(),
            "description": _string(),
            "status": _nullable(_string()),
            "started_at": _nullable(_string()),
            "ended_at": _nullable(_string()),
            "error": ANY,
            "result": ANY,
        }
    )
    task_name = _path("name", _string(), "a periodic task's name", "catalog.sync_genres")
    return {
        "/admin/tasks": {
            "get": _op("The periodic tasks", _json(_obj({"tasks": _array(_ref("Task"))})), *ADMIN, tag=tag)
        },
        "/admin/tasks/{name}/toggle": {
            "post": _op(
                "Turn a task on or off (without `enabled`: flip it)",
                _json(_ref("Task")),
                "400",
                *ADMIN,
                "404",
                parameters=[task_name],
                body=_obj({"enabled": _nullable({"type": "boolean"})}, optional=("enabled",)),
                body_required=False,
                body_example={"enabled": True},
                tag=tag,
            )
        },
        "/admin/tasks/{name}/run": {
            "post": _op(
                "Run a task now (unless it is still running)",
                _json(
                    _obj(
                        {
                            "task": _string(),
                            "outcome": _string(enum=["enqueued", "already_running", "disabled", "scheduler_off"]),
                            "job_id": _nullable(_string()),
                        }
                    )
                ),
                *ADMIN,
                "404",
                parameters=[task_name],
                tag=tag,
            )
        },
        "/admin/runs": {
            "get": _op(
                "Job runs, newest first, filtered",
                _json(_obj({"runs": _array(_ref("Run")), "next_cursor": _nullable(_string())})),
                "400",
                *ADMIN,
                parameters=[
                    _query("name", _string(), "a job's name"),
                    _query("task", _string(), "a task's name (when name is not given)"),
                    _query(
                        "status",
                        _string(enum=["queued", "running", "succeeded", "failed", "retrying", "skipped", "cancelled"]),
                    ),
                    _query("since", _time(), "runs started at or after this time (ISO 8601)"),
                    _query("until", _time(), "runs started at or before this time (ISO 8601)"),
                    _limit(500, 50),
                    CURSOR,
                ],
                tag=tag,
            )
        },
        "/admin/stats": {
            "get": _op(
                "Run counts and per-task durations",
                _json(stats),
                "400",
                *ADMIN,
                parameters=[_query("window_hours", _int(minimum=1, maximum=24 * 60, default=24))],
                tag=tag,
            )
        },
        "/admin/jobs/{job_id}": {
            "get": _op(
                "A job and its runs (once it started)",
                _json(_obj({"job_id": _string(), "name": _string(), "status": _string(), "runs": _array(_ref("Run"))})),
                *ADMIN,
                "404",
                parameters=[_path("job_id", _string())],
                tag=tag,
            )
        },
        "/admin/batches/{batch_id}": {
            "get": _op(
                "A batch's progress",
                _json(batch),
                *ADMIN,
                "404",
                parameters=[_path("batch_id", _string())],
                tag=tag,
            )
        },
        "/admin/queues": {
            "get": _op(
                "Every queue's depth",
                _json(_obj({"queues": {"type": "object", "additionalProperties": _ref("QueueDepth")}})),
                *ADMIN,
                "503",
                tag=tag,
            )
        },
        "/admin/queues/{name}/redrive": {
            "post": _op(
                "Move a queue's dead letters back to it",
                _json(redriven),
                *ADMIN,
                "404",
                parameters=[_path("name", _string(), "a queue's name", "maintenance")],
                tag=tag,
            )
        },
        "/admin/migrations": {
            "get": _op("The data migrations", _json(_obj({"migrations": _array(migration)})), *ADMIN, tag=tag)
        },
        "/admin/migrations/{migration_id}/retry": {
            "post": _op(
                "Run a failed migration again",
                _json(_obj({"migration_id": _string(), "job_id": _string()})),
                *ADMIN,
                "404",
                "409",
                parameters=[_path("migration_id", _string())],
                tag=tag,
            )
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document (a new dict each call: callers may change it)."""
    paths: dict[str, Any] = {}
    for part in (_health_paths(), _auth_paths(), _catalog_paths(), _sources_paths(), _admin_paths()):
        paths.update(part)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Projectionist",
            "version": __version__,
            "description": "A media backend: catalog, torrent sources, streams, accounts and a job platform. "
            'Every error answers JSON {"error": {"code", "message", "details"?}}.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": name} for name in ("health", "auth", "catalog", "sources", "streams", "admin")],
        "paths": dict(sorted(paths.items())),
        "components": _components(),
    }
