"""Fuzzing what sources read from outside: Torznab XML, magnets and YTS answers raise only the project's
typed errors (or give a result), never a crash of the parser itself."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import quoteattr

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chalicelib.errors import ProjectionistError
from chalicelib.upstreams import torznab, yts
from chalicelib.upstreams.http import JsonApi, TransientUpstreamError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2000))
def test_torznab_parse_of_any_bytes_raises_only_typed_errors(body: bytes) -> None:
    try:
        items = torznab.parse(body)
    except ProjectionistError:
        return
    assert isinstance(items, list)


attr_names = st.sampled_from(["seeders", "peers", "leechers", "size", "infohash", "magneturl", "imdb", "imdbid",
                              "tmdbid", "tvdbid", "season", "episode", "category", "other"])  # fmt: skip


@FUZZ
@given(
    st.lists(
        st.tuples(st.text(max_size=60), st.lists(st.tuples(attr_names, st.text(max_size=80)), max_size=8)),
        max_size=5,
    )
)
# Characters str.isdigit() takes for digits and int() refuses (or reads): one crashed the parser.
@example([("Film 2001 1080p", [("imdbid", "\u00b2"), ("seeders", "\u0663"), ("size", "\u00b9\u00b2")])])
def test_torznab_items_with_any_attribute_values_parse(items: list[tuple[str, list[tuple[str, str]]]]) -> None:
    xml = ['<rss version="2.0" xmlns:torznab="http://torznab.com/schemas/2015/feed"><channel>']
    for title, attrs in items:
        safe_title = "".join(c for c in title if c.isprintable() and c not in "<&")
        xml.append(f"<item><title>{safe_title}</title>")
        xml += [f"<torznab:attr name={quoteattr(n)} value={quoteattr(_printable(v))}/>" for n, v in attrs]
        xml.append("</item>")
    xml.append("</channel></rss>")
    try:
        parsed = torznab.parse("".join(xml).encode())
    except ProjectionistError:
        return
    for item in parsed:
        assert item.title
        assert item.infohash is None or (len(item.infohash) == 40 and item.infohash == item.infohash.lower())
        assert item.imdb_id is None or item.imdb_id.startswith("tt")


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable())


def test_an_error_answer_is_typed_and_a_bad_key_is_permanent() -> None:
    try:
        torznab.parse(b'<error code="100" description="Incorrect user credentials"/>')
    except torznab.TorznabAuthError as exc:
        assert exc.permanent
    else:
        raise AssertionError("no error raised")
    try:
        torznab.parse(b'<error code="900" description="Unknown error"/>')
    except torznab.TorznabError as exc:
        assert not exc.permanent


def test_a_hostile_document_with_entities_is_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><rss>&b;</rss>'
    try:
        torznab.parse(bomb)
    except TransientUpstreamError:
        return
    raise AssertionError("an entity-expanding document was parsed")


@FUZZ
@given(st.text(max_size=300))
def test_a_magnet_of_any_text_gives_a_hash_or_none(text: str) -> None:
    found = torznab.infohash_of_magnet("magnet:?" + text)
    assert found is None or (len(found) == 40 and int(found, 16) >= 0)


def test_a_magnet_gives_its_hash_in_lower_case() -> None:
    uri = "magnet:?xt=urn:btih:ABCDEF0123456789ABCDEF0123456789ABCDEF01&dn=x&tr=udp%3A%2F%2Ft%3A1"
    assert torznab.infohash_of_magnet(uri) == "abcdef0123456789abcdef0123456789abcdef01"
    assert torznab.infohash_of_magnet("magnet:?xt=urn:sha1:XYZ") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)


@FUZZ
@given(json_values)
def test_any_json_from_yts_is_a_list_response_or_a_transient_error(data: Any) -> None:
    api = JsonApi(name="yts test", base_url="http://127.0.0.1:9")
    try:
        response = api._validate("/api/v2/list_movies.json", data, yts.ListResponse)
    except TransientUpstreamError:
        return
    assert response.status in ("ok", "error")
