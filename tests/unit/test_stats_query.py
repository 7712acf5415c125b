"""Reading the stats results with DuckDB (threadcast.stats.query): over a folder store always,
and over S3 when THREADCAST_TEST_BACKENDS names `s3` (the objects are read where they are,
through DuckDB's httpfs)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta

import duckdb
import pytest

from tests.conftest import backend_params
from tests.stats_results import MINUTE, Window, put_window
from threadcast.stats import query
from threadcast.store.objects import FolderStore, ObjectStore

YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)
T0 = datetime.combine(YESTERDAY, time(6, 40), tzinfo=UTC)
"""A recent minute: the stats of a forum since then are read from a few hourly folders."""


@pytest.fixture(params=backend_params("s3"))
async def store(request, tmp_path) -> AsyncIterator[ObjectStore]:
    if request.param == "embedded":
        made: ObjectStore = FolderStore(tmp_path / "objects")
    else:
        from tests.contract.test_objects_contract import s3_url
        from threadcast.store.objects.s3 import S3Store

        made = S3Store(s3_url(f"stats-query-{uuid.uuid4().hex[:12]}"))
    yield made
    for key in await made.list():
        await made.delete(key)
    await made.close()


async def test_an_empty_store_has_empty_views(store):
    for metric, columns in query.METRICS.items():
        names, rows = query.query(store, f"SELECT * FROM {metric}")
        assert names == [*columns, "dt", "hour", "minute"]
        assert rows == []
    assert query.top_threads(store, "demo", T0) == []
    assert query.forum_series(store, "demo", T0) == []


async def test_views_read_every_window_with_its_partitions(store):
    await put_window(store, Window(T0, {1: 3, 2: 1}))
    await put_window(store, Window(T0 + MINUTE, {1: 2}))
    await put_window(store, Window(T0, {9: 4}, forum="other"))

    names, rows = query.query(store, "SELECT forum, dt, hour, minute, posts FROM forum ORDER BY forum, minute")
    assert names == ["forum", "dt", "hour", "minute", "posts"]
    day = T0.date()
    assert rows == [("demo", day, 6, 40, 4), ("demo", day, 6, 41, 2), ("other", day, 6, 40, 4)]
    _, rows = query.query(store, "SELECT count(*) FROM threads WHERE forum = 'demo'")
    assert rows == [(3,)]
    _, rows = query.query(store, "SELECT rank, thread_id, posts FROM top_threads WHERE minute = 40 AND forum = 'demo'")
    assert rows == [(1, 1, 3), (2, 2, 1)]


async def test_top_threads_sums_the_windows_since_and_breaks_ties_by_thread_id(store):
    await put_window(store, Window(T0 - 5 * MINUTE, {7: 100}))  # before `since`
    await put_window(store, Window(T0, {1: 3, 2: 5, 3: 1}))
    await put_window(store, Window(T0 + MINUTE, {1: 2, 3: 4, 4: 0}))
    await put_window(store, Window(T0, {1: 50}, forum="other"))

    assert query.top_threads(store, "demo", T0) == [
        {"rank": 1, "thread_id": 1, "posts": 5},
        {"rank": 2, "thread_id": 2, "posts": 5},
        {"rank": 3, "thread_id": 3, "posts": 5},
    ]
    assert [row["thread_id"] for row in query.top_threads(store, "demo", T0, limit=2)] == [1, 2]
    assert query.top_threads(store, "demo", T0 + MINUTE)[0] == {"rank": 1, "thread_id": 3, "posts": 4}
    assert query.top_threads(store, "nobody", T0) == []


async def test_windows_since_count_across_midnight(store):
    """`since` on one day, windows on both: the day partitions must not hide the second day."""
    before_midnight = datetime.combine(YESTERDAY, time(23, 59), tzinfo=UTC)
    await put_window(store, Window(before_midnight, {1: 1}))
    await put_window(store, Window(before_midnight + MINUTE, {1: 2}))

    assert query.top_threads(store, "demo", before_midnight) == [{"rank": 1, "thread_id": 1, "posts": 3}]
    series = query.forum_series(store, "demo", before_midnight - timedelta(hours=1))
    assert [row["window_start"] for row in series] == [before_midnight, before_midnight + MINUTE]


async def test_forum_series_has_the_forum_rows_and_each_window_top_threads(store):
    await put_window(store, Window(T0 + MINUTE, {4: 1}, latency_ms=None, votes=3))
    await put_window(store, Window(T0, {1: 2, 2: 6}, replies=1, unique_authors=2))
    await put_window(store, Window(T0, {1: 9}, forum="other"))

    first, second = query.forum_series(store, "demo", T0)
    assert first == {
        "window_start": T0,
        "window_end": T0 + MINUTE,
        "forum": "demo",
        "posts": 8,
        "replies": 1,
        "votes": 0,
        "active_threads": 2,
        "unique_authors": 2,
        "late_events": 0,
        "latency_count": 8,
        "latency_p50_ms": 12.0,
        "latency_p90_ms": 30.0,
        "latency_p99_ms": 80.0,
        "latency_max_ms": 95.0,
        "top_threads": [{"rank": 1, "thread_id": 2, "posts": 6}, {"rank": 2, "thread_id": 1, "posts": 2}],
    }
    assert second["window_start"] == T0 + MINUTE and second["votes"] == 3
    assert second["latency_p99_ms"] is None and second["latency_count"] == 0
    assert query.forum_series(store, "demo", T0 + 2 * MINUTE) == []


async def test_objects_with_more_columns_are_read_by_name(store, tmp_path):
    """A newer writer may add a column: older objects read it as NULL (union_by_name)."""
    await put_window(store, Window(T0, {1: 1}))
    newer = tmp_path / "newer.parquet"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT 'demo' AS forum, TIMESTAMPTZ '{T0 + MINUTE}' AS window_start, 7::BIGINT AS posts,"
            f" 'x' AS shiny) TO '{newer}' (FORMAT parquet)"
        )
    await store.put(f"stats/forum/dt={T0:%Y-%m-%d}/hour=06/minute=41/part-demo.parquet", newer.read_bytes())

    _, rows = query.query(store, "SELECT minute, posts, shiny FROM forum ORDER BY minute")
    assert rows == [(40, 1, None), (41, 7, "x")]


async def test_bad_sql_is_a_one_line_bad_query(store):
    with pytest.raises(query.BadQuery, match=r'^Parser Error: syntax error at or near "SELEC"$'):
        query.query(store, "SELEC * FROM forum")
    with pytest.raises(query.BadQuery, match="Table with name nope does not exist") as caught:
        query.query(store, "SELECT * FROM nope")
    assert "\n" not in str(caught.value)


async def test_a_damaged_object_makes_the_store_unreadable(tmp_path):
    store = FolderStore(tmp_path)
    await store.put(f"stats/forum/dt={T0:%Y-%m-%d}/hour=06/minute=40/part-demo.parquet", b"not parquet")
    with pytest.raises(query.StoreUnreadable, match="cannot read the stats in file://"):
        query.forum_series(store, "demo", T0)


async def test_a_forum_range_reads_only_its_own_objects(tmp_path):
    store = FolderStore(tmp_path)
    since = datetime.now(UTC) - timedelta(hours=1)
    await put_window(store, Window(since.replace(second=0, microsecond=0) + 2 * MINUTE, {1: 1}))
    await store.put("stats/forum/dt=2020-01-01/hour=00/minute=00/part-demo.parquet", b"an old damaged object")
    await store.put(f"stats/forum/dt={since:%Y-%m-%d}/hour={since:%H}/minute=59/part-other.parquet", b"damaged")

    assert [row["posts"] for row in query.forum_series(store, "demo", since)] == [1]
    with pytest.raises(query.StoreUnreadable):
        query.query(store, "SELECT count(*) FROM forum")  # every object


def test_partition_globs_cover_the_range_by_hour_or_by_day():
    start = datetime(2026, 11, 29, 5, 50, tzinfo=UTC)
    assert query.partition_globs("forum", "demo", start, start + timedelta(hours=2)) == [
        "stats/forum/dt=2026-11-29/hour=05/minute=*/part-demo.parquet",
        "stats/forum/dt=2026-11-29/hour=06/minute=*/part-demo.parquet",
        "stats/forum/dt=2026-11-29/hour=07/minute=*/part-demo.parquet",
    ]
    by_day = query.partition_globs("threads", "demo", start, start + timedelta(days=3))
    assert by_day[0] == "stats/threads/dt=2026-11-29/hour=*/minute=*/part-demo.parquet"
    assert by_day[-1] == "stats/threads/dt=2026-12-02/hour=*/minute=*/part-demo.parquet" and len(by_day) == 4
    odd = query.partition_globs("forum", "a*b", start, start)
    assert odd == ["stats/forum/dt=2026-11-29/hour=05/minute=*/part-*.parquet"]


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [("45s", timedelta(seconds=45)), ("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1)),
     ("2d", timedelta(days=2)), ("1w", timedelta(weeks=1)), (" 90 m ", timedelta(minutes=90))],
)
def test_since_is_a_duration_before_now(text, ago):
    assert query.parse_since(text, NOW) == NOW - ago


@pytest.mark.parametrize(
    ("text", "problem"),
    [("1x", "unknown duration '1x'"), ("", "unknown duration"), ("h", "unknown duration"), ("-1h", "unknown duration"),
     ("1.5h", "unknown duration"), ("0m", "is zero"), ("999999999w", "too long")],
)
def test_bad_durations_say_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match=problem):
        query.parse_since(text, NOW)

