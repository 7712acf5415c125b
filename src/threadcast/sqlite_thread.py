"""SQLite plumbing shared by the embedded backends (event log, work queue, coordinator).

`connect` opens a connection the way they all want it: autocommit (transactions are explicit),
a busy timeout, WAL mode and `synchronous=NORMAL`. `SqliteThread` owns one such connection on
one dedicated thread, since a connection must stay on the thread that uses it.
"""

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

WAL_RETRY_INTERVAL = 0.01
"""Seconds between attempts to switch a locked file to WAL."""


def connect(path: Path, *, busy_timeout: float) -> sqlite3.Connection:
    """Open `path` in autocommit mode, WAL, `synchronous=NORMAL`, waiting up to `busy_timeout`
    seconds for another process's lock."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        _enable_wal(conn, busy_timeout)
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL. Processes opening a new file at once may find it locked: SQLite
    does not apply the busy timeout to this switch, so wait here."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(WAL_RETRY_INTERVAL)


class SqliteThread:
    """A thread that owns one SQLite connection; `run(fn, *args)` calls `fn(conn, *args)` on it.

    `translate`, if given, turns any `sqlite3.Error` raised while opening or running into the
    exception the owner's callers expect."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float,
        name: str,
        translate: Callable[[sqlite3.Error], Exception] | None = None,
    ) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._translate = translate
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, self._open)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._guarded, self._call, fn, args)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            if self._translate is None:
                raise
            raise self._translate(exc) from exc

    def _open(self) -> None:
        if self._conn is None:
            self._conn = connect(self._path, busy_timeout=self._busy_timeout)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._conn is None:
            raise RuntimeError(f"the SQLite database {self._path} is not open")
        return fn(self._conn, *args)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
