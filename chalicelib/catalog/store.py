"""Writing TMDB's answers into the catalog.

An item is written with UpdateItem actions for the fields TMDB owns (fields that other parts of the app add
to an item stay untouched), in one transaction with the changes to its search entries, so the catalog never
holds half an item. A season and its episodes are written in transactions of up to 99 episodes; the season
item goes in the last one, so a crash leaves the season due and the next run rewrites it all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from chalicelib.catalog import search
from chalicelib.clock import utcnow
from chalicelib.models.base import connection
from chalicelib.models.catalog import (
    NEW,
    SOURCE_SEARCH,
    CatalogItem,
    Episode,
    ExternalId,
    Media,
    Movie,
    SearchEntry,
    Season,
    Show,
)
from chalicelib.upstreams import tmdb

LATEST_SEASON_EVERY = timedelta(hours=3)  # the latest season of a running show
RUNNING_SEASON_EVERY = timedelta(hours=24)  # its other seasons
ENDED_SEASON_EVERY = timedelta(days=90)  # every season of a show that has ended
SEASONS_DUE = "SEASONS"
TRANSACTION_ITEMS = 100


def actions(model: type[CatalogItem], values: dict[str, Any]) -> list[Action]:
    """SET each value (REMOVE it when None), and the item's type."""
    result: list[Action] = [model.cls.set(model)]
    for name, value in values.items():
        attribute = getattr(model, name)
        result.append(attribute.remove() if value is None else attribute.set(value))
    return result


def _translations(details: tmdb.MovieDetails | tmdb.ShowDetails, languages: Sequence[str]) -> dict[str, Any]:
    """{"fr": {...}, "fr-CA": {...}}: the base language from its main country (or the first seen), and each
    language-country pair too, for the languages the catalog keeps."""
    kept: dict[str, Any] = {}
    for translation in details.translations.translations:
        language = translation.iso_639_1
        if language == "en" or language not in languages:
            continue
        data = translation.data
        entry = {
            "title": data.title or data.name or None,
            "overview": data.overview or None,
            "tagline": data.tagline or None,
        }
        entry = {k: v for k, v in entry.items() if v}
        if not entry:
            continue
        if translation.iso_3166_1:
            kept[f"{language}-{translation.iso_3166_1}"] = entry
        main_country = language.upper() == translation.iso_3166_1
        if language not in kept or main_country:
            kept[language] = entry
    return kept


def _best_image(images: list[tmdb.Image], fallback: str | None) -> str | None:
    if fallback:
        return fallback
    ranked = sorted(images, key=lambda i: (i.iso_639_1 not in ("en", None), -i.vote_average))
    return ranked[0].file_path if ranked else None


def _media_values(
    details: tmdb.MovieDetails | tmdb.ShowDetails, languages: Sequence[str], now: datetime
) -> dict[str, Any]:
    return {
        "tmdb_id": details.id,
        "original_language": details.original_language,
        "overview": details.overview or None,
        "tagline": details.tagline or None,
        "genre_ids": [g.id for g in details.genres],
        "popularity": details.popularity,
        "vote_average": details.vote_average,
        "vote_count": details.vote_count,
        "poster_path": _best_image(details.images.posters, details.poster_path),
        "backdrop_path": _best_image(details.images.backdrops, details.backdrop_path),
        "status": details.status,
        "translations": _translations(details, languages),
        "synced_at": now,
        "removed_at": None,
    }


def _search_titles(title: str, original: str | None, translations: dict[str, Any]) -> list[str]:
    return [title, original or "", *(t.get("title", "") for t in translations.values())]


def _write(
    model: type[Movie] | type[Show],
    key: tuple[str, str],
    values: dict[str, Any],
    existing: Media | None,
    media_type: str,
    media_id: int,
) -> None:
    """The item's update and its search entries' changes, in one transaction.

    Every entry carries the item's titles and popularity (its place in the index): when either moved, all of
    the item's entries are replaced; otherwise only words gained or lost are written.
    """
    titles = _search_titles(values["title"], values.get("original_title"), values.get("translations") or {})
    new_words = search.words(titles)
    text = search.titles_text(titles)
    old_words: list[str] = [str(w) for w in existing.search_words or []] if existing is not None else []
    old_popularity = float(existing.search_popularity or 0) if existing is not None else 0.0
    old_text = (
        search.titles_text(_search_titles(existing.title, existing.original_title, existing.translations or {}))
        if existing is not None
        else None
    )
    popularity = float(values["popularity"])
    if old_words and abs(popularity - old_popularity) <= 0.25 * max(1.0, old_popularity) and text == old_text:
        popularity = old_popularity  # close enough: keep the entries where they are
        removed, added = set(old_words) - set(new_words), set(new_words) - set(old_words)
    else:
        removed, added = set(old_words), set(new_words)
    values = values | {"search_words": new_words, "search_popularity": popularity}
    if existing is None and model is Movie:  # new in the catalog: first in line for a source search
        due = Movie(*key)
        due.set_due(f"{SOURCE_SEARCH}#{NEW}", utcnow())
        values |= {"due_pk": due.due_pk, "due_sk": due.due_sk}
    same_place = SearchEntry.key("", popularity, media_type, media_id) == SearchEntry.key(
        "", old_popularity, media_type, media_id
    )
    imdb_id = values.get("imdb_id")
    with TransactWrite(connection=connection()) as tx:
        tx.update(model(*key), actions=actions(model, values))
        if imdb_id and (existing is None or existing.imdb_id != imdb_id):  # how feeds find it by IMDb id
            tx.save(ExternalId(*ExternalId.key("imdb", imdb_id), media_type=media_type, media_id=media_id))
        # (An entry kept at the same key is overwritten, not deleted: a transaction touches an item once.)
        for word in sorted(removed - added if same_place else removed):
            tx.delete(SearchEntry(*SearchEntry.key(word, old_popularity, media_type, media_id)))
        for word in sorted(added):
            entry = SearchEntry(
                *SearchEntry.key(word, popularity, media_type, media_id),
                word=word,
                media_type=media_type,
                media_id=media_id,
                popularity=popularity,
                titles=text,
            )
            tx.save(entry)


def _get(model: type[Movie] | type[Show], key: tuple[str, str]) -> Any:
    try:
        return model.get(*key, consistent_read=True)
    except model.DoesNotExist:
        return None


def save_movie(details: tmdb.MovieDetails, languages: Sequence[str], now: datetime | None = None) -> None:
    now = now or utcnow()
    values = _media_values(details, languages, now) | {
        "title": details.title,
        "original_title": details.original_title,
        "imdb_id": details.imdb_id or details.external_ids.imdb_id,
        "release_date": details.release_date,
        "runtime": details.runtime,
    }
    key = Movie.key(details.id)
    _write(Movie, key, values, _get(Movie, key), "movie", details.id)


def save_stub(media_type: str, item: tmdb.ListItem, languages: Sequence[str]) -> None:
    """A movie or show known only from a list entry (synced_at stays unset until its full sync)."""
    model: type[Movie] | type[Show] = Movie if media_type == "movie" else Show
    values: dict[str, Any] = {
        "tmdb_id": item.id,
        "title": item.title or item.name or f"#{item.id}",
        "original_title": item.original_title or item.original_name,
        "original_language": item.original_language,
        "overview": item.overview or None,
        "genre_ids": item.genre_ids,
        "popularity": item.popularity,
        "vote_average": item.vote_average,
        "vote_count": item.vote_count,
        "poster_path": item.poster_path,
        "backdrop_path": item.backdrop_path,
    }
    if model is Movie:
        values["release_date"] = item.release_date
    else:
        values["first_air_date"] = item.first_air_date
    _write(model, model.key(item.id), values, None, media_type, item.id)


def save_show(details: tmdb.ShowDetails, languages: Sequence[str], now: datetime | None = None) -> Show:
    """Write the show, and make its seasons due: new ones and ones whose episode count changed now, the others
    on the schedule the show's state gives them (a show that ended is looked at every 90 days)."""
    now = now or utcnow()
    key = Show.key(details.id)
    existing = _get(Show, key)
    values = _media_values(details, languages, now) | {
        "title": details.name,
        "original_title": details.original_name,
        "imdb_id": details.external_ids.imdb_id,
        "tvdb_id": details.external_ids.tvdb_id,
        "first_air_date": details.first_air_date,
        "last_air_date": details.last_air_date,
        "in_production": details.in_production,
        "number_of_seasons": details.number_of_seasons,
        "number_of_episodes": details.number_of_episodes,
        "seasons": [s.model_dump(exclude={"overview"}) for s in details.seasons],
        "last_episode": details.last_episode_to_air.model_dump() if details.last_episode_to_air else None,
        "next_episode": details.next_episode_to_air.model_dump() if details.next_episode_to_air else None,
    }
    _write(Show, key, values, existing, "tv", details.id)
    show = Show.get(*key, consistent_read=True)
    schedule_seasons(show, {s.season_number: s for s in details.seasons}, now=now)
    return show


def latest_season(show: Show) -> int | None:
    numbers = [int(s["season_number"]) for s in show.seasons or [] if int(s["season_number"]) > 0]
    upcoming = (show.next_episode or {}).get("season_number")
    if upcoming is not None:
        numbers.append(int(upcoming))
    return max(numbers) if numbers else None


def season_due(show: Show, season_number: int, fetched_at: datetime | None, now: datetime) -> datetime:
    """When a season should be fetched (again)."""
    if fetched_at is None:
        return now
    if not show.running:
        return fetched_at + ENDED_SEASON_EVERY
    if season_number == latest_season(show):
        return fetched_at + LATEST_SEASON_EVERY
    return fetched_at + RUNNING_SEASON_EVERY


def schedule_seasons(
    show: Show, summaries: dict[int, tmdb.SeasonSummary], *, now: datetime, all_now: bool = False
) -> None:
    """Create the seasons the show lists that are missing, and set each one's due time."""
    show_id = int(show.tmdb_id)
    keys = [Season.key(show_id, number) for number in summaries]
    stored = {int(s.season_number): s for s in _batch_get(Season, keys)}
    with Season.batch_write() as batch:
        for number, summary in summaries.items():
            season = stored.get(number)
            if season is None:
                season = Season(*Season.key(show_id, number), show_id=show_id, season_number=number)
            changed = season.episode_count != summary.episode_count or season.air_date != summary.air_date
            season.tmdb_id, season.name = summary.id, summary.name
            season.air_date, season.poster_path = summary.air_date, summary.poster_path
            season.episode_count = summary.episode_count
            fetched = None if (all_now or changed) else season.fetched_at
            season.set_due(SEASONS_DUE, season_due(show, number, fetched, now))
            batch.save(season)


def save_season(show: Show, details: tmdb.SeasonDetails, now: datetime | None = None) -> None:
    now = now or utcnow()
    show_id = int(show.tmdb_id)
    number = details.season_number
    episode_actions = [
        (
            Episode(*Episode.key(show_id, number, e.episode_number)),
            actions(
                Episode,
                {
                    "show_id": show_id,
                    "season_number": number,
                    "episode_number": e.episode_number,
                    "tmdb_id": e.id,
                    "name": e.name or None,
                    "overview": e.overview or None,
                    "air_date": e.air_date,
                    "runtime": e.runtime,
                    "still_path": e.still_path,
                    "vote_average": e.vote_average,
                    "vote_count": e.vote_count,
                    "episode_type": e.episode_type,
                },
            ),
        )
        for e in details.episodes
    ]
    season = Season(*Season.key(show_id, number))
    season.set_due(SEASONS_DUE, season_due(show, number, now, now))
    season_values = {
        "show_id": show_id,
        "season_number": number,
        "tmdb_id": details.id,
        "name": details.name or None,
        "overview": details.overview or None,
        "air_date": details.air_date,
        "poster_path": details.poster_path,
        "episode_count": len(details.episodes),
        "fetched_at": now,
        "due_pk": season.due_pk,
        "due_sk": season.due_sk,
    }
    chunks = [
        episode_actions[i : i + TRANSACTION_ITEMS - 1] for i in range(0, len(episode_actions), TRANSACTION_ITEMS - 1)
    ]
    for index, chunk in enumerate(chunks or [[]]):
        with TransactWrite(connection=connection()) as tx:
            for item, item_actions in chunk:
                tx.update(item, actions=item_actions)
            if index == len(chunks or [[]]) - 1:
                tx.update(season, actions=actions(Season, season_values))


def mark_removed(model: type[Movie] | type[Show], media_id: int, now: datetime | None = None) -> bool:
    """TMDB no longer has it: keep the item, flagged, and stop scheduling work for it. False if not stored."""
    now = now or utcnow()
    key = model.key(media_id)
    if _get(model, key) is None:
        return False
    model(*key).update(actions=[model.removed_at.set(now), model.synced_at.set(now)])
    return True


def _batch_get(model: Any, keys: Iterable[tuple[str, str]]) -> list[Any]:
    unique = list(dict.fromkeys(keys))
    return list(model.batch_get(unique)) if unique else []


def stored(media_type: str, ids: Iterable[int]) -> dict[int, Media]:
    """The catalog's items among `ids` (BatchGetItem, 100 keys a request)."""
    model: Any = Movie if media_type == "movie" else Show
    return {int(item.tmdb_id): item for item in _batch_get(model, [model.key(i) for i in ids])}
