"""Reading the stats: DuckDB over the Parquet results the stats topology writes to the object
store, one object per metric, minute window and forum:

    stats/{metric}/dt=YYYY-MM-DD/hour=HH/minute=MM/part-{forum}.parquet   (window start, UTC)

A connection from `open_results` has one view per metric (`forum`, `threads`, `top_threads`),
with the partition columns `dt` (DATE), `hour` and `minute` (INTEGER) beside the metric's own.
A metric with no results yet is an empty view of the same columns, so queries work on an empty
store. Connections are blocking and short-lived: open one per request, in a worker thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from threadcast.store.objects.base import ObjectStore
from threadcast.store.objects.sql import connect

TOP_THREADS = 10
"""Threads a top list holds by default."""

METRICS: dict[str, dict[str, str]] = {
    "forum": {
        "window_start": "TIMESTAMPTZ",
        "window_end": "TIMESTAMPTZ",
        "forum": "VARCHAR",
        "posts": "BIGINT",
        "replies": "BIGINT",
        "votes": "BIGINT",
        "active_threads": "BIGINT",
        "unique_authors": "BIGINT",
        "late_events": "BIGINT",
        "latency_count": "BIGINT",
        "latency_p50_ms": "DOUBLE",
        "latency_p90_ms": "DOUBLE",
        "latency_p99_ms": "DOUBLE",
        "latency_max_ms": "DOUBLE",
    },
    "threads": {
        "window_start": "TIMESTAMPTZ",
        "window_end": "TIMESTAMPTZ",
        "forum": "VARCHAR",
        "thread_id": "BIGINT",
        "posts": "BIGINT",
        "replies": "BIGINT",
        "votes": "BIGINT",
    },
    "top_threads": {
        "window_start": "TIMESTAMPTZ",
        "forum": "VARCHAR",
        "rank": "INTEGER",
        "thread_id": "BIGINT",
        "posts": "BIGINT",
    },
}
"""Each metric's columns as the topology writes them."""
PARTITIONS = {"dt": "DATE", "hour": "INTEGER", "minute": "INTEGER"}
SAFE_IN_GLOB = re.compile(r"[A-Za-z0-9_.-]+")
"""A forum name that means itself in a glob (forum names are lower-case letters, digits, - and _)."""

Row = dict[str, Any]


class StatsError(Exception):
    """A failed read, with a one-line message."""


class BadQuery(StatsError):
    """DuckDB refused the SQL it was given."""


class StoreUnreadable(StatsError):
    """The results could not be read (the store is unreachable, or an object is damaged)."""


def results_glob(metric: str) -> str:
    """The keys of every result object of `metric`, as a glob."""
    return f"stats/{metric}/dt=*/hour=*/minute=*/part-*.parquet"


def one_line(error: duckdb.Error) -> str:
    """DuckDB's message without the source excerpt that follows a blank line, on one line."""
    head = str(error).split("\n\n", 1)[0]
    return " ".join(line.strip() for line in head.splitlines() if line.strip())


# -- connections ---------------------------------------------------------------------------------


@contextmanager
def open_results(
    store: ObjectStore, forum: str | None = None, since: datetime | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with the metric views over `store`; closed on exit. Timestamps are
    shown in UTC. With `forum` and `since`, the views hold only the objects of that forum's
    windows from `since` on (see `partition_globs`): a page of stats reads only what it shows."""
    patterns = {metric: [results_glob(metric)] for metric in METRICS}
    if forum is not None and since is not None:
        patterns = {metric: partition_globs(metric, forum, since) for metric in METRICS}
    try:
        con = connect(store)
    except duckdb.Error as exc:
        raise StoreUnreadable(f"cannot read the stats in {store.url}: {one_line(exc)}") from None
    try:
        con.execute("SET TimeZone = 'UTC'")
        for metric, globs in patterns.items():
            _create_view(con, metric, [store.location(glob) for glob in globs])
        yield con
    except duckdb.Error as exc:
        raise StoreUnreadable(f"cannot read the stats in {store.url}: {one_line(exc)}") from None
    finally:
        con.close()


def partition_globs(metric: str, forum: str, since: datetime, until: datetime | None = None) -> list[str]:
    """Globs of the objects of `forum`'s windows from `since` to `until` (default: an hour from
    now, in case a writer's clock runs ahead): one per hour, or one per day beyond two days."""
    since = since.astimezone(UTC)
    until = until or datetime.now(UTC) + timedelta(hours=1)
    name = forum if SAFE_IN_GLOB.fullmatch(forum) else "*"
    if until - since <= timedelta(days=2):
        step, folders = timedelta(hours=1), "dt=%Y-%m-%d/hour=%H"
        at = since.replace(minute=0, second=0, microsecond=0)
    else:
        step, folders = timedelta(days=1), "dt=%Y-%m-%d/hour=*"
        at = since.replace(hour=0, minute=0, second=0, microsecond=0)
    globs = []
    while at <= until:
        globs.append(f"stats/{metric}/{at.strftime(folders)}/minute=*/part-{name}.parquet")
        at += step
    return globs


def _create_view(con: duckdb.DuckDBPyConnection, metric: str, patterns: list[str]) -> None:
    """The view `metric` over the files the patterns match, listed once here: the view, and the
    schema DuckDB reads from every file (to union columns by name), cover only those."""
    files = [name for pattern in patterns for (name,) in con.execute("SELECT file FROM glob(?)", [pattern]).fetchall()]
    if files:
        hive_types = ", ".join(f"'{name}': {kind}" for name, kind in PARTITIONS.items())
        relation = con.sql(
            "SELECT * FROM read_parquet($files, hive_partitioning = true, union_by_name = true,"
            f" hive_types = {{{hive_types}}})",
            params={"files": files},
        )
    else:
        columns = {**METRICS[metric], **PARTITIONS}
        nulls = ", ".join(f"NULL::{kind} AS {name}" for name, kind in columns.items())
        relation = con.sql(f"SELECT {nulls} WHERE false")
    relation.create_view(metric)


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[Row]:
    columns = [column[0] for column in cursor.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


# -- what the CLI and the API ask ----------------------------------------------------------------


def query(store: ObjectStore, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run `sql` over the metric views: the column names and the rows."""
    with open_results(store) as con:
        try:
            cursor = con.execute(sql)
            columns = [column[0] for column in cursor.description or ()]
            return columns, cursor.fetchall()
        except duckdb.IOException as exc:
            raise StoreUnreadable(one_line(exc)) from None
        except duckdb.Error as exc:
            raise BadQuery(one_line(exc)) from None


def top_threads(store: ObjectStore, forum: str, since: datetime, limit: int = TOP_THREADS) -> list[Row]:
    """The threads of `forum` with the most posts in the windows that start at `since` or later:
    `{rank, thread_id, posts}`, most posts first, ties to the lower thread id; threads without
    posts (only votes) are left out."""
    with open_results(store, forum, since) as con:
        return _top_threads(con, forum, since, limit)


def forum_series(store: ObjectStore, forum: str, since: datetime) -> list[Row]:
    """The `forum` rows of the windows that start at `since` or later, oldest first, each with
    the window's own `top_threads` list (`{rank, thread_id, posts}`): the shape of the
    `stats.window` messages on channel `stats:{forum}`."""
    with open_results(store, forum, since) as con:
        return _forum_series(con, forum, since)


def forum_stats(
    store: ObjectStore, forum: str, since: datetime, limit: int = TOP_THREADS
) -> tuple[list[Row], list[Row]]:
    """`forum_series` and `top_threads` read on one connection."""
    with open_results(store, forum, since) as con:
        return _forum_series(con, forum, since), _top_threads(con, forum, since, limit)



def _top_threads(con: duckdb.DuckDBPyConnection, forum: str, since: datetime, limit: int) -> list[Row]:
    cursor = con.execute(
        """
        SELECT row_number() OVER (ORDER BY sum(posts) DESC, thread_id)::INTEGER AS rank,
               thread_id, sum(posts)::BIGINT AS posts
        FROM threads
        WHERE forum = $forum AND window_start >= $since
        GROUP BY thread_id
        HAVING sum(posts) > 0
        ORDER BY rank
        LIMIT $limit
        """,
        {"forum": forum, "since": since, "limit": limit},
    )
    return _rows(cursor)


def _forum_series(con: duckdb.DuckDBPyConnection, forum: str, since: datetime) -> list[Row]:
    cursor = con.execute(
        """
        WITH tops AS (
            SELECT window_start,
                   list({'rank': rank, 'thread_id': thread_id, 'posts': posts} ORDER BY rank) AS top_threads
            FROM top_threads
            WHERE forum = $forum AND window_start >= $since
            GROUP BY window_start
        )
        SELECT f.* EXCLUDE (dt, hour, minute), coalesce(t.top_threads, []) AS top_threads
        FROM forum AS f LEFT JOIN tops AS t ON t.window_start = f.window_start
        WHERE f.forum = $forum AND f.window_start >= $since
        ORDER BY f.window_start
        """,
        {"forum": forum, "since": since},
    )
    return _rows(cursor)


# -- durations -----------------------------------------------------------------------------------

DURATION = re.compile(r"(\d{1,9})\s*([smhdw])")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The moment `text` (a duration: 45s, 30m, 1h, 2d, 1w) before `now` (default: the current
    time, UTC). `ValueError` says what is wrong with `text`."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(
            f"unknown duration {text!r}: use a whole number and a unit (s, m, h, d, w), like 30m, 1h or 2d"
        )
    amount, unit = int(match[1]), match[2]
    if amount == 0:
        raise ValueError(f"the duration {text!r} is zero: give a number above 0")
    try:
        return (now or datetime.now(UTC)) - timedelta(**{UNITS[unit]: amount})
    except OverflowError:
        raise ValueError(f"the duration {text!r} is too long") from None
