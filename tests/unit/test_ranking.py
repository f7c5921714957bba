"""Source ranking: a table of cases, each saying which of two sources must rank first and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.sources.ranking import GB, Facts, Preferences, index_key, score

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
FRESH = NOW - timedelta(hours=1)
PREFS = Preferences(quality="1080p", codecs=("x264", "x265", "AV1"), allow_3d=False)


def facts(**overrides: object) -> Facts:
    values: dict[str, object] = dict(
        quality="1080p", codec="x264", size_bytes=2 * GB, seeders=50, leechers=10, stats_checked_at=FRESH
    )
    values.update(overrides)
    return Facts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "better, worse, why",
    [
        (facts(), facts(quality="720p"), "the preferred quality beats a lower one"),
        (facts(), facts(quality="2160p"), "the preferred quality beats a higher one (bandwidth, device)"),
        (facts(quality="2160p"), facts(quality="720p"), "one step above beats one step below"),
        (facts(quality="720p"), facts(quality="480p"), "below the preference, better is better"),
        (facts(codec="x264"), facts(codec="x265"), "the first preferred codec beats the second"),
        (facts(codec="AV1"), facts(codec="xvid"), "any preferred codec beats one the player may not decode"),
        (facts(seeders=200), facts(seeders=20), "more seeders for the same size"),
        (facts(size_bytes=1 * GB, seeders=20), facts(size_bytes=8 * GB, seeders=25), "seeders per GB, not seeders"),
        (facts(seeders=20, leechers=10), facts(seeders=20, leechers=40), "a swarm that keeps up with its leechers"),
        (facts(stats_checked_at=FRESH), facts(stats_checked_at=NOW - timedelta(days=3)), "fresh stats count more"),
        (facts(stats_checked_at=NOW - timedelta(days=3)), facts(stats_checked_at=None), "a scrape beats an index"),
        (facts(seeders=10), facts(quality="480p", seeders=500), "quality first once the swarm is healthy"),
        (facts(quality="720p", seeders=200), facts(seeders=1, leechers=30), "but a near-dead swarm loses"),
    ],
)
def test_the_better_source_scores_higher(better: Facts, worse: Facts, why: str) -> None:
    high, low = score(better, PREFS, NOW), score(worse, PREFS, NOW)
    assert high is not None and low is not None
    assert high > low, why


@pytest.mark.parametrize(
    "case, why",
    [
        (facts(quality="3D"), "3D is excluded unless allowed"),
        (facts(seeders=0), "no seeder: nothing to stream"),
        (facts(dead=True), "marked dead after repeated empty scrapes"),
    ],
)
def test_some_sources_are_never_chosen(case: Facts, why: str) -> None:
    assert score(case, PREFS, NOW) is None, why


def test_3d_may_be_allowed_and_then_ranks_below_everything_else() -> None:
    allowed = Preferences(quality="1080p", allow_3d=True)
    three_d, poor = score(facts(quality="3D"), allowed, NOW), score(facts(quality="480p", seeders=1), allowed, NOW)
    assert three_d is not None and poor is not None and three_d < poor


def test_the_preference_moves_the_ranking() -> None:
    uhd = Preferences(quality="2160p")
    assert score(facts(quality="2160p"), uhd, NOW) > score(facts(quality="1080p"), uhd, NOW)  # type: ignore[operator]
    assert score(facts(quality="2160p"), PREFS, NOW) < score(facts(quality="1080p"), PREFS, NOW)  # type: ignore[operator]


def test_the_index_key_orders_the_best_first() -> None:
    keys = sorted([index_key(300, "b" * 40), index_key(900, "a" * 40), index_key(301, "c" * 40)])
    assert [k.split("#")[1][0] for k in keys] == ["a", "c", "b"]
    assert index_key(10**9, "d" * 40) < index_key(0, "d" * 40)  # clamped, still ordered
