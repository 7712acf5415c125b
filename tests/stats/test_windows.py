"""The stats topology against a brute-force count: generated streams (late, beyond the lateness,
duplicated, undecodable, several partitions and task counts) run on the embedded runner over the
SQLite log into a folder; the Parquet results, read with DuckDB, must match exactly (sketches:
within their error bounds)."""

from __future__ import annotations

import asyncio
import bisect
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from pytest import approx
from hypothesis import strategies as st

from tests.stats.harness import run_to_the_end
from tests.stats.streams import BASE, Expected, Stream, brute_force, results, streams
from threadcast.stats.definition import StatsConfig
from threadcast.stats.summary import KLL_K, PERCENTILES
from datasketches import kll_doubles_sketch

WINDOW, LATENESS = 60, 10.0
RANK_ERROR = kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)


def config(parallelism: int = 1) -> StatsConfig:
    return StatsConfig(
        window=WINDOW, lateness=LATENESS, idle_timeout=300, tick=0.05,
        parse_parallelism=parallelism, window_parallelism=parallelism, sink_parallelism=parallelism,
    )  # fmt: skip


def run(stream: Stream, partitions: int, parallelism: int) -> tuple[dict[tuple[str, int], Expected], dict[str, list]]:
    with tempfile.TemporaryDirectory() as folder:
        store = asyncio.run(run_to_the_end(Path(folder), stream, partitions, config(parallelism)))
        expected = brute_force(stream.records, partitions, WINDOW, LATENESS)
        return expected, {metric: results(store, metric) for metric in ("forum", "threads", "top_threads")}


def check_percentiles(row: dict, samples: list[float]) -> None:
    samples = sorted(samples)
    n = len(samples)
    assert row["latency_max_ms"] == samples[-1]
    for column, rank in PERCENTILES.items():
        value = row[column]
        below, upto = bisect.bisect_left(samples, value), bisect.bisect_right(samples, value)
        slack = RANK_ERROR + 1 / n
        assert below / n - slack <= rank <= upto / n + slack, (column, value, samples)


def check(expected: dict[tuple[str, int], Expected], found: dict[str, list]) -> None:
    forum_rows = {(row["forum"], row["window_start"]): row for row in found["forum"]}
    assert set(forum_rows) == set(expected)
    for key, window in expected.items():
        row = forum_rows[key]
        assert row["window_end"] == row["window_start"] + WINDOW
        assert {name: row[name] for name in window.row()} == window.row(), key
        authors = len(window.authors())
        assert abs(row["unique_authors"] - authors) <= max(1, 0.05 * authors)
        if window.latencies:
            check_percentiles(row, list(window.latencies.values()))
        else:
            assert row["latency_p50_ms"] is None and row["latency_max_ms"] is None
    threads = {(r["forum"], r["window_start"], r["thread_id"]): (r["posts"], r["replies"], r["votes"]) for r in found["threads"]}
    assert threads == {
        (forum, start, thread): counts
        for (forum, start), window in expected.items()
        for thread, counts in window.threads().items()
    }
    tops: dict[tuple[str, int], list] = {}
    for r in found["top_threads"]:
        tops.setdefault((r["forum"], r["window_start"]), []).append((r["rank"], r["thread_id"], r["posts"]))
    for key, window in expected.items():
        ranked = sorted(((t, c[0]) for t, c in window.threads().items() if c[0]), key=lambda tc: (-tc[1], tc[0]))
        assert sorted(tops.get(key, [])) == [(rank, t, posts) for rank, (t, posts) in enumerate(ranked[:10], 1)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=streams(), partitions=st.sampled_from([1, 3]), parallelism=st.sampled_from([1, 2]))
def test_window_counts_equal_a_brute_force_count(stream: Stream, partitions: int, parallelism: int) -> None:
    expected, found = run(stream, partitions, parallelism)
    check(expected, found)


def test_late_events_count_in_their_window_and_events_beyond_the_lateness_do_not() -> None:
    stream = Stream()
    stream.post("a", "demo", 1, BASE + 50, "ann")
    stream.post("b", "demo", 1, BASE + 65, "bob")  # the first window has ended in this partition
    stream.post("c", "demo", 1, BASE + 58, "cy")  # late, within the lateness: counts, as late
    stream.post("d", "demo", 1, BASE + 80, "dee")  # the partition's watermark passes BASE + 70
    stream.post("e", "demo", 1, BASE + 59, "eve")  # beyond the lateness: not counted
    stream.post("a", "demo", 1, BASE + 50, "ann")  # a duplicate of a counted event
    expected, found = run(stream, partitions=1, parallelism=1)
    [first, second] = sorted(found["forum"], key=lambda row: row["window_start"])
    assert (first["posts"], first["late_events"], first["unique_authors"]) == (2, 1, 2)
    assert (second["posts"], second["late_events"]) == (2, 0)
    check(expected, found)


def test_duplicates_count_once_and_deliveries_give_the_latency() -> None:
    stream = Stream()
    post = stream.post("p", "demo", 4, BASE + 1, "ann", reply=True)
    vote = stream.vote("v", "demo", 4, BASE + 2, "bob")
    stream.event(post)
    stream.delivery(post, latency_ms=120.0)
    stream.delivery(post, latency_ms=900.0)  # a redelivered job reports again: the first counts
    stream.delivery(vote, latency_ms=40.0)
    expected, found = run(stream, partitions=2, parallelism=1)
    [row] = found["forum"]
    assert (row["posts"], row["replies"], row["votes"], row["active_threads"]) == (1, 1, 1, 1)
    assert (row["latency_count"], row["latency_max_ms"], row["latency_p50_ms"]) == (2, approx(120.0), approx(40.0))
    check(expected, found)
