"""The shared SQLite plumbing: WAL switch waits out a lock; one connection on one thread."""

import sqlite3
import threading
from pathlib import Path

import pytest

from threadcast.sqlite_thread import SqliteThread, _enable_wal, connect


class _LockedAtFirst:
    """A connection whose switch to WAL finds the file locked `busy` times, as SQLite reports it
    when another process is creating the file (the busy timeout does not cover that switch)."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.statements: list[str] = []

    def execute(self, sql: str) -> None:
        self.statements.append(sql)
        if self.busy:
            self.busy -= 1
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise error


def test_wal_switch_retries_while_the_file_is_locked() -> None:
    conn = _LockedAtFirst(busy=3)
    _enable_wal(conn, busy_timeout=30.0)  # type: ignore[arg-type]
    assert conn.statements == ["PRAGMA journal_mode=WAL"] * 4


def test_connect_opens_in_wal_with_normal_sync(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite", busy_timeout=5.0)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    finally:
        conn.close()


def test_connect_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            connect(path, busy_timeout=0.05)
    finally:
        holder.close()


async def test_runs_every_call_on_one_thread_with_one_connection(tmp_path: Path) -> None:
    db = SqliteThread(tmp_path / "db.sqlite", busy_timeout=5.0, name="test-sqlite")
    await db.open()
    try:
        seen = [await db.run(lambda conn: (threading.get_ident(), id(conn))) for _ in range(3)]
    finally:
        await db.close()
    assert len(set(seen)) == 1
    assert seen[0][0] != threading.get_ident()


async def test_translates_sqlite_errors_when_asked(tmp_path: Path) -> None:
    db = SqliteThread(tmp_path / "db.sqlite", busy_timeout=5.0, name="test-sqlite", translate=LookupError)
    await db.open()
    try:
        with pytest.raises(LookupError) as caught:
            await db.run(lambda conn: conn.execute("SELECT * FROM missing"))
    finally:
        await db.close()
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


async def test_run_before_open_fails(tmp_path: Path) -> None:
    db = SqliteThread(tmp_path / "db.sqlite", busy_timeout=5.0, name="test-sqlite")
    try:
        with pytest.raises(RuntimeError):
            await db.run(lambda conn: None)
    finally:
        await db.close()
