"""TMDB API v3: the endpoints the catalog uses, their responses validated, behind the shared rate limiter
(TMDB allows about 40 requests a second per key, across all our processes) and the response cache.

Details are fetched with `append_to_response=translations,external_ids,images`, so an item costs one request.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chalicelib.settings import Settings, get_settings
from chalicelib.upstreams.http import JsonApi, ResponseCache
from chalicelib.upstreams.ratelimit import RateLimiter

MediaType = Literal["movie", "tv"]
LISTS: dict[str, MediaType] = {
    "movie/popular": "movie",
    "movie/top_rated": "movie",
    "trending/movie/week": "movie",
    "tv/popular": "tv",
    "tv/top_rated": "tv",
}
APPEND = "translations,external_ids,images"

# Seconds a response stays in the cache, by kind; details follow the TMDB_CACHE_TTL setting.
LIST_TTL = 30 * 60  # lists are refreshed hourly: never serve an older page to that refresh
CHANGES_TTL = 3600
GENRES_TTL = 7 * 24 * 3600


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


class GenreRef(_Shape):
    id: int
    name: str = ""


class TranslationData(_Shape):
    title: str | None = None
    name: str | None = None
    overview: str | None = None
    tagline: str | None = None


class Translation(_Shape):
    iso_639_1: str
    iso_3166_1: str = ""
    data: TranslationData = Field(default_factory=TranslationData)


class Translations(_Shape):
    translations: list[Translation] = Field(default_factory=list)


class ExternalIds(_Shape):
    imdb_id: str | None = None
    tvdb_id: int | None = None


class Image(_Shape):
    file_path: str
    iso_639_1: str | None = None
    vote_average: float = 0


class Images(_Shape):
    posters: list[Image] = Field(default_factory=list)
    backdrops: list[Image] = Field(default_factory=list)


class _Details(_Shape):
    id: int
    original_language: str | None = None
    overview: str | None = None
    tagline: str | None = None
    genres: list[GenreRef] = Field(default_factory=list)
    popularity: float = 0
    vote_average: float = 0
    vote_count: int = 0
    poster_path: str | None = None
    backdrop_path: str | None = None
    status: str | None = None
    translations: Translations = Field(default_factory=Translations)
    external_ids: ExternalIds = Field(default_factory=ExternalIds)
    images: Images = Field(default_factory=Images)


class MovieDetails(_Details):
    title: str
    original_title: str | None = None
    imdb_id: str | None = None
    release_date: str | None = None
    runtime: int | None = None

    _blank = field_validator("release_date", "imdb_id", mode="before")(_blank_is_none)


class EpisodeRef(_Shape):
    id: int | None = None
    name: str | None = None
    air_date: str | None = None
    season_number: int
    episode_number: int

    _blank = field_validator("air_date", mode="before")(_blank_is_none)


class SeasonSummary(_Shape):
    id: int | None = None
    season_number: int
    name: str | None = None
    overview: str | None = None
    episode_count: int = 0
    air_date: str | None = None
    poster_path: str | None = None

    _blank = field_validator("air_date", mode="before")(_blank_is_none)


class ShowDetails(_Details):
    name: str
    original_name: str | None = None
    first_air_date: str | None = None
    last_air_date: str | None = None
    in_production: bool = False
    number_of_seasons: int = 0
    number_of_episodes: int = 0
    seasons: list[SeasonSummary] = Field(default_factory=list)
    last_episode_to_air: EpisodeRef | None = None
    next_episode_to_air: EpisodeRef | None = None

    _blank = field_validator("first_air_date", "last_air_date", mode="before")(_blank_is_none)


class EpisodeDetails(_Shape):
    id: int | None = None
    episode_number: int
    season_number: int
    name: str | None = None
    overview: str | None = None
    air_date: str | None = None
    runtime: int | None = None
    still_path: str | None = None
    vote_average: float = 0
    vote_count: int = 0
    episode_type: str | None = None

    _blank = field_validator("air_date", mode="before")(_blank_is_none)


class SeasonDetails(_Shape):
    id: int | None = None
    season_number: int
    name: str | None = None
    overview: str | None = None
    air_date: str | None = None
    poster_path: str | None = None
    episodes: list[EpisodeDetails] = Field(default_factory=list)

    _blank = field_validator("air_date", mode="before")(_blank_is_none)


class ListItem(_Shape):
    id: int
    title: str | None = None  # movies
    name: str | None = None  # shows
    original_title: str | None = None
    original_name: str | None = None
    original_language: str | None = None
    overview: str | None = None
    genre_ids: list[int] = Field(default_factory=list)
    popularity: float = 0
    vote_average: float = 0
    vote_count: int = 0
    poster_path: str | None = None
    backdrop_path: str | None = None
    release_date: str | None = None
    first_air_date: str | None = None

    _blank = field_validator("release_date", "first_air_date", mode="before")(_blank_is_none)


class Page(_Shape):
    page: int
    results: list[ListItem]
    total_pages: int
    total_results: int


class Change(_Shape):
    id: int


class ChangesPage(_Shape):
    page: int
    results: list[Change]
    total_pages: int
    total_results: int


class GenreList(_Shape):
    genres: list[GenreRef]


class TMDB:
    def __init__(self, api: JsonApi, *, details_ttl: float) -> None:
        self.api = api
        self.details_ttl = details_ttl

    def movie(self, movie_id: int, *, max_age: float | None = None) -> MovieDetails:
        params = {"append_to_response": APPEND, "language": "en-US", "include_image_language": "en,null"}
        return self.api.get(f"/3/movie/{movie_id}", params, model=MovieDetails, ttl=self.details_ttl, max_age=max_age)

    def show(self, show_id: int, *, max_age: float | None = None) -> ShowDetails:
        params = {"append_to_response": APPEND, "language": "en-US", "include_image_language": "en,null"}
        return self.api.get(f"/3/tv/{show_id}", params, model=ShowDetails, ttl=self.details_ttl, max_age=max_age)

    def season(self, show_id: int, season_number: int, *, max_age: float | None = None) -> SeasonDetails:
        path = f"/3/tv/{show_id}/season/{season_number}"
        return self.api.get(path, {"language": "en-US"}, model=SeasonDetails, ttl=self.details_ttl, max_age=max_age)

    def list_page(self, source: str, page: int, *, max_age: float | None = None) -> Page:
        if source not in LISTS:
            raise ValueError(f"unknown TMDB list {source!r}")
        return self.api.get(
            f"/3/{source}", {"page": page, "language": "en-US"}, model=Page, ttl=LIST_TTL, max_age=max_age
        )

    def changes(self, media_type: MediaType, day: date, page: int = 1) -> ChangesPage:
        """The ids changed on one UTC day (TMDB's window is [start_date, end_date), 100 ids a page)."""
        params = {"start_date": day.isoformat(), "end_date": date.fromordinal(day.toordinal() + 1).isoformat()}
        params["page"] = str(page)
        return self.api.get(f"/3/{media_type}/changes", params, model=ChangesPage, ttl=CHANGES_TTL)

    def genres(self, media_type: MediaType, language: str) -> GenreList:
        path = f"/3/genre/{media_type}/list"
        return self.api.get(path, {"language": language}, model=GenreList, ttl=GENRES_TTL)


def build(settings: Settings, *, interactive: bool = False) -> TMDB:
    """A client from the settings. `interactive` (an API request someone waits on) waits at most a few seconds
    for a rate-limit slot and retries less, where a job may wait up to 30 s."""
    headers = {"Accept": "application/json"}
    params = {}
    if settings.tmdb_token is not None:
        headers["Authorization"] = f"Bearer {settings.tmdb_token.get_secret_value()}"
    elif settings.tmdb_api_key is not None:
        params["api_key"] = settings.tmdb_api_key.get_secret_value()
    api = JsonApi(
        name="tmdb",
        base_url=settings.tmdb_base_url,
        headers=headers,
        params=params,
        timeout=(min(3.05, settings.tmdb_timeout), settings.tmdb_timeout),
        limiter=RateLimiter("tmdb", settings.tmdb_rate_limit, max_wait=3.0 if interactive else 30.0),
        cache=ResponseCache("tmdb"),
        attempts=2 if interactive else 3,
    )
    return TMDB(api, details_ttl=settings.tmdb_cache_ttl)


_clients: dict[bool, tuple[Settings, TMDB]] = {}


def get_tmdb(*, interactive: bool = False) -> TMDB:
    """The TMDB client for this process, built lazily from the settings (again when they were reset)."""
    settings = get_settings()
    found = _clients.get(interactive)
    if found is None or found[0] is not settings:
        found = _clients[interactive] = (settings, build(settings, interactive=interactive))
    return found[1]
