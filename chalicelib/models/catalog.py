"""The catalog: movies, shows, seasons, episodes, genres, lists, sync state and the title search index.

One table, designed from the API's reads (each is at most two DynamoDB calls, none is a Scan):

    GET /movies/{id}               GetItem   MOVIE#<id> / MOVIE
    GET /shows/{id}                GetItem   SHOW#<id>  / SHOW        (season summaries live on the show)
    GET /shows/{id}/seasons/{n}    Query     SHOW#<id>  / begins_with SEASON#<n>  (the season and its episodes)
    GET /lists                     Query     LISTS
    GET /lists/{slug}              GetItem   LISTS / <slug>, then BatchGetItem of one page of members
    GET /genres                    Query     GENRES
    GET /search?q=                 Query     SEARCH#<first two letters> / begins_with <word>, then BatchGetItem

Items are told apart by PynamoDB's discriminator (`cls`), so a query returns typed models. The `due` index is
sparse and generic: an item that has work due at a time carries `due_pk` (what work) and `due_sk` (when), and
a planner reads only what is due, e.g. seasons to (re)fetch.
"""

from __future__ import annotations

from datetime import datetime

from pynamodb.attributes import (
    BooleanAttribute,
    DiscriminatorAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import Model

from chalicelib.models.base import TableMeta


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A movie's next source search is on the due index, in one of these tiers: new in the catalog (never
# searched) first, then popular ones, then the rest.
SOURCE_SEARCH = "SOURCE_SEARCH"
NEW, POPULAR, OTHERS = 0, 1, 2
POPULAR_FROM = 20.0  # TMDB popularity


class DueIndex(GlobalSecondaryIndex["CatalogItem"]):
    """Only what the planners read is copied to the index (keys, type, and the few fields they decide on):
    a tick reads a few hundred bytes per due item, not whole movies with their translations."""

    class Meta:
        index_name = "due"
        projection = IncludeProjection(
            ["cls", "tmdb_id", "popularity", "sources_searched_at", "show_id", "season_number"]
        )

    due_pk = UnicodeAttribute(hash_key=True)
    due_sk = UnicodeAttribute(range_key=True)


class CatalogItem(Model):
    class Meta(TableMeta):
        logical_name = "catalog"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    cls = DiscriminatorAttribute()
    due_pk = UnicodeAttribute(null=True)
    due_sk = UnicodeAttribute(null=True)

    by_due = DueIndex()

    def set_due(self, what: str | None, at: datetime | None = None) -> None:
        """Put the item on (or, with None, take it off) the due index for `what` at time `at`."""
        if what is None or at is None:
            self.due_pk = self.due_sk = None
        else:
            self.due_pk, self.due_sk = f"DUE#{what}", f"{iso(at)}#{self.pk}#{self.sk}"


class Media(CatalogItem):
    """What movies and shows share."""

    tmdb_id = NumberAttribute()
    imdb_id = UnicodeAttribute(null=True)
    title = UnicodeAttribute()  # a show's TMDB `name`
    original_title = UnicodeAttribute(null=True)
    original_language = UnicodeAttribute(null=True)
    overview = UnicodeAttribute(null=True)
    tagline = UnicodeAttribute(null=True)
    genre_ids = ListAttribute(of=NumberAttribute, default=list)
    popularity = NumberAttribute(default=0)
    vote_average = NumberAttribute(default=0)
    vote_count = NumberAttribute(default=0)
    poster_path = UnicodeAttribute(null=True)
    backdrop_path = UnicodeAttribute(null=True)
    status = UnicodeAttribute(null=True)
    # {"fr": {"title": ..., "overview": ..., "tagline": ...}, ...}; English is the item's own fields.
    translations = JSONAttribute(default=dict)
    # None: a stub made from a list entry, waiting for its full sync.
    synced_at = UTCDateTimeAttribute(null=True)
    # Set when TMDB answers 404 for it: kept (nothing is lost), served with `removed`, left out of lists.
    removed_at = UTCDateTimeAttribute(null=True)
    # The words this item is indexed under for search, and the popularity its entries carry (their order),
    # so a re-sync finds its entries' keys to replace or remove.
    search_words = ListAttribute(of=UnicodeAttribute, default=list)
    search_popularity = NumberAttribute(null=True)


class Movie(Media, discriminator="movie"):
    release_date = UnicodeAttribute(null=True)
    runtime = NumberAttribute(null=True)
    # Its source search (chalicelib/sources): when it last ran and what it found; the next one is on `due`.
    sources_searched_at = UTCDateTimeAttribute(null=True)
    sources_found = NumberAttribute(null=True)

    @staticmethod
    def key(movie_id: int) -> tuple[str, str]:
        return f"MOVIE#{movie_id}", "MOVIE"


class Show(Media, discriminator="show"):
    tvdb_id = NumberAttribute(null=True)
    first_air_date = UnicodeAttribute(null=True)
    last_air_date = UnicodeAttribute(null=True)
    in_production = BooleanAttribute(default=False)
    number_of_seasons = NumberAttribute(default=0)
    number_of_episodes = NumberAttribute(default=0)
    # TMDB's season summaries: [{"season_number", "name", "episode_count", "air_date", "poster_path"}, ...]
    seasons = JSONAttribute(default=list)
    last_episode = JSONAttribute(null=True)
    next_episode = JSONAttribute(null=True)

    @staticmethod
    def key(show_id: int) -> tuple[str, str]:
        return f"SHOW#{show_id}", "SHOW"

    @property
    def running(self) -> bool:
        return bool(self.in_production) or self.status in ("Returning Series", "In Production", "Planned", "Pilot")


class Season(CatalogItem, discriminator="season"):
    show_id = NumberAttribute()
    season_number = NumberAttribute()
    tmdb_id = NumberAttribute(null=True)
    name = UnicodeAttribute(null=True)
    overview = UnicodeAttribute(null=True)
    air_date = UnicodeAttribute(null=True)
    poster_path = UnicodeAttribute(null=True)
    episode_count = NumberAttribute(default=0)
    fetched_at = UTCDateTimeAttribute(null=True)  # None: known from the show, episodes not fetched yet

    @staticmethod
    def key(show_id: int, season_number: int) -> tuple[str, str]:
        return f"SHOW#{show_id}", f"SEASON#{season_number:04d}"


class Episode(CatalogItem, discriminator="episode"):
    show_id = NumberAttribute()
    season_number = NumberAttribute()
    episode_number = NumberAttribute()
    tmdb_id = NumberAttribute(null=True)
    name = UnicodeAttribute(null=True)
    overview = UnicodeAttribute(null=True)
    air_date = UnicodeAttribute(null=True)
    runtime = NumberAttribute(null=True)
    still_path = UnicodeAttribute(null=True)
    vote_average = NumberAttribute(default=0)
    vote_count = NumberAttribute(default=0)
    episode_type = UnicodeAttribute(null=True)

    @staticmethod
    def key(show_id: int, season_number: int, episode_number: int) -> tuple[str, str]:
        return f"SHOW#{show_id}", f"SEASON#{season_number:04d}#EP#{episode_number:04d}"


class ExternalId(CatalogItem, discriminator="alias"):
    """An outside id pointing at a catalog item, e.g. IMDB#tt0063350 -> movie 10331 (how feeds match)."""

    media_type = UnicodeAttribute()
    media_id = NumberAttribute()

    @staticmethod
    def key(kind: str, value: str) -> tuple[str, str]:
        return f"{kind.upper()}#{value}", "ALIAS"


class Genre(CatalogItem, discriminator="genre"):
    media_type = UnicodeAttribute()  # "movie" or "tv"
    genre_id = NumberAttribute()
    names = JSONAttribute(default=dict)  # {"en": "Drama", "fr": "Drame", ...}

    @staticmethod
    def key(media_type: str, genre_id: int) -> tuple[str, str]:
        return "GENRES", f"{media_type}#{genre_id:06d}"


class MediaList(CatalogItem, discriminator="list"):
    slug = UnicodeAttribute()
    name = UnicodeAttribute()
    media_type = UnicodeAttribute()  # "movie" or "tv"
    source = UnicodeAttribute()  # the TMDB list it mirrors, e.g. "movie/popular"
    members = ListAttribute(of=NumberAttribute, default=list)  # TMDB ids, in the list's order
    refreshed_at = UTCDateTimeAttribute(null=True)

    @staticmethod
    def key(slug: str) -> tuple[str, str]:
        return "LISTS", slug


class SyncState(CatalogItem, discriminator="sync"):
    name = UnicodeAttribute()
    cursor = UnicodeAttribute(null=True)  # e.g. the next UTC day to sync, YYYY-MM-DD
    last_sync_at = UTCDateTimeAttribute(null=True)
    data = JSONAttribute(default=dict)

    @staticmethod
    def key(name: str) -> tuple[str, str]:
        return "SYNC", name


class SearchEntry(CatalogItem, discriminator="search"):
    """One word of one item's titles: `SEARCH#<first two letters>` / `<word>#<rank>#<type>#<id>`, where the rank
    orders an exact word's items most popular first. A prefix query finds every item with a word starting
    with what was typed, the most popular of each word first."""

    word = UnicodeAttribute()
    media_type = UnicodeAttribute()
    media_id = NumberAttribute()
    popularity = NumberAttribute(default=0)
    titles = UnicodeAttribute(default="")  # every indexed title, normalized, to match the other words typed

    @staticmethod
    def key(word: str, popularity: float, media_type: str, media_id: int) -> tuple[str, str]:
        rank = 9_999_999_999 - min(9_999_999_999, max(0, int(popularity * 1000)))
        return f"SEARCH#{word[:2]}", f"{word}#{rank:010d}#{media_type}#{media_id}"
