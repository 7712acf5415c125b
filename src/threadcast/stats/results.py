"""Where and how a window's summary is stored and announced.

Objects (window start in UTC; one object per metric, forum and window, whatever the parallelism,
so writing a window again replaces it with the same bytes):

    stats/{metric}/dt=YYYY-MM-DD/hour=HH/minute=MM/part-{forum}.parquet

Parquet is made by DuckDB (`COPY ... TO` a temporary file), with the columns of
`threadcast.stats.query.METRICS`. The live message on channel `stats:{forum}` is a
`PushMessage` of type `stats.window` whose data is the forum row (ISO timestamps) and its
top threads.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import orjson

from threadcast.events import PushMessage, encode
from threadcast.stats.query import METRICS

ORDER = {"forum": "window_start", "threads": "thread_id", "top_threads": "rank"}
WRITE_ORDER = ("threads", "top_threads", "forum")
"""The forum object goes last: once it exists, the window is final."""
TIMESTAMPS = ("window_start", "window_end")


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def object_key(metric: str, forum: str, window_start: float) -> str:
    at = utc(window_start)
    return f"stats/{metric}/dt={at:%Y-%m-%d}/hour={at:%H}/minute={at:%M}/part-{quote(forum, safe='')}.parquet"


def live_message(summary: dict[str, Any]) -> tuple[str, bytes, str]:
    """(channel, message, message id) announcing a closed window."""
    row = dict(summary["forum"])
    forum, start = row["forum"], int(row["window_start"])
    for name in TIMESTAMPS:
        row[name] = utc(row[name]).isoformat()
    row["top_threads"] = [
        {"rank": top["rank"], "thread_id": top["thread_id"], "posts": top["posts"]} for top in summary["top_threads"]
    ]
    channel = f"stats:{forum}"
    message_id = f"{channel}:{start}"
    message = PushMessage(
        id=message_id, type="stats.window", channel=channel, ts=float(summary["forum"]["window_end"]), seq=0, data=row
    )
    return channel, encode(message), message_id


class ParquetWriter:
    """Turns rows into Parquet bytes with one DuckDB connection (blocking: call it in a worker
    thread, one call at a time). The rows go through a JSON-lines file that DuckDB reads with
    the metric's column types (timestamps as epoch seconds): one vectorized read, where
    inserting row by row would take a millisecond per row. `close()` removes the files."""

    def __init__(self) -> None:
        self._con = duckdb.connect(config={"threads": "1"})
        self._folder = Path(tempfile.mkdtemp(prefix="threadcast-stats-"))

    def parquet(self, metric: str, rows: list[dict[str, Any]]) -> bytes:
        columns = METRICS[metric]
        source, target = self._folder / f"{metric}.jsonl", self._folder / f"{metric}.parquet"
        source.write_bytes(b"\n".join(orjson.dumps({name: row[name] for name in columns}) for row in rows))
        types = ", ".join(f"'{name}': '{'DOUBLE' if name in TIMESTAMPS else kind}'" for name, kind in columns.items())
        select = ", ".join(f"to_timestamp({name}) AS {name}" if name in TIMESTAMPS else name for name in columns)
        self._con.execute(
            f"COPY (SELECT {select} FROM read_json('{source}', format = 'newline_delimited', columns = {{{types}}})"
            f" ORDER BY {ORDER[metric]}) TO '{target}' (FORMAT parquet)"
        )
        return target.read_bytes()

    def close(self) -> None:
        self._con.close()
        shutil.rmtree(self._folder, ignore_errors=True)
