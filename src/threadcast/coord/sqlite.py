"""The embedded coordination backend: one SQLite file (by default `coord.db` in the data
folder), shared safely by every process of this machine that opens it.

Tables (all prefixed `coord_`):

- `coord_sessions`: one row per open coordinator, with its host, PID and last heartbeat. A
  session is live while its heartbeat is younger than its timeout and, on this host, its process
  runs: a process killed with -9 loses its session at the next look of any other process, a hung
  one after `session_timeout`. Every heartbeat reaps the dead sessions, their members and their
  leases;
- `coord_members`: the registered members, each bound to its session (ZooKeeper's ephemeral
  znodes), in registration order;
- `coord_leases`: per duty or lock, the holding candidate and its session, and the epoch of its
  term, which grows by one at every acquisition and is never reset (the fencing token);
- `coord_config`: the live configuration tree as a JSON document, with a version that grows at
  every change; watchers poll the version every `poll_interval`.

Sessions: a coordinator heartbeats every third of its session timeout. When a heartbeat fails
or is late, so that the session might expire before the next one, the session is suspended
(every term ends) two thirds of the timeout after the last good heartbeat, a third of the
timeout before anyone can take a lease over. A later heartbeat resumes it or, when another
process already reaped it, opens a new session and registers the members again.

Concurrency: WAL mode, short `BEGIN IMMEDIATE` transactions, one thread per coordinator owning
its connection, so SQLite never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import structlog

from threadcast.coord import live_config
from threadcast.coord.base import (
    Coordinator,
    Leadership,
    Member,
    MemberInfo,
    Registration,
    SessionState,
    check_name,
)
from threadcast.coord.errors import BackendUnavailable, CoordinationError
from threadcast.coord.live_config import LiveConfig
from threadcast.sqlite_thread import SqliteThread

log = structlog.get_logger("threadcast.coord")

BUSY_TIMEOUT = 5.0
"""Seconds a statement waits for another process's write lock before it fails."""
SUSPEND_AFTER = 2 / 3
"""Fraction of the session timeout after the last good heartbeat at which a session suspends."""
_HOST = socket.gethostname()

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS coord_sessions (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        heartbeat REAL NOT NULL,
        timeout REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS coord_members (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        session TEXT NOT NULL,
        info BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS coord_members_by_role ON coord_members (role, seq)",
    """CREATE TABLE IF NOT EXISTS coord_leases (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        holder TEXT,
        session TEXT,
        epoch INTEGER NOT NULL,
        PRIMARY KEY (kind, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS coord_config (
        name TEXT PRIMARY KEY,
        document BLOB NOT NULL,
        version INTEGER NOT NULL
    ) WITHOUT ROWID""",
)
_CONFIG_ROW = "live"

T = TypeVar("T")


# --- SQLite side: plain functions run on the coordinator's thread ------------------------


class _Transaction:
    """`with _Transaction(conn):` one transaction, rolled back on error. IMMEDIATE takes the
    write lock up front; DEFERRED gives a reader one snapshot."""

    def __init__(self, conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> None:
        self.conn = conn
        self.mode = mode

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute(f"BEGIN {self.mode}")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _create_schema(conn: sqlite3.Connection) -> None:
    with _Transaction(conn):
        for statement in _SCHEMA:
            conn.execute(statement)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child that its parent has not reaped yet is a zombie: dead
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _live_sessions(conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
    """(live session ids, dead session ids)."""
    now = time.time()
    live: set[str] = set()
    dead: set[str] = set()
    for session, host, pid, heartbeat, timeout in conn.execute(
        "SELECT id, host, pid, heartbeat, timeout FROM coord_sessions"
    ):
        alive = heartbeat + timeout >= now and (host != _HOST or _pid_alive(pid))
        (live if alive else dead).add(session)
    return live, dead


def _open_session(
    conn: sqlite3.Connection, session: str, timeout: float, members: list[tuple[str, str, bytes]]
) -> None:
    """Open `session` with its members: (id, role, info) each."""
    with _Transaction(conn):
        conn.execute(
            "INSERT INTO coord_sessions (id, host, pid, heartbeat, timeout) VALUES (?, ?, ?, ?, ?)",
            (session, _HOST, os.getpid(), time.time(), timeout),
        )
        conn.executemany(
            "INSERT INTO coord_members (id, role, session, info) VALUES (?, ?, ?, ?)",
            [(member_id, role, session, info) for member_id, role, info in members],
        )


def _drop_sessions(conn: sqlite3.Connection, sessions: set[str]) -> None:
    for session in sessions:
        conn.execute("UPDATE coord_leases SET holder = NULL, session = NULL WHERE session = ?", (session,))
        conn.execute("DELETE FROM coord_sessions WHERE id = ?", (session,))
    conn.execute("DELETE FROM coord_members WHERE session NOT IN (SELECT id FROM coord_sessions)")


def _heartbeat(conn: sqlite3.Connection, session: str) -> float | None:
    """Refresh `session` and reap the dead ones; return the heartbeat written (the others
    count the session's timeout from it), None when `session` was reaped already."""
    with _Transaction(conn):
        now = time.time()
        if not conn.execute("UPDATE coord_sessions SET heartbeat = ? WHERE id = ?", (now, session)).rowcount:
            return None
        _drop_sessions(conn, _live_sessions(conn)[1])
        return now


def _close_session(conn: sqlite3.Connection, session: str) -> None:
    with _Transaction(conn):
        _drop_sessions(conn, {session})


def _add_member(conn: sqlite3.Connection, member_id: str, role: str, session: str, info: bytes) -> None:
    with _Transaction(conn):
        conn.execute(
            "INSERT INTO coord_members (id, role, session, info) VALUES (?, ?, ?, ?)", (member_id, role, session, info)
        )


def _remove_member(conn: sqlite3.Connection, member_id: str) -> None:
    with _Transaction(conn):
        conn.execute("DELETE FROM coord_members WHERE id = ?", (member_id,))


def _members(conn: sqlite3.Connection, role: str) -> list[tuple[str, bytes]]:
    with _Transaction(conn, "DEFERRED"):
        live, _ = _live_sessions(conn)
        rows = conn.execute("SELECT id, session, info FROM coord_members WHERE role = ? ORDER BY seq", (role,))
        return [(member_id, info) for member_id, session, info in rows if session in live]


def _roles(conn: sqlite3.Connection) -> list[str]:
    with _Transaction(conn, "DEFERRED"):
        live, _ = _live_sessions(conn)
        return sorted(
            {role for role, session in conn.execute("SELECT role, session FROM coord_members") if session in live}
        )


def _acquire(conn: sqlite3.Connection, kind: str, name: str, candidate: str, session: str) -> int | None:
    """Take the lease if it is free, its holder's session is dead, or this candidate held it in
    an earlier term; return the new epoch, or None when another live candidate holds it."""
    with _Transaction(conn):
        live, _ = _live_sessions(conn)
        if session not in live:
            return None
        row = conn.execute(
            "SELECT holder, session, epoch FROM coord_leases WHERE kind = ? AND name = ?", (kind, name)
        ).fetchone()
        if row is None:
            epoch = 1
        else:
            holder, holder_session, previous = row
            if holder is not None and holder != candidate and holder_session in live:
                return None
            epoch = previous + 1
        conn.execute(
            "INSERT INTO coord_leases (kind, name, holder, session, epoch) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, name) DO UPDATE SET"
            " holder = excluded.holder, session = excluded.session, epoch = excluded.epoch",
            (kind, name, candidate, session, epoch),
        )
        return epoch


def _holds(conn: sqlite3.Connection, kind: str, name: str, candidate: str, epoch: int) -> bool:
    with _Transaction(conn, "DEFERRED"):
        row = conn.execute(
            "SELECT session FROM coord_leases WHERE kind = ? AND name = ? AND holder = ? AND epoch = ?",
            (kind, name, candidate, epoch),
        ).fetchone()
        return row is not None and row[0] in _live_sessions(conn)[0]


def _release(conn: sqlite3.Connection, kind: str, name: str, candidate: str) -> None:
    with _Transaction(conn):
        conn.execute(
            "UPDATE coord_leases SET holder = NULL, session = NULL WHERE kind = ? AND name = ? AND holder = ?",
            (kind, name, candidate),
        )


def _read_config(conn: sqlite3.Connection) -> tuple[int, bytes | None]:
    row = conn.execute("SELECT version, document FROM coord_config WHERE name = ?", (_CONFIG_ROW,)).fetchone()
    return (0, None) if row is None else (row[0], row[1])


def _config_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT version FROM coord_config WHERE name = ?", (_CONFIG_ROW,)).fetchone()
    return 0 if row is None else row[0]


def _update_config(
    conn: sqlite3.Connection, change: Callable[[LiveConfig], LiveConfig], defaults: LiveConfig
) -> LiveConfig:
    with _Transaction(conn):
        version, document = _read_config(conn)
        updated = change(defaults if document is None else live_config.decode(document))
        conn.execute(
            "INSERT INTO coord_config (name, document, version) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET document = excluded.document, version = excluded.version",
            (_CONFIG_ROW, live_config.encode(updated), version + 1),
        )
        return updated


def _unavailable(path: Path) -> Callable[[sqlite3.Error], Exception]:
    def translate(exc: sqlite3.Error) -> Exception:
        return BackendUnavailable(f"{path}: {exc}")

    return translate


# --- asyncio side -------------------------------------------------------------------------


class SqliteCoordinator(Coordinator):
    def __init__(
        self,
        path: Path,
        *,
        session_timeout: float = 10.0,
        poll_interval: float = 0.1,
        defaults: LiveConfig | None = None,
    ) -> None:
        super().__init__(session_timeout=session_timeout, defaults=defaults)
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.path = Path(path)
        self.poll_interval = poll_interval
        """How often watchers and candidates look at what other processes wrote."""
        self.session = ""
        self._db: SqliteThread | None = None
        self._keep_alive: asyncio.Task[None] | None = None
        self._registrations: dict[str, Registration] = {}
        self._start_lock = asyncio.Lock()

    @property
    def db(self) -> SqliteThread:
        if self._db is None:
            raise CoordinationError("the embedded coordinator is not started")
        return self._db

    async def start(self) -> None:
        async with self._start_lock:
            if self._db is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = SqliteThread(
                self.path, busy_timeout=BUSY_TIMEOUT, name="threadcast-coord", translate=_unavailable(self.path)
            )
            try:
                await db.open()
                await db.run(_create_schema)
                self.session = uuid.uuid4().hex
                opened = time.time()
                await db.run(_open_session, self.session, self.session_timeout, [])
            except BaseException:
                await db.close()
                raise
            self._db = db
            self._set_state(SessionState.CONNECTED, session=self.session, path=str(self.path))
            self._keep_alive = asyncio.create_task(self._heartbeats(opened), name="coord-heartbeats")

    async def close(self) -> None:
        if self._db is None:
            return
        await self._close_candidacies()
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            await asyncio.gather(self._keep_alive, return_exceptions=True)
        for registration in list(self._registrations.values()):
            registration.closed = True
        self._registrations.clear()
        try:
            await self._db.run(_close_session, self.session)
        finally:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        await self.db.run(_config_version)

    # --- session ---------------------------------------------------------------------------

    async def _heartbeats(self, written: float) -> None:
        """`written`: the last heartbeat stored (at first, when the session was opened), on the
        clock every process of the machine judges it by."""
        beat: asyncio.Future[float | None] | None = None
        while True:
            await asyncio.sleep(self.session_timeout / 3)
            if beat is None:  # else the late one is still running: wait for it
                beat = asyncio.ensure_future(self.db.run(_heartbeat, self.session))
            budget = written + self.session_timeout * SUSPEND_AFTER - time.time()
            await asyncio.wait({beat}, timeout=max(budget, 0) if self.state is SessionState.CONNECTED else None)
            if not beat.done():
                self._suspend("the heartbeat is late")
                continue
            finished, beat = beat, None
            try:
                stored = finished.result()
            except BackendUnavailable as exc:
                self._suspend(f"the heartbeat failed: {exc}")
                continue
            if stored is None:
                written = await self._renew() or written
            else:
                written = stored
                if self.state is not SessionState.CONNECTED:
                    self._set_state(SessionState.CONNECTED, session=self.session, resumed=True)

    async def _renew(self) -> float | None:
        """After another process reaped this session: open a new one with every registration.
        Return when it was opened (None when the database failed: tried again at the next beat)."""
        if self.state is not SessionState.LOST:
            self._set_state(SessionState.LOST, session=self.session)
        opened = time.time()
        try:
            await self._new_session()
        except BackendUnavailable as exc:
            log.warning("could not open a new coordination session", backend="sqlite", error=str(exc))
            return None
        return opened

    def _suspend(self, reason: str) -> None:
        if self.state is SessionState.CONNECTED:
            self._set_state(SessionState.SUSPENDED, session=self.session, reason=reason)

    async def _new_session(self) -> None:
        """Open a new session with every registration, under new ids, in one transaction."""
        session = uuid.uuid4().hex
        renewed = {_member_id(): registration for registration in self._registrations.values()}
        rows = [(member_id, r.role, msgspec.json.encode(r.info)) for member_id, r in renewed.items()]
        await self.db.run(_open_session, session, self.session_timeout, rows)
        self.session = session
        self._registrations = {}
        for member_id, registration in renewed.items():
            registration.id = member_id
            self._registrations[member_id] = registration
            if registration.closed:  # closed meanwhile
                await self._deregister(registration)
        self._set_state(SessionState.CONNECTED, session=session, resumed=False)
        log.info("members registered again", backend="sqlite", count=len(self._registrations))

    # --- registry --------------------------------------------------------------------------

    async def register(self, role: str, info: MemberInfo) -> Registration:
        check_name("role", role)
        registration = Registration(self, role, info, _member_id())
        await self.db.run(_add_member, registration.id, role, self.session, msgspec.json.encode(info))
        self._registrations[registration.id] = registration
        return registration

    async def _deregister(self, registration: Registration) -> None:
        if self._registrations.pop(registration.id, None) is not None:
            await self.db.run(_remove_member, registration.id)

    async def roles(self) -> list[str]:
        return await self.db.run(_roles)

    async def members(self, role: str) -> list[Member]:
        rows = await self.db.run(_members, role)
        return [Member(member_id, role, msgspec.json.decode(info, type=MemberInfo)) for member_id, info in rows]

    async def watch_members(self, role: str) -> AsyncGenerator[list[Member], None]:
        previous: list[Member] | None = None
        while True:
            current = await self.members(role)
            if current != previous:
                yield current
                previous = current
            await asyncio.sleep(self.poll_interval)

    # --- live configuration ----------------------------------------------------------------

    async def _read_config(self) -> tuple[int, LiveConfig]:
        version, document = await self.db.run(_read_config)
        return version, self.defaults if document is None else live_config.decode(document)

    async def _update_config(self, change: Callable[[LiveConfig], LiveConfig]) -> LiveConfig:
        return await self.db.run(_update_config, change, self.defaults)

    async def _config_versions(self) -> AsyncGenerator[tuple[int, LiveConfig], None]:
        seen = -1
        while True:
            if await self.db.run(_config_version) != seen:
                seen, config = await self._read_config()
                yield seen, config
            await asyncio.sleep(self.poll_interval)

    # --- leader election -------------------------------------------------------------------

    def _candidacy(self, kind: str, name: str) -> Leadership:
        return _SqliteLeadership(self, kind, name)


def _member_id() -> str:
    return uuid.uuid4().hex[:16]


class _SqliteLeadership(Leadership):
    """Polls the lease every `poll_interval` while another live candidate holds it."""

    def __init__(self, coordinator: SqliteCoordinator, kind: str, name: str) -> None:
        super().__init__(coordinator, kind, name)
        self._coord = coordinator
        self.candidate = uuid.uuid4().hex

    async def _campaign(self) -> None:
        db = self._coord.db
        while True:
            await self._coord.connected()
            epoch = await db.run(_acquire, self.kind, self.name, self.candidate, self._coord.session)
            if epoch is None:
                await asyncio.sleep(self._coord.poll_interval)
                continue
            term = self._begin_term(epoch, lambda e=epoch: db.run(_holds, self.kind, self.name, self.candidate, e))
            await term.lost.wait()
            await self._coord.connected()
            await db.run(_release, self.kind, self.name, self.candidate)

    async def _withdraw(self) -> None:
        try:
            await self._coord.db.run(_release, self.kind, self.name, self.candidate)
        except CoordinationError as exc:  # the session ending frees it too
            log.warning("could not release the lease", kind=self.kind, name=self.name, error=str(exc))
