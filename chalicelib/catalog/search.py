"""Title search over the stored catalog, without a Scan.

Every word of an item's titles (English, original, and the translations in CATALOG_LANGUAGES) is an index
entry `SEARCH#<first two letters>` / `<word>#<type>#<id>`. A search queries the entries of its longest word
by prefix (one Query), keeps the items whose titles also have the other words typed, ranks them by
popularity, and reads one page of them (one BatchGetItem).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Words too common to index (they would make huge partitions and match everything): en, fr, de, es.
_COMMON = (
    "a an and the of in on to at for",
    "le la les l un une des du de et",
    "der die das den dem des ein eine und von",
    "el los las un una y del",
)
STOPWORDS = frozenset(" ".join(_COMMON).split())
MAX_WORDS = 45  # per item: its old and new entries and its own write fit in one DynamoDB transaction
MIN_QUERY = 2


def normalize(text: str) -> str:
    """Lower case, accents dropped, anything but letters and digits turned into spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[\W_]+", " ", plain).split())


def words(titles: Iterable[str | None]) -> list[str]:
    """The words to index an item under, in a stable order."""
    found: dict[str, None] = {}
    for title in titles:
        for word in normalize(title or "").split():
            if word not in STOPWORDS:
                found.setdefault(word[:64])
    return sorted(found)[:MAX_WORDS]


def titles_text(titles: Iterable[str | None]) -> str:
    return " | ".join(dict.fromkeys(normalize(t) for t in titles if t))


def query_words(q: str) -> list[str]:
    """The words of a search, longest (most selective) first; stopwords only if nothing else was typed."""
    typed = normalize(q).split()
    kept = [w for w in typed if w not in STOPWORDS] or typed
    return sorted(dict.fromkeys(kept), key=lambda w: (-len(w), w))


def matches(entry_titles: str, typed: list[str]) -> bool:
    """Whether every typed word starts some word of the item's titles."""
    title_words = entry_titles.replace("|", " ").split()
    return all(any(w.startswith(t) for w in title_words) for t in typed)
