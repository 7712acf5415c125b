"""Stats results for tests: the Parquet objects the stats topology writes for a window (made
with DuckDB's COPY TO), and the `stats.window` message it publishes for it."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from threadcast.stats.query import METRICS
from threadcast.store.objects import ObjectStore

MINUTE = timedelta(minutes=1)


@dataclass
class Window:
    """One forum's minute: posts per thread, and the rest of its forum row."""

    start: datetime
    posts: dict[int, int]
    """thread id -> posts"""
    forum: str = "demo"
    replies: int = 0
    votes: int = 0
    unique_authors: int = 1
    late_events: int = 0
    latency_ms: tuple[float, float, float, float] | None = (12.0, 30.0, 80.0, 95.0)
    """p50, p90, p99, max; None: no delivery measured (else one per post)."""

    @property
    def end(self) -> datetime:
        return self.start + MINUTE

    def forum_row(self) -> dict[str, Any]:
        p50, p90, p99, high = self.latency_ms or (None, None, None, None)
        return {
            "window_start": self.start,
            "window_end": self.end,
            "forum": self.forum,
            "posts": sum(self.posts.values()),
            "replies": self.replies,
            "votes": self.votes,
            "active_threads": len(self.posts),
            "unique_authors": self.unique_authors,
            "late_events": self.late_events,
            "latency_count": sum(self.posts.values()) if self.latency_ms else 0,
            "latency_p50_ms": p50,
            "latency_p90_ms": p90,
            "latency_p99_ms": p99,
            "latency_max_ms": high,
        }

    def top(self) -> list[dict[str, int]]:
        ranked = sorted(self.posts.items(), key=lambda item: (-item[1], item[0]))[:10]
        return [{"rank": rank, "thread_id": thread, "posts": posts} for rank, (thread, posts) in enumerate(ranked, 1)]

    def rows(self, metric: str) -> list[dict[str, Any]]:
        if metric == "forum":
            return [self.forum_row()]
        if metric == "threads":
            return [
                {"window_start": self.start, "window_end": self.end, "forum": self.forum, "thread_id": thread,
                 "posts": posts, "replies": 0, "votes": 0}
                for thread, posts in sorted(self.posts.items())
            ]
        return [{"window_start": self.start, "forum": self.forum, **entry} for entry in self.top()]

    def message(self) -> dict[str, Any]:
        """The `stats.window` message of this window on channel stats:{forum}."""
        row = self.forum_row()
        times = {"window_start": self.start.isoformat(), "window_end": self.end.isoformat()}
        data = {**row, **times, "top_threads": self.top()}
        channel = f"stats:{self.forum}"
        epoch = int(self.start.timestamp())
        return {"id": f"{channel}:{epoch}", "type": "stats.window", "channel": channel, "ts": self.end.isoformat(),
                "seq": 0, "data": data}


def key(metric: str, window: Window) -> str:
    start = window.start
    return f"stats/{metric}/dt={start:%Y-%m-%d}/hour={start:%H}/minute={start:%M}/part-{window.forum}.parquet"


def window_objects(window: Window) -> dict[str, bytes]:
    """The window's three result objects (key -> Parquet bytes), written with DuckDB's COPY TO."""
    objects = {}
    with tempfile.TemporaryDirectory() as scratch, duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        for metric, columns in METRICS.items():
            con.execute(f"CREATE TABLE {metric} ({', '.join(f'{name} {kind}' for name, kind in columns.items())})")
            rows = window.rows(metric)
            if rows:
                marks = ", ".join("?" for _ in columns)
                con.executemany(f"INSERT INTO {metric} VALUES ({marks})", [[row[c] for c in columns] for row in rows])
            path = Path(scratch, f"{metric}.parquet")
            con.execute(f"COPY {metric} TO '{path}' (FORMAT parquet)")
            objects[key(metric, window)] = path.read_bytes()
    return objects


async def put_window(store: ObjectStore, window: Window) -> None:
    for name, data in window_objects(window).items():
        await store.put(name, data)


def write_window(root: Path, window: Window) -> None:
    """Write the window's objects into the folder store at `root` from outside any event loop
    (where a running `threadcast up` reads them)."""
    for name, data in window_objects(window).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
