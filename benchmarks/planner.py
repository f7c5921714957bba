"""Planner cost: DynamoDB read units per planner tick for a small and a large table (--small, --large items)
with the same --due items due, each next to a naive planner measured in the same run against the same table:
a Scan with a filter on the due time, every page, then the earliest due (reads only: its claims would be the
same writes as the planner's).

- search planner: `plan_searches(budget=due, now)`: three Queries on the catalog's `due` index (one per tier),
  a conditional UpdateItem per claimed movie, an SQS send. Movies have minimal attributes; the due ones are a
  quarter new, a quarter popular, the rest others, due minutes before `now`; 1 in 20 is off the index (removed
  from TMDB); every other one is due later, in the next 24 hours (searched before: popular or others).
- stats planner (--stats): `plan_stats(now=now)` (its limit, 2960): one Query on the sources table's `due`
  index, a conditional UpdateItem per source, SQS sends; sources are due (the --due ones) or in the next 72 h.
Setup is not measured: items are written with BatchWriteItem (25 a request; the large table's in 2 worker
processes), the large table is the small one plus more items (the same ones due). A tick claims what it sends
(due again in 15 or 30 minutes), so before each tick the due items are put back as written: every tick sees
the same items due at the same `now`.

Read units: moto answers ReturnConsumedCapacity with a constant, so they are computed as DynamoDB does: each
Query/Scan page reads items whose sizes (DynamoDB's item-size rules) are summed, rounded up to 4 KB (at least
one), halved (eventually consistent, as GSI Queries and these Scans are). A Query page reads what it returns
(no filter); a Scan page reads ScannedCount items, sized from the emulator's table in its scan order.

    python benchmarks/planner.py [--small 1000 --large 100000 --due 20 --ticks 5 --naive-ticks 3 --stats]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")

from moto.backends import get_backend
from moto.dynamodb.models.utilities import dynamo_json_dump
from pynamodb.connection.base import Connection

from chalicelib.models.catalog import NEW, OTHERS, POPULAR, SOURCE_SEARCH, CatalogItem, Movie, iso
from chalicelib.models.sources import Source, SourceItem
from chalicelib.sources import health, jobs, store
from infra.local.emulator import Emulator
from infra.local.runtime import LocalRuntime, RuntimeOptions

PAGES: list[tuple[str, dict[str, Any]]] = []  # (operation, response) of every Query and Scan page
_dispatch = Connection.dispatch


def _recording(self: Connection, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    data = _dispatch(self, operation, kwargs)
    if operation in ("Query", "Scan"):
        PAGES.append((operation, data))
    return data


Connection.dispatch = _recording  # type: ignore[method-assign,assignment]


def value_size(kind: str, v: Any) -> int:
    """An attribute value's size as DynamoDB counts it (numbers: about half their significant digits, + 1)."""
    if kind == "M":  # 3 bytes, and 1 an element
        return 3 + item_size(v, element=1)
    if kind == "L":
        return 3 + sum(value_size(*next(iter(x.items()))) + 1 for x in v)
    if kind in ("SS", "NS", "BS"):
        return sum(value_size(kind[0], x) for x in v)
    if kind == "N":
        return math.ceil(len(v.lstrip("-").replace(".", "").strip("0")) / 2) + 1
    return 1 if kind in ("BOOL", "NULL") else len(v.encode() if isinstance(v, str) else v)  # S, B


def item_size(item: dict[str, Any], element: int = 0) -> int:
    return sum(len(k.encode()) + value_size(*next(iter(x.items()))) + element for k, x in item.items())


def scan_sizes(model: Any) -> list[int]:
    """Every item's size, in the emulator's scan order (what a full Scan reads)."""
    for account in get_backend("dynamodb").values():
        for region in account.values():
            if table := region.tables.get(model.Meta.table_name):
                return [item_size(json.loads(dynamo_json_dump(i.to_json()))["Attributes"]) for i in table.all_items()]
    raise LookupError(model.Meta.table_name)


def measure(emulator: Emulator, work: Callable[[], int], sizes: list[int]) -> dict[str, Any]:
    PAGES.clear()
    before, started = emulator.requests.copy(), time.perf_counter()
    result = work()
    ms = (time.perf_counter() - started) * 1000
    calls = {("SQS " if s == "AmazonSQS" else "") + op: n for (s, op), n in (emulator.requests - before).items()}
    items = size = offset = 0
    read_units = 0.0
    for operation, page in PAGES:
        if operation == "Query":  # no filter: it reads what it returns
            assert page["Count"] == page["ScannedCount"]
            page_size = sum(item_size(i) for i in page.get("Items", []))
        else:
            page_size = sum(sizes[offset : offset + page["ScannedCount"]])
            offset += page["ScannedCount"]
        items, size = items + page["ScannedCount"], size + page_size
        read_units += math.ceil(max(page_size, 1) / 4096) * 0.5
    assert offset in (0, len(sizes)), "a Scan read the whole table"
    return {"result": result, "calls": calls, "items": items, "kb": size / 1024, "units": read_units, "ms": ms}


def movies(lo: int, hi: int, due: set[int], now: datetime, rng: random.Random) -> list[Movie]:
    d = sorted(due)
    tiers = {i: NEW if k < len(d) // 4 else POPULAR if k < len(d) // 2 else OTHERS for k, i in enumerate(d)}
    out = []
    for i in range(lo, hi):
        tier = tiers.get(i, None if i % 20 == 0 else rng.choice((POPULAR, OTHERS)))
        ago, later = now - timedelta(minutes=rng.uniform(1, 60)), now + timedelta(seconds=rng.uniform(1, 86_400))
        at = ago if i in due else later
        popular = tier == POPULAR or (tier == NEW and i % 2 == 0)
        m = Movie(*Movie.key(i), tmdb_id=i, title=f"Movie {i}", imdb_id=f"tt{i:07d}", popularity=40 if popular else 5)
        m.sources_searched_at = at - timedelta(days=1) if tier in (POPULAR, OTHERS) else None
        m.set_due(f"{SOURCE_SEARCH}#{tier}" if tier is not None else None, at)
        out.append(m)
    return out


def sources(lo: int, hi: int, due: set[int], now: datetime, rng: random.Random) -> list[Source]:
    out = []
    for i in range(lo, hi):
        h, at = f"{i:040x}", now + timedelta(seconds=rng.uniform(1, 72 * 3600))
        s = Source(*Source.key(h), infohash=h, magnet=f"magnet:?xt=urn:btih:{h}", owner=f"MOVIE#{i // 3}",
                   title=f"Movie {i // 3} [1080p]", quality="1080p", seeders=10, first_seen=now, version=1)  # fmt: skip
        store.set_stats_due(s, now - timedelta(minutes=rng.uniform(1, 60)) if i in due else at)
        out.append(s)
    return out


MAKE: dict[str, Callable[..., list[Any]]] = {"movies": movies, "sources": sources}


def write(items: list[Any]) -> None:
    with type(items[0]).batch_write() as batch:
        for item in items:
            batch.save(item)


def fill(make: str, lo: int, hi: int, now: datetime) -> None:
    """Setup, in a worker process (the client's work off this process's GIL): items lo..hi-1, none due."""
    write(MAKE[make](lo, hi, set(), now, random.Random(lo)))


def naive(model: Any, prefix: str, budget: int, now: datetime) -> int:
    """Every item of the table read, the due ones kept, the earliest (by tier, then time) taken."""
    found = list(model.scan(model.due_pk.startswith(prefix) & (model.due_sk <= iso(now) + "~")))
    return len(sorted(found, key=lambda m: (m.due_pk, m.due_sk))[:budget])


def bench(emulator: Emulator, label: str, case: dict[str, Any], args: Any) -> list[str]:
    rng, now = random.Random(7), datetime.now(UTC).replace(microsecond=0)
    due = set(rng.sample(range(1, args.small + 1), args.due))
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    lines: list[str] = []
    for n, lo in ((args.small, 1), (args.large, args.small + 1)):
        started = time.perf_counter()
        if lo == 1:
            items = MAKE[case["make"]](1, n + 1, due, now, rng)
            write(items)
            due_items = [items[i - 1] for i in sorted(due)]
        else:
            with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
                chunks = [(case["make"], a, min(a + 5000, n + 1), now) for a in range(lo, n + 1, 5000)]
                list(pool.map(fill, *zip(*chunks, strict=True)))
        lines.append(f"(setup: {n + 1 - lo:,} items written in {time.perf_counter() - started:.1f}s)")
        sizes = scan_sizes(case["model"])
        for name, work in (("naive", case["naive"]), ("planner", case["real"])):
            rows[name, n] = []
            for _ in range(args.naive_ticks if name == "naive" else args.ticks):
                write(due_items)  # as written: due again
                rows[name, n].append(measure(emulator, partial(work, now), sizes))
                assert rows[name, n][-1]["result"] == args.due, (label, name, n, rows[name, n][-1]["result"])
    head = f"{'':28}{'items':>9}  {'AWS calls (median per tick)':58}{'items read':>11}{'KB read':>9}{'RRU':>8}  ms*"
    lines += [f"{label}: {args.due} due, medians of {args.ticks} ticks ({args.naive_ticks} naive)", head]
    med: dict[tuple[str, int], float] = {}
    for (name, n), ticks in rows.items():
        counts = {op: statistics.median(t["calls"].get(op, 0) for t in ticks) for op in sorted(ticks[0]["calls"])}
        calls = ", ".join(f"{op} {c:g}" for op, c in counts.items() if c)
        m = {k: statistics.median(t[k] for t in ticks) for k in ("items", "kb", "units", "ms")}
        med[name, n] = m["units"]
        title = case["title"] if name == "planner" else "naive: Scan + filter on due"
        figures = f"{m['items']:>11,.0f}{m['kb']:>9.1f}{m['units']:>8.1f}{m['ms']:>6.0f}"
        lines.append(f"{title:28}{n:>9,}  {calls:58}{figures}")
    ratio = med["planner", args.large] / med["planner", args.small]
    naive_ratio = med["naive", args.large] / med["naive", args.small]
    return [
        *lines,
        f"{label} read units per tick, {args.large:,} vs {args.small:,} items: {ratio:.2f}x (target <= 1.2) "
        f"{'PASS' if ratio <= 1.2 else 'FAIL'}; naive: {naive_ratio:.1f}x",
        "(* ms: the emulator's, which walks and sorts the whole table for each Query or Scan page, unlike DynamoDB)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=20)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--naive-ticks", type=int, default=3, help="each reads the whole table: the same each time")
    parser.add_argument("--stats", action="store_true", help="also the stats planner (about doubles the run time)")
    args = parser.parse_args()
    if not 4 <= args.due <= args.small < args.large or min(args.ticks, args.naive_ticks) < 1:
        parser.error("need 4 <= --due <= --small < --large, and ticks >= 1")
    runtime = LocalRuntime(
        RuntimeOptions(
            data_dir=None, emulator_port=0, serve_api=False, run_ticker=False, run_pollers=False,
            run_migrations=False, torrent_worker=False, stage="bench",
        )
    )  # fmt: skip
    started = time.perf_counter()
    runtime.start()
    assert runtime.emulator is not None
    cases = {
        "search": {"model": CatalogItem, "make": "movies", "title": "plan_searches: due index",
                   "real": lambda now: jobs.plan_searches(budget=args.due, now=now),
                   "naive": lambda now: naive(CatalogItem, f"DUE#{SOURCE_SEARCH}#", args.due, now)},
        "stats": {"model": SourceItem, "make": "sources", "title": "plan_stats: due index",
                  "real": lambda now: health.plan_stats(now=now),
                  "naive": lambda now: naive(SourceItem, f"DUE#{store.STATS_DUE}", health.SOURCES_PER_TICK, now)},
    }  # fmt: skip
    try:
        for label in ("search", "stats") if args.stats else ("search",):
            print("\n".join(bench(runtime.emulator, label, cases[label], args)), flush=True)
    finally:
        runtime.stop()
    print(f"(whole benchmark: {time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
