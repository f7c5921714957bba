"""What the catalog API serves: database first, each read at most two DynamoDB calls.

Only what the catalog lacks is fetched from TMDB while the caller waits (then stored), so a popular title
costs TMDB nothing after its first view. Texts come in the requested language when a translation is stored
(`fr-CA`, else `fr`), else in English. Lists and search results are paged with an opaque cursor.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

from chalicelib.catalog import search
from chalicelib.catalog.jobs import LISTS, sync_movie_now, sync_show_now
from chalicelib.catalog.store import save_season
from chalicelib.errors import NotFoundError, ServiceUnavailableError, UpstreamError, ValidationError
from chalicelib.jobs.retry import RetryLaterError
from chalicelib.models.catalog import CatalogItem, Episode, Genre, Media, MediaList, Movie, SearchEntry, Season, Show
from chalicelib.upstreams import tmdb
from chalicelib.upstreams.http import UpstreamNotFoundError

LANGUAGE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")
DEFAULT_PAGE = 20
MAX_PAGE = 100
SEARCH_CANDIDATES = 300  # index entries a Query page reads
SEARCH_PAGES = 3  # at most, for a common word typed with rarer ones
GENRES_FRESH_FOR = 300.0  # seconds a warm process keeps the genre names

_genres: dict[str, Any] = {"at": 0.0, "items": []}


# -- parameters -------------------------------------------------------------------------------------------


def language(raw: str | None) -> str:
    if raw is None or raw == "":
        return "en"
    if not LANGUAGE.match(raw):
        raise ValidationError("language must look like 'fr' or 'fr-CA'", details={"field": "language"})
    return raw


def limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError("limit must be a whole number", details={"field": "limit"}) from None
    if not 1 <= value <= MAX_PAGE:
        raise ValidationError(f"limit must be 1..{MAX_PAGE}", details={"field": "limit"})
    return value


def season_number(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or int(raw) > 9999:
        raise ValidationError("season number must be 0..9999", details={"field": "number"})
    return int(raw)


def media_id(raw: str, what: str = "id") -> int:
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 2**31:
        raise ValidationError(f"{what} must be a positive whole number", details={"field": what})
    return int(raw)


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))["o"]
        if not isinstance(value, int) or value < 0:
            raise ValueError
        return value
    except (ValueError, KeyError, TypeError):
        raise ValidationError("cursor is not one this API returned", details={"field": "cursor"}) from None


def _cursor(offset: int, total: int) -> str | None:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode() if offset < total else None


# -- views ------------------------------------------------------------------------------------------------


def _text(item: Media, lang: str) -> tuple[dict[str, Any], str]:
    """Title, overview and tagline in `lang` where stored, field by field, else English; and the language of
    the title served."""
    translations = item.translations or {}
    for candidate in (lang, lang.split("-")[0]):
        found = translations.get(candidate)
        if candidate != "en" and found:
            return (
                {
                    "title": found.get("title") or item.title,
                    "overview": found.get("overview") or item.overview,
                    "tagline": found.get("tagline") or item.tagline,
                },
                candidate if found.get("title") else "en",
            )
    return {"title": item.title, "overview": item.overview, "tagline": item.tagline}, "en"


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values or []]


def _year(value: str | None) -> int | None:
    return int(value[:4]) if value and value[:4].isascii() and value[:4].isdigit() else None


def summary(item: Media, lang: str) -> dict[str, Any]:
    text, _ = _text(item, lang)
    dated = item.release_date if isinstance(item, Movie) else getattr(item, "first_air_date", None)
    return {
        "id": int(item.tmdb_id),
        "type": "movie" if isinstance(item, Movie) else "show",
        "title": text["title"],
        "overview": text["overview"],
        "year": _year(dated),
        "poster_path": item.poster_path,
        "genre_ids": _ints(item.genre_ids),
        "popularity": float(item.popularity or 0),
        "vote_average": float(item.vote_average or 0),
    }


def _genre_names(media_type: str, ids: list[int], lang: str) -> list[dict[str, Any]]:
    names = {int(g.genre_id): g.names for g in _all_genres() if g.media_type == media_type}
    base = lang.split("-")[0]
    return [{"id": i, "name": names.get(i, {}).get(base) or names.get(i, {}).get("en")} for i in ids]


def _all_genres() -> list[Genre]:
    """Every genre (one Query), kept a few minutes by a warm process: they change once a day at most."""
    if time.monotonic() - _genres["at"] > GENRES_FRESH_FOR:
        _genres["items"] = [g for g in CatalogItem.query("GENRES") if isinstance(g, Genre)]
        _genres["at"] = time.monotonic()
    return list(_genres["items"])


def _detail(item: Media, lang: str) -> dict[str, Any]:
    text, served = _text(item, lang)
    media_type = "movie" if isinstance(item, Movie) else "tv"
    view = summary(item, lang) | text
    view.update(
        language=served,
        original_title=item.original_title,
        original_language=item.original_language,
        genres=_genre_names(media_type, _ints(item.genre_ids), lang),
        vote_count=int(item.vote_count or 0),
        backdrop_path=item.backdrop_path,
        imdb_id=item.imdb_id,
        status=item.status,
        complete=item.synced_at is not None,
        removed=item.removed_at is not None,
        synced_at=item.synced_at.isoformat() if item.synced_at else None,
    )
    return view


def movie_view(movie: Movie, lang: str) -> dict[str, Any]:
    return _detail(movie, lang) | {"release_date": movie.release_date, "runtime": movie.runtime}


def show_view(show: Show, lang: str) -> dict[str, Any]:
    return _detail(show, lang) | {
        "first_air_date": show.first_air_date,
        "last_air_date": show.last_air_date,
        "in_production": bool(show.in_production),
        "number_of_seasons": int(show.number_of_seasons or 0),
        "number_of_episodes": int(show.number_of_episodes or 0),
        "seasons": show.seasons or [],
        "last_episode": show.last_episode,
        "next_episode": show.next_episode,
    }


# -- reads ------------------------------------------------------------------------------------------------


def _fetch_missing(fetch: Any, what: str) -> str:
    """Fetch what the catalog lacks while the caller waits; TMDB's trouble becomes a clear 404 / 503."""
    try:
        return str(fetch())
    except UpstreamNotFoundError:
        raise NotFoundError(f"{what} does not exist on TMDB") from None
    except RetryLaterError as exc:
        raise ServiceUnavailableError(f"TMDB is busy; try {what} again shortly", retry_after=exc.retry_after) from None
    except UpstreamError as exc:
        raise ServiceUnavailableError(f"TMDB is not answering for {what}: {exc.message}", retry_after=30) from None


def _get(model: Any, key: tuple[str, str]) -> Any:
    try:
        return model.get(*key)
    except model.DoesNotExist:
        return None


def _stored_or_fetched(model: Any, item_id: int, sync: Any, what: str) -> Any:
    """The stored item; fetched first (while the caller waits) when it is missing or only a list stub. A stub
    is served as it is when TMDB cannot be reached."""
    item = _get(model, model.key(item_id))
    if item is not None and item.synced_at is not None:
        return item
    try:
        outcome = _fetch_missing(lambda: sync(item_id, client=tmdb.get_tmdb(interactive=True)), what)
    except ServiceUnavailableError:
        if item is None:
            raise
        return item
    if outcome == "not_found":
        raise NotFoundError(f"{what} does not exist on TMDB")
    return model.get(*model.key(item_id), consistent_read=True)


def get_movie(movie_id: int, lang: str) -> dict[str, Any]:
    return movie_view(_stored_or_fetched(Movie, movie_id, sync_movie_now, f"movie {movie_id}"), lang)


def _show(show_id: int) -> Show:
    show: Show = _stored_or_fetched(Show, show_id, sync_show_now, f"show {show_id}")
    return show


def get_show(show_id: int, lang: str) -> dict[str, Any]:
    return show_view(_show(show_id), lang)


def _season_items(show_id: int, number: int) -> tuple[Season | None, list[Episode]]:
    prefix = Season.key(show_id, number)[1]
    season, episodes = None, []
    for item in CatalogItem.query(f"SHOW#{show_id}", CatalogItem.sk.startswith(prefix), consistent_read=True):
        if isinstance(item, Season):
            season = item
        elif isinstance(item, Episode):
            episodes.append(item)
    return season, episodes


def get_season(show_id: int, number: int, lang: str) -> dict[str, Any]:
    """One Query: the season and its episodes (episodes come in English)."""
    season, episodes = _season_items(show_id, number)
    if season is None or season.fetched_at is None:
        show = _show(show_id)
        if number not in {int(s["season_number"]) for s in show.seasons or []} and season is None:
            raise NotFoundError(f"show {show_id} has no season {number}")
        client = tmdb.get_tmdb(interactive=True)
        _fetch_missing(lambda: save_season(show, client.season(show_id, number)), f"season {number} of show {show_id}")
        season, episodes = _season_items(show_id, number)
        if season is None:
            raise NotFoundError(f"show {show_id} has no season {number}")
    return {
        "show_id": show_id,
        "season_number": number,
        "name": season.name,
        "overview": season.overview,
        "air_date": season.air_date,
        "poster_path": season.poster_path,
        "episode_count": len(episodes),
        "complete": season.fetched_at is not None,
        "episodes": [
            {
                "episode_number": int(e.episode_number),
                "name": e.name,
                "overview": e.overview,
                "air_date": e.air_date,
                "runtime": e.runtime,
                "still_path": e.still_path,
                "vote_average": float(e.vote_average or 0),
                "episode_type": e.episode_type,
            }
            for e in sorted(episodes, key=lambda e: int(e.episode_number))
        ],
    }


def lists() -> dict[str, Any]:
    """Every list, without its members (one Query)."""
    found = {
        item.slug: {
            "slug": item.slug,
            "name": item.name,
            "media_type": "movie" if item.media_type == "movie" else "show",
            "count": len(item.members or []),
            "refreshed_at": item.refreshed_at.isoformat() if item.refreshed_at else None,
        }
        for item in CatalogItem.query("LISTS")
        if isinstance(item, MediaList)
    }
    return {"lists": [found[slug] for slug in LISTS if slug in found]}


def get_list(slug: str, lang: str, page_size: int, cursor: str | None) -> dict[str, Any]:
    """One page of a list: GetItem for the list, BatchGetItem for its page of members."""
    if slug not in LISTS:
        raise NotFoundError(f"no list {slug!r}; there are {', '.join(LISTS)}")
    start = _offset(cursor)
    media_list = _get(MediaList, MediaList.key(slug))
    if media_list is None:
        raise NotFoundError(f"list {slug!r} has not been fetched yet")
    members = _ints(media_list.members)
    page = members[start : start + page_size]
    model: Any = Movie if media_list.media_type == "movie" else Show
    found = {int(i.tmdb_id): i for i in model.batch_get([model.key(i) for i in page])} if page else {}
    return {
        "slug": slug,
        "name": media_list.name,
        "media_type": "movie" if media_list.media_type == "movie" else "show",
        "refreshed_at": media_list.refreshed_at.isoformat() if media_list.refreshed_at else None,
        "total": len(members),
        "items": [summary(found[i], lang) for i in page if i in found],
        "next_cursor": _cursor(start + page_size, len(members)),
    }


def genres(media_type: str | None, lang: str) -> dict[str, Any]:
    if media_type not in (None, "movie", "tv"):
        raise ValidationError("type must be movie or tv", details={"field": "type"})
    base = lang.split("-")[0]
    return {
        "genres": [
            {"id": int(g.genre_id), "type": g.media_type, "name": g.names.get(base) or g.names.get("en")}
            for g in _all_genres()
            if media_type in (None, g.media_type)
        ]
    }


def find(q: str | None, lang: str, page_size: int, cursor: str | None) -> dict[str, Any]:
    """Title search: a Query on the index for the longest word typed (its entries come most popular first),
    then one BatchGetItem for the page. Usually one index page is enough; for a common word whose first
    page has too few matches for the other words typed, up to SEARCH_PAGES pages are read."""
    if q is not None and len(q) > 200:
        raise ValidationError("q must be at most 200 characters", details={"field": "q"})
    typed = search.query_words(q or "")
    if typed and len(typed[0]) > 100:  # no title has such a word, and a key condition must stay under 1 KiB
        typed[0] = typed[0][:100]
    if not typed or len(typed[0]) < search.MIN_QUERY:
        raise ValidationError(f"q needs a word of at least {search.MIN_QUERY} letters", details={"field": "q"})
    start = _offset(cursor)
    wanted = start + page_size + 1  # one more than the page, to know whether there is a next one
    first = typed[0]
    hits: dict[tuple[str, int], float] = {}
    entries = CatalogItem.query(f"SEARCH#{first[:2]}", CatalogItem.sk.startswith(first), page_size=SEARCH_CANDIDATES)
    for read_entries, entry in enumerate(entries, start=1):
        if isinstance(entry, SearchEntry) and search.matches(entry.titles, typed):
            hits.setdefault((entry.media_type, int(entry.media_id)), float(entry.popularity or 0))
        page_done = read_entries % SEARCH_CANDIDATES == 0
        if page_done and (len(hits) >= wanted or read_entries >= SEARCH_CANDIDATES * SEARCH_PAGES):
            break  # enough for this page (or read enough): leave the rest of the word's entries unread
    exhausted = entries.last_evaluated_key is None
    ranked = sorted(hits, key=lambda k: (-hits[k], k))
    page = ranked[start : start + page_size]
    keys = [Movie.key(i) if t == "movie" else Show.key(i) for t, i in page]
    items = {(i.pk, i.sk): i for i in CatalogItem.batch_get(keys) if isinstance(i, Media)} if keys else {}
    results = [summary(items[k], lang) for k in keys if k in items and items[k].removed_at is None]
    more = len(ranked) > start + page_size
    return {
        "query": q,
        "results": results,
        # Exact when every entry of the word was read; else how many were found so far ("at least").
        "total": len(ranked),
        "total_is_exact": exhausted,
        "next_cursor": _cursor(start + page_size, start + page_size + 1) if more else None,
    }
