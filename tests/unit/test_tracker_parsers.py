"""Tracker scrape parsing, without a network: BEP 15 UDP packets, BEP 48 bencoded answers, infohashes and URLs.

The fuzz tests feed arbitrary and nearly valid bytes to the pure parsers: they must return results or raise
one of the module's TrackerErrors, never IndexError, struct.error, KeyError, TypeError or UnicodeDecodeError.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any

import pytest
from fastbencode import bencode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.errors import UpstreamError, ValidationError
from chalicelib.upstreams.trackers import (
    ACTION_CONNECT,
    ACTION_ERROR,
    ACTION_SCRAPE,
    PROTOCOL_ID,
    UDP_MAX_PER_REQUEST,
    AllTrackersFailedError,
    ConnectionCache,
    Scraper,
    ScrapeResult,
    ScrapeUnsupportedError,
    TrackerError,
    TrackerFailureError,
    TrackerProtocolError,
    TrackerTimeoutError,
    build_connect_request,
    build_scrape_request,
    normalize_infohash,
    normalize_infohashes,
    parse_connect_response,
    parse_http_scrape,
    parse_scrape_response,
    peek_transaction_id,
    scrape,
    scrape_url,
    udp_address,
)

# No example database: it would leave a .hypothesis/ directory in the checkout.
FUZZ = settings(database=None, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TID = 0x12345678
u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)


def header(action: int, tid: int = TID) -> bytes:
    return struct.pack(">II", action, tid)


def scrape_answer(entries: list[tuple[int, int, int]], tid: int = TID) -> bytes:
    return header(ACTION_SCRAPE, tid) + b"".join(struct.pack(">iii", s, c, leech) for s, c, leech in entries)


# --- UDP: example-based --------------------------------------------------------------------------------------


def test_connect_request_is_protocol_id_action_and_transaction() -> None:
    assert build_connect_request(TID) == struct.pack(">QII", PROTOCOL_ID, ACTION_CONNECT, TID)
    assert len(build_connect_request(TID)) == 16


def test_connect_answer_gives_the_connection_id() -> None:
    assert parse_connect_response(header(ACTION_CONNECT) + struct.pack(">Q", 0xDEADBEEF01), TID) == 0xDEADBEEF01


def test_scrape_request_carries_up_to_74_infohashes() -> None:
    hashes = [bytes([i]) * 20 for i in range(UDP_MAX_PER_REQUEST)]
    packet = build_scrape_request(42, TID, hashes)
    assert packet[:16] == struct.pack(">QII", 42, ACTION_SCRAPE, TID)
    assert packet[16:] == b"".join(hashes) and len(packet) == 16 + 74 * 20
    with pytest.raises(ValueError):
        build_scrape_request(42, TID, [*hashes, b"x" * 20])
    with pytest.raises(ValueError):
        build_scrape_request(42, TID, [b"short"])


def test_scrape_answer_in_request_order_and_field_order() -> None:
    # BEP 15 orders each entry seeders, completed, leechers.
    packet = scrape_answer([(5, 100, 2), (0, 0, 0), (1, 7, 3)])
    assert parse_scrape_response(packet, TID, 3) == [
        ScrapeResult(seeders=5, leechers=2, completed=100),
        ScrapeResult(0, 0, 0),
        ScrapeResult(seeders=1, leechers=3, completed=7),
    ]


def test_scrape_answer_of_74_with_trailing_bytes() -> None:
    packet = scrape_answer([(i, i * 2, i * 3) for i in range(74)]) + b"\0\0"
    results = parse_scrape_response(packet, TID, 74)
    assert len(results) == 74 and results[73] == ScrapeResult(73, 219, 146)


@pytest.mark.parametrize(
    ("packet", "count", "error"),
    [
        (b"", 1, TrackerProtocolError),
        (b"\0\0\0\2\x12\x34\x56", 1, TrackerProtocolError),  # shorter than a header
        (scrape_answer([(1, 1, 1)])[:-1], 1, TrackerProtocolError),  # one byte short
        (scrape_answer([(1, 1, 1)]), 2, TrackerProtocolError),  # fewer entries than asked
        (scrape_answer([(1, 1, 1)], tid=TID + 1), 1, TrackerProtocolError),  # someone else's transaction
        (header(ACTION_CONNECT) + b"\0" * 12, 1, TrackerProtocolError),  # wrong action
        (scrape_answer([(-1, 0, 0)]), 1, TrackerProtocolError),  # a negative count
        (header(ACTION_ERROR) + b"Connection ID missmatch.\0", 1, TrackerFailureError),
        (header(ACTION_ERROR), 1, TrackerFailureError),  # an error without a message
    ],
)
def test_bad_scrape_answers_are_typed_errors(packet: bytes, count: int, error: type[TrackerError]) -> None:
    with pytest.raises(error):
        parse_scrape_response(packet, TID, count)


def test_error_action_message_is_decoded_leniently() -> None:
    with pytest.raises(TrackerFailureError, match="Connection ID missmatch") as info:
        parse_connect_response(header(ACTION_ERROR) + b"Connection ID missmatch.\0", TID)
    assert info.value.permanent and isinstance(info.value, UpstreamError)
    with pytest.raises(TrackerFailureError, match="bad \ufffd"):
        parse_scrape_response(header(ACTION_ERROR) + b"bad \xff", TID, 1)


def test_connect_answer_short_or_mismatched() -> None:
    with pytest.raises(TrackerProtocolError):
        parse_connect_response(header(ACTION_CONNECT) + b"\0" * 7, TID)
    with pytest.raises(TrackerProtocolError):
        parse_connect_response(header(ACTION_CONNECT, TID ^ 1) + b"\0" * 8, TID)
    with pytest.raises(TrackerProtocolError):
        peek_transaction_id(b"\0" * 7)
    assert peek_transaction_id(header(ACTION_SCRAPE)) == TID


# --- UDP: fuzz -----------------------------------------------------------------------------------------------


def returns_or_tracker_error(parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except TrackerError:
        return None


@FUZZ
@given(st.binary(max_size=2048), u32)
def test_connect_parser_fuzz(packet: bytes, tid: int) -> None:
    result = returns_or_tracker_error(parse_connect_response, packet, tid)
    assert result is None or 0 <= result < 2**64


@FUZZ
@given(st.binary(max_size=2048), u32, st.integers(0, UDP_MAX_PER_REQUEST + 5))
def test_scrape_parser_fuzz(packet: bytes, tid: int, count: int) -> None:
    results = returns_or_tracker_error(parse_scrape_response, packet, tid, count)
    assert results is None or len(results) == count


@FUZZ
@given(st.binary(max_size=64))
def test_peek_transaction_id_fuzz(packet: bytes) -> None:
    tid = returns_or_tracker_error(peek_transaction_id, packet)
    assert tid is None or 0 <= tid < 2**32


@st.composite
def near_valid_scrape_answers(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A header with a plausible action and transaction, then entries that may be short, extra or negative."""
    count = draw(st.integers(0, UDP_MAX_PER_REQUEST))
    action = draw(st.sampled_from([ACTION_CONNECT, ACTION_SCRAPE, ACTION_SCRAPE, ACTION_ERROR, 1, 7, 2**32 - 1]))
    tid = draw(st.one_of(st.just(TID), u32))
    entries = draw(st.lists(st.tuples(i32, i32, i32), min_size=max(0, count - 2), max_size=count + 2))
    body = b"".join(struct.pack(">iii", *e) for e in entries)
    if action == ACTION_ERROR:
        body = draw(st.binary(max_size=200))
    cut = draw(st.integers(0, 11))
    packet = header(action, tid) + body
    return (packet[: len(packet) - cut] if draw(st.booleans()) else packet), TID, count


@FUZZ
@given(near_valid_scrape_answers())
def test_scrape_parser_near_valid(case: tuple[bytes, int, int]) -> None:
    packet, tid, count = case
    results = returns_or_tracker_error(parse_scrape_response, packet, tid, count)
    if results is not None:
        assert len(results) == count
        assert all(r.seeders >= 0 and r.leechers >= 0 and r.completed >= 0 for r in results)


counts31 = st.integers(0, 2**31 - 1)


@FUZZ
@given(st.lists(st.tuples(counts31, counts31, counts31), min_size=1, max_size=UDP_MAX_PER_REQUEST), u32)
def test_valid_scrape_answers_round_trip(entries: list[tuple[int, int, int]], tid: int) -> None:
    assert parse_scrape_response(scrape_answer(entries, tid), tid, len(entries)) == [
        ScrapeResult(seeders=s, leechers=leech, completed=c) for s, c, leech in entries
    ]


# --- HTTP (BEP 48): example-based ----------------------------------------------------------------------------

A, B, C = b"\xaa" * 20, b"\xbb" * 20, b"\xcc" * 20


def test_http_multi_scrape_by_raw_hash() -> None:
    body = bencode(
        {
            b"files": {
                A: {b"complete": 3, b"incomplete": 1, b"downloaded": 10},
                B: {b"complete": 0, b"incomplete": 2, b"downloaded": 0, b"name": b"x"},
            }
        }
    )
    assert parse_http_scrape(body, [A, B, C]) == {
        A: ScrapeResult(seeders=3, leechers=1, completed=10),
        B: ScrapeResult(seeders=0, leechers=2, completed=0),
        C: ScrapeResult(0, 0, 0),  # the tracker does not know it
    }


def test_http_opentracker_answer_for_unknown_hashes() -> None:
    assert parse_http_scrape(b"d5:filesdee", [A]) == {A: ScrapeResult(0, 0, 0)}


def test_http_missing_counts_are_zero() -> None:
    body = bencode({b"files": {A: {b"complete": 4}}})
    assert parse_http_scrape(body, [A]) == {A: ScrapeResult(seeders=4, leechers=0, completed=0)}


def test_http_failure_reason_is_a_tracker_failure() -> None:
    body = b"d14:failure reason63:Requested download is not authorized for use with this tracker.e"
    with pytest.raises(TrackerFailureError, match="not authorized") as info:
        parse_http_scrape(body, [A])
    assert info.value.permanent
    with pytest.raises(TrackerFailureError):
        parse_http_scrape(bencode({b"failure reason": 12}), [A])


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>maintenance</html>",
        b"d5:files",  # truncated
        b"le",  # a list
        b"i3e",
        bencode({b"files": []}),
        bencode({b"nofiles": {}}),
        bencode({b"files": {A: b"3"}}),
        bencode({b"files": {A: {b"complete": b"3"}}}),
        bencode({b"files": {A: {b"complete": -1}}}),
        bencode({b"files": {A: {b"complete": [1]}}}),
    ],
)
def test_http_bad_answers_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(TrackerProtocolError):
        parse_http_scrape(body, [A])


# --- HTTP: fuzz ----------------------------------------------------------------------------------------------

leaves = st.one_of(st.integers(-(2**70), 2**70), st.binary(max_size=30))
bencodable = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.binary(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def near_valid_http_answers(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A bencoded dict with a `files` dict keyed by (some of) the asked hashes, with values of any shape."""
    hashes = draw(st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=5, unique=True))
    counts = st.one_of(st.integers(-5, 2**40), bencodable)
    entry = st.one_of(
        st.fixed_dictionaries(
            {},
            optional={b"complete": counts, b"incomplete": counts, b"downloaded": counts, b"name": bencodable},
        ),
        bencodable,
    )
    files = draw(st.dictionaries(st.sampled_from(hashes) | st.binary(max_size=20), entry, max_size=6))
    top: dict[bytes, Any] = {b"files": draw(st.one_of(st.just(files), bencodable))}
    if draw(st.booleans()):
        top[b"failure reason"] = draw(bencodable)
    if draw(st.booleans()):
        top.update(draw(st.dictionaries(st.binary(max_size=12), bencodable, max_size=3)))
    body = bencode(top)
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return body, hashes


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.binary(min_size=20, max_size=20), max_size=5))
def test_http_parser_fuzz(body: bytes, hashes: list[bytes]) -> None:
    results = returns_or_tracker_error(parse_http_scrape, body, hashes)
    assert results is None or set(results) == set(hashes)


@FUZZ
@given(bencodable, st.lists(st.binary(min_size=20, max_size=20), max_size=3))
def test_http_parser_any_bencode(value: Any, hashes: list[bytes]) -> None:
    returns_or_tracker_error(parse_http_scrape, bencode(value), hashes)


@FUZZ
@given(near_valid_http_answers())
def test_http_parser_near_valid(case: tuple[bytes, list[bytes]]) -> None:
    body, hashes = case
    results = returns_or_tracker_error(parse_http_scrape, body, hashes)
    if results is not None:
        assert set(results) == set(hashes)
        assert all(min(r.seeders, r.leechers, r.completed) >= 0 for r in results.values())


# --- infohashes, URLs, merging, errors -----------------------------------------------------------------------


def test_infohashes_are_hex_40_and_lower_cased() -> None:
    assert normalize_infohash("AB" * 20) == "ab" * 20
    assert normalize_infohashes(["AB" * 20, "ab" * 20, "cd" * 20]) == ["ab" * 20, "cd" * 20]


@pytest.mark.parametrize(
    "value",
    ["ab" * 19, "ab" * 21, "ab" * 19 + "zz", "ab" * 20 + "\n", " " + "ab" * 20, "A" * 32, "", None, 1, b"ab" * 20],
)
def test_other_infohashes_are_validation_errors(value: Any) -> None:
    with pytest.raises(ValidationError):
        normalize_infohash(value)


def test_a_bare_string_is_not_a_list_of_infohashes() -> None:
    with pytest.raises(ValidationError):
        normalize_infohashes("ab" * 20)


@FUZZ
@given(st.text(max_size=50))
def test_infohash_validation_fuzz(value: str) -> None:
    try:
        normalized = normalize_infohash(value)
    except ValidationError:
        return
    assert len(normalized) == 40 and bytes.fromhex(normalized) and normalized == value.lower()


@pytest.mark.parametrize(
    ("announce", "scrape"),
    [
        ("http://t.example/announce", "http://t.example/scrape"),
        ("https://t.example:8443/announce", "https://t.example:8443/scrape"),
        ("http://t.example/x/announce", "http://t.example/x/scrape"),
        ("http://t.example/x/announce.php", "http://t.example/x/scrape.php"),
        ("http://t.example/announce?passkey=abc", "http://t.example/scrape?passkey=abc"),
        ("http://t.example/path/announce?x=/announce", "http://t.example/path/scrape?x=/announce"),
        ("http://t.example/announce#frag", "http://t.example/scrape"),
    ],
)
def test_announce_to_scrape_url(announce: str, scrape: str) -> None:
    assert scrape_url(announce) == scrape


@pytest.mark.parametrize(
    "announce",
    [
        "http://t.example/a",
        "http://t.example/announce/",
        "http://t.example/x/announce/y",
        "http://t.example/",
        "http://t.example",
        "http://t.example/ann",
        "udp://t.example:80/announce",
        "wss://t.example/announce",
        "not a url",
        "http://[::1/announce",
    ],
)
def test_trackers_without_announce_do_not_scrape(announce: str) -> None:
    with pytest.raises(ScrapeUnsupportedError) as info:
        scrape_url(announce)
    assert info.value.permanent


@FUZZ
@given(st.text(max_size=80))
def test_scrape_url_fuzz(text: str) -> None:
    for url in (text, "http://" + text, "http://h/" + text + "/announce"):
        with contextlib.suppress(ScrapeUnsupportedError):
            scrape_url(url)


def test_udp_addresses() -> None:
    assert udp_address("udp://tracker.example:1337/announce") == ("tracker.example", 1337)
    assert udp_address("UDP://127.0.0.1:6969") == ("127.0.0.1", 6969)
    for bad in ("udp://tracker.example/announce", "http://t:1/announce", "udp://:80", "udp://h:99999"):
        with pytest.raises(ScrapeUnsupportedError):
            udp_address(bad)


def test_merge_takes_the_max_of_each_count() -> None:
    a, b = ScrapeResult(seeders=5, leechers=1, completed=3), ScrapeResult(seeders=2, leechers=9, completed=3)
    assert a.merge(b) == b.merge(a) == ScrapeResult(seeders=5, leechers=9, completed=3)


def test_all_trackers_failed_is_permanent_only_if_each_failure_is() -> None:
    errors = {"udp://a:1": TrackerTimeoutError("t"), "http://b/x": ScrapeUnsupportedError("u")}
    transient = AllTrackersFailedError(errors)
    assert not transient.permanent and set(transient.details) == {"udp://a:1", "http://b/x"}
    permanent = AllTrackersFailedError({"http://b/x": ScrapeUnsupportedError("u")})
    assert permanent.permanent and isinstance(permanent, UpstreamError)


def test_connection_ids_live_sixty_seconds_per_tracker() -> None:
    now = [1000.0]
    cache = ConnectionCache(clock=lambda: now[0])
    cache.put(("t", 1), 77)
    now[0] += 59.9
    assert cache.get(("t", 1)) == 77 and cache.get(("t", 2)) is None
    now[0] += 0.1
    assert cache.get(("t", 1)) is None
    cache.put(("t", 1), 78)
    cache.forget(("t", 1), 77)  # not the current id: kept
    assert cache.get(("t", 1)) == 78
    cache.forget(("t", 1))
    assert cache.get(("t", 1)) is None


def test_validation_happens_before_any_network_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network I/O before validation")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    scraper = Scraper(session=no_network)  # type: ignore[arg-type]
    for bad in (["ab" * 20, "nope"], ["ab" * 20, "AB" * 19]):
        with pytest.raises(ValidationError):
            scrape(["udp://127.0.0.1:9/announce", "http://127.0.0.1:9/announce"], bad, scraper=scraper)
    with pytest.raises(ValidationError):
        scraper.scrape([], ["ab" * 20])
    assert scraper.scrape(["udp://127.0.0.1:9/announce"], []) == {}
    assert scraper.stats.requests == 0


def test_scraper_rejects_impossible_settings() -> None:
    for options in ({"timeout": 0}, {"max_retries": -1}, {"window": 0}, {"udp_batch_size": 75}, {"http_batch_size": 0}):
        with pytest.raises(ValueError):
            Scraper(**options)  # type: ignore[arg-type]
