"""The event log in one SQLite file, shared safely by every process that opens it.

Tables (all prefixed `log_`):

- `log_topics`: name and partition count, fixed at creation;
- `log_partitions`: per partition the offset the next record gets. Offsets come from this
  counter, never from row counts, so old records could be deleted (retention) without
  renumbering;
- `log_records`: one row per record, unique on (topic, partition, offset);
- `log_group_offsets`: per group and partition the committed offset;
- `log_group_members`: the live members of a group on a topic, each with its last heartbeat and
  its own session timeout;
- `log_partition_owners`: which member currently reads which partition.

Concurrency: the file is in WAL mode, so readers never wait for the writer. Each `SqliteLog`
has two threads, each owning one connection: a writer (appends, commits, heartbeats, group
changes; each one short `BEGIN IMMEDIATE` transaction, so offsets stay dense and unique across
processes) and a reader (polls and metadata). SQLite never runs on the event loop.
`synchronous=NORMAL`: a committed append survives a crash of any process; a power loss may drop
the last transactions (Kafka, too, acknowledges before its disks sync).

Consumer groups: a consumer joins its group at its first poll and heartbeats in the background
every third of the session timeout. Live members (last heartbeat younger than their session
timeout) are sorted by member id and partitions dealt round robin over them. A member takes a
partition only once no other live member owns it, and gives up the partitions no longer meant
for it on its next poll, so one partition is never read by two members at once; a new owner
starts at the committed offset (at least once: what the previous owner read but did not commit
is read again). A closed consumer leaves at once; a dead one is evicted when its heartbeat is
older than its session timeout. Commits of a partition that another live member owns are
ignored, so a member that lost a partition cannot move the new owner's offset.

Appends from this `SqliteLog` wake its waiting consumers at once; appends and group changes made
by other processes are seen within `poll_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from threadcast.bus.log import EventLog, LogConsumer, Message, Record, UnknownTopicError
from threadcast.bus.partitioner import partition_for
from threadcast.sqlite_thread import SqliteThread

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another process's write lock before it fails."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS log_topics (
        name TEXT PRIMARY KEY,
        partitions INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS log_partitions (
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        next_offset INTEGER NOT NULL,
        PRIMARY KEY (topic, partition)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS log_records (
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        "offset" INTEGER NOT NULL,
        key TEXT,
        value BLOB NOT NULL,
        ts REAL NOT NULL,
        headers TEXT
    )""",
    'CREATE UNIQUE INDEX IF NOT EXISTS log_records_by_offset ON log_records (topic, partition, "offset")',
    'CREATE INDEX IF NOT EXISTS log_records_by_time ON log_records (topic, partition, ts, "offset")',
    """CREATE TABLE IF NOT EXISTS log_group_offsets (
        grp TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        committed INTEGER NOT NULL,
        PRIMARY KEY (grp, topic, partition)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS log_group_members (
        grp TEXT NOT NULL,
        topic TEXT NOT NULL,
        member TEXT NOT NULL,
        heartbeat REAL NOT NULL,
        session_timeout REAL NOT NULL,
        PRIMARY KEY (grp, topic, member)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS log_partition_owners (
        grp TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        member TEXT NOT NULL,
        PRIMARY KEY (grp, topic, partition)
    ) WITHOUT ROWID""",
)

T = TypeVar("T")


# --- SQLite side: plain functions run on a worker thread, each one short transaction ---------


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    """IMMEDIATE takes the write lock up front; DEFERRED gives readers one snapshot."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _create_schema(conn: sqlite3.Connection) -> None:
    with _transaction(conn):
        for statement in _SCHEMA:
            conn.execute(statement)


def _create_topic(conn: sqlite3.Connection, topic: str, partitions: int) -> int:
    """Create the topic if missing; return its partition count."""
    with _transaction(conn):
        created = conn.execute(
            "INSERT OR IGNORE INTO log_topics (name, partitions) VALUES (?, ?)", (topic, partitions)
        ).rowcount
        if created:
            conn.executemany(
                "INSERT INTO log_partitions (topic, partition, next_offset) VALUES (?, ?, 0)",
                [(topic, partition) for partition in range(partitions)],
            )
        (count,) = conn.execute("SELECT partitions FROM log_topics WHERE name = ?", (topic,)).fetchone()
        return count


def _partition_count(conn: sqlite3.Connection, topic: str) -> int | None:
    row = conn.execute("SELECT partitions FROM log_topics WHERE name = ?", (topic,)).fetchone()
    return None if row is None else row[0]


def _encode_headers(headers: Mapping[str, str]) -> str | None:
    return orjson.dumps(dict(headers)).decode() if headers else None


def _append(
    conn: sqlite3.Connection, topic: str, messages: Sequence[Message], partitions: Sequence[int]
) -> list[tuple[int, int]]:
    with _transaction(conn):
        now = time.time()
        next_offsets = dict(
            conn.execute("SELECT partition, next_offset FROM log_partitions WHERE topic = ?", (topic,))
        )
        placed: list[tuple[int, int]] = []
        rows = []
        for message, partition in zip(messages, partitions, strict=True):
            offset = next_offsets[partition]
            next_offsets[partition] = offset + 1
            placed.append((partition, offset))
            rows.append(
                (topic, partition, offset, message.key, message.value, now, _encode_headers(message.headers))
            )
        conn.executemany(
            'INSERT INTO log_records (topic, partition, "offset", key, value, ts, headers)'
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "UPDATE log_partitions SET next_offset = ? WHERE topic = ? AND partition = ?",
            [(next_offsets[partition], topic, partition) for partition in set(partitions)],
        )
    return placed


def _end_offsets(conn: sqlite3.Connection, topic: str) -> dict[int, int]:
    return dict(
        conn.execute(
            "SELECT partition, next_offset FROM log_partitions WHERE topic = ? ORDER BY partition", (topic,)
        )
    )


def _committed(conn: sqlite3.Connection, topic: str, group: str) -> dict[int, int]:
    return dict(
        conn.execute(
            "SELECT partition, committed FROM log_group_offsets WHERE grp = ? AND topic = ?", (group, topic)
        )
    )


def _offsets(conn: sqlite3.Connection, topic: str, group: str) -> tuple[dict[int, int], dict[int, int]]:
    """(end offsets, committed offsets) read in one snapshot."""
    with _transaction(conn, "DEFERRED"):
        return _end_offsets(conn, topic), _committed(conn, topic, group)


def _is_live(conn: sqlite3.Connection, topic: str, group: str, member: str, now: float) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM log_group_members WHERE grp = ? AND topic = ? AND member = ?"
            " AND heartbeat + session_timeout >= ?",
            (group, topic, member, now),
        ).fetchone()
        is not None
    )


def _heartbeat(
    conn: sqlite3.Connection, topic: str, group: str, member: str, session_timeout: float
) -> None:
    """Join or stay in the group, and evict the members whose session ran out."""
    with _transaction(conn):
        now = time.time()
        conn.execute(
            "INSERT INTO log_group_members (grp, topic, member, heartbeat, session_timeout)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (grp, topic, member) DO UPDATE SET heartbeat = excluded.heartbeat",
            (group, topic, member, now, session_timeout),
        )
        conn.execute(
            "DELETE FROM log_group_members WHERE grp = ? AND topic = ? AND heartbeat + session_timeout < ?",
            (group, topic, now),
        )
        conn.execute(
            "DELETE FROM log_partition_owners WHERE grp = ? AND topic = ? AND member NOT IN"
            " (SELECT member FROM log_group_members WHERE grp = ? AND topic = ?)",
            (group, topic, group, topic),
        )


def _leave(conn: sqlite3.Connection, topic: str, group: str, member: str) -> None:
    with _transaction(conn):
        for table in ("log_partition_owners", "log_group_members"):
            conn.execute(f"DELETE FROM {table} WHERE grp = ? AND topic = ? AND member = ?", (group, topic, member))


def _reassign(
    conn: sqlite3.Connection, topic: str, group: str, member: str, release: set[int], claim: set[int]
) -> tuple[set[int], dict[int, int]]:
    """Give up `release`, take each partition of `claim` that no other live member owns.
    Return the partitions the member owns now and the group's committed offsets."""
    with _transaction(conn):
        now = time.time()
        conn.executemany(
            "DELETE FROM log_partition_owners WHERE grp = ? AND topic = ? AND partition = ? AND member = ?",
            [(group, topic, partition, member) for partition in release],
        )
        for partition in claim:
            row = conn.execute(
                "SELECT member FROM log_partition_owners WHERE grp = ? AND topic = ? AND partition = ?",
                (group, topic, partition),
            ).fetchone()
            if row is None or not _is_live(conn, topic, group, row[0], now):
                conn.execute(
                    "INSERT OR REPLACE INTO log_partition_owners (grp, topic, partition, member) VALUES (?, ?, ?, ?)",
                    (group, topic, partition, member),
                )
        owned = {
            partition
            for (partition,) in conn.execute(
                "SELECT partition FROM log_partition_owners WHERE grp = ? AND topic = ? AND member = ?",
                (group, topic, member),
            )
        }
        return owned, _committed(conn, topic, group)


def _commit(
    conn: sqlite3.Connection, topic: str, group: str, member: str, offsets: Mapping[int, int]
) -> list[int]:
    """Store the offsets; return the partitions skipped because another live member owns them."""
    skipped = []
    with _transaction(conn):
        now = time.time()
        for partition, offset in offsets.items():
            row = conn.execute(
                "SELECT member FROM log_partition_owners WHERE grp = ? AND topic = ? AND partition = ?",
                (group, topic, partition),
            ).fetchone()
            if row is not None and row[0] != member and _is_live(conn, topic, group, row[0], now):
                skipped.append(partition)
                continue
            conn.execute(
                "INSERT INTO log_group_offsets (grp, topic, partition, committed) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (grp, topic, partition) DO UPDATE SET committed = excluded.committed",
                (group, topic, partition, offset),
            )
    return skipped


@dataclass(frozen=True, slots=True)
class _GroupView:
    """One consistent look at a group on a topic."""

    partitions: int
    """0 while the topic does not exist."""
    members: list[str]
    """Live members, sorted."""
    owners: dict[int, str]
    """Partition -> its live owner."""

    def target(self, member: str) -> set[int]:
        """The partitions the round-robin assignment gives `member`."""
        if member not in self.members:
            return set()
        index, count = self.members.index(member), len(self.members)
        return {partition for partition in range(self.partitions) if partition % count == index}


def _fetch(
    conn: sqlite3.Connection,
    topic: str,
    group: str,
    member: str,
    positions: Sequence[tuple[int, int]],
    max_records: int,
) -> tuple[_GroupView, list[Record]]:
    """The group as it is now, and up to `max_records` records from `positions` (in that order)
    of the partitions the member still owns."""
    with _transaction(conn, "DEFERRED"):
        now = time.time()
        members = [
            member_id
            for (member_id,) in conn.execute(
                "SELECT member FROM log_group_members WHERE grp = ? AND topic = ?"
                " AND heartbeat + session_timeout >= ? ORDER BY member",
                (group, topic, now),
            )
        ]
        live = set(members)
        owners = {
            partition: owner
            for partition, owner in conn.execute(
                "SELECT partition, member FROM log_partition_owners WHERE grp = ? AND topic = ?", (group, topic)
            )
            if owner in live
        }
        view = _GroupView(_partition_count(conn, topic) or 0, members, owners)
        ends = _end_offsets(conn, topic)
        records: list[Record] = []
        for partition, position in positions:
            budget = max_records - len(records)
            if budget <= 0:
                break
            if owners.get(partition) != member or position >= ends.get(partition, 0):
                continue
            rows = conn.execute(
                'SELECT "offset", key, value, ts, headers FROM log_records'
                ' WHERE topic = ? AND partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
                (topic, partition, position, budget),
            )
            records.extend(
                Record(topic, partition, offset, key, value, ts, orjson.loads(headers) if headers else {})
                for offset, key, value, ts, headers in rows
            )
    return view, records


def _offsets_for_time(
    conn: sqlite3.Connection, topic: str, partitions: Sequence[int], timestamp: float
) -> dict[int, int]:
    """Per partition, the first offset appended at or after `timestamp` (the end when none)."""
    with _transaction(conn, "DEFERRED"):
        ends = _end_offsets(conn, topic)
        found = {}
        for partition in partitions:
            row = conn.execute(
                'SELECT "offset" FROM log_records WHERE topic = ? AND partition = ? AND ts >= ?'
                ' ORDER BY ts, "offset" LIMIT 1',
                (topic, partition, timestamp),
            ).fetchone()
            found[partition] = ends.get(partition, 0) if row is None else row[0]
        return found


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT count(*) FROM log_topics").fetchone()


# --- asyncio side -------------------------------------------------------------------------


class SqliteLog(EventLog):
    def __init__(self, path: Path, *, poll_interval: float = 0.05, session_timeout: float = 10.0) -> None:
        if poll_interval <= 0 or session_timeout <= 0:
            raise ValueError("poll_interval and session_timeout must be positive")
        self.path = Path(path)
        self.poll_interval = poll_interval
        """How often a waiting consumer looks for what other processes wrote."""
        self.session_timeout = session_timeout
        """A member of this log not heard from for that long is evicted from its group."""
        self._reader: SqliteThread | None = None
        self._writer: SqliteThread | None = None
        self._start_lock = asyncio.Lock()
        self._partition_counts: dict[str, int] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._consumers: set[SqliteConsumer] = set()

    async def start(self) -> None:
        async with self._start_lock:
            if self._writer is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = SqliteThread(self.path, busy_timeout=BUSY_TIMEOUT, name="threadcast-log-writer")
            reader = SqliteThread(self.path, busy_timeout=BUSY_TIMEOUT, name="threadcast-log-reader")
            try:
                await writer.open()
                await writer.run(_create_schema)
                await reader.open()
            except BaseException:
                await writer.close()
                await reader.close()
                raise
            self._writer, self._reader = writer, reader

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.close()
        for worker in (self._reader, self._writer):
            if worker is not None:
                await worker.close()
        self._reader = self._writer = None

    @property
    def reader(self) -> SqliteThread:
        if self._reader is None:
            raise RuntimeError("the SQLite event log is not started")
        return self._reader

    @property
    def writer(self) -> SqliteThread:
        if self._writer is None:
            raise RuntimeError("the SQLite event log is not started")
        return self._writer

    async def ping(self) -> None:
        await self.reader.run(_ping)

    async def create_topic(self, topic: str, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"a topic has at least one partition, got {partitions}")
        self._partition_counts[topic] = await self.writer.run(_create_topic, topic, partitions)

    async def partitions(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = await self.reader.run(_partition_count, topic)
            if count is None:
                raise UnknownTopicError(topic)
            self._partition_counts[topic] = count
        return count

    async def append(self, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        if not messages:
            return []
        count = await self.partitions(topic)
        chosen = [partition_for(message.key, count) for message in messages]
        placed = await self.writer.run(_append, topic, list(messages), chosen)
        self.wake(topic)
        return placed

    async def end_offsets(self, topic: str) -> dict[int, int]:
        count = await self.partitions(topic)
        ends = await self.reader.run(_end_offsets, topic)
        return {partition: ends.get(partition, 0) for partition in range(count)}

    async def committed(self, topic: str, group: str) -> dict[int, int]:
        count = await self.partitions(topic)
        committed = await self.reader.run(_committed, topic, group)
        return {partition: committed.get(partition, 0) for partition in range(count)}

    def consumer(self, topic: str, group: str) -> SqliteConsumer:
        consumer = SqliteConsumer(self, topic, group)
        self._consumers.add(consumer)
        return consumer

    def wakeup(self, topic: str) -> asyncio.Event:
        """Set by the next `wake(topic)`: take it before looking, then wait on it."""
        return self._wakeups.setdefault(topic, asyncio.Event())

    def wake(self, topic: str) -> None:
        """Wake this log's consumers of `topic` waiting for records or group changes."""
        event = self._wakeups.pop(topic, None)
        if event is not None:
            event.set()

    def discard_consumer(self, consumer: SqliteConsumer) -> None:
        """Called by a consumer that closed."""
        self._consumers.discard(consumer)


class SqliteConsumer(LogConsumer):
    def __init__(self, log: SqliteLog, topic: str, group: str) -> None:
        self._log = log
        self.topic = topic
        self.group = group
        self.member_id = uuid.uuid4().hex
        self._positions: dict[int, int] = {}
        """Owned partition -> offset of the next record to return."""
        self._polled: dict[int, int] = {}
        """Partition -> offset after the last record returned and not yet committed."""
        self._rotation = 0
        self._heartbeats: asyncio.Task[None] | None = None
        self._closed = False

    def assignment(self) -> set[int]:
        return set(self._positions)

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        if self._closed:
            raise RuntimeError("the consumer is closed")
        if self._heartbeats is None:
            await self._join()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._closed:
            wakeup = self._log.wakeup(self.topic)
            view, records = await self._log.reader.run(
                _fetch, self.topic, self.group, self.member_id, self._fetch_order(), max_records
            )
            if await self._rebalance(view):
                continue
            if records:
                self._rotation += 1
                for record in records:
                    self._positions[record.partition] = self._polled[record.partition] = record.offset + 1
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), min(self._log.poll_interval, remaining))
        return []

    def _fetch_order(self) -> list[tuple[int, int]]:
        """The positions, starting from a partition that moves on every poll, so that a busy
        partition cannot starve the others."""
        items = sorted(self._positions.items())
        if not items:
            return items
        start = self._rotation % len(items)
        return items[start:] + items[:start]

    async def _heartbeat(self) -> None:
        await self._log.writer.run(_heartbeat, self.topic, self.group, self.member_id, self._log.session_timeout)

    async def _join(self) -> None:
        await self._heartbeat()
        self._heartbeats = asyncio.create_task(self._heartbeat_forever(), name=f"log-heartbeat-{self.member_id}")
        self._log.wake(self.topic)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._log.session_timeout / 3)
            try:
                await self._heartbeat()
            except sqlite3.Error:
                log.warning("event log heartbeat failed", exc_info=True)

    async def _rebalance(self, view: _GroupView) -> bool:
        """Bring this member's partitions in line with the group; True when anything changed."""
        if self.member_id not in view.members:
            log.info("member %s of group %s on %s was evicted; joining again", self.member_id, self.group, self.topic)
            await self._heartbeat()
            return True
        target = view.target(self.member_id)
        owned = {partition for partition, owner in view.owners.items() if owner == self.member_id}
        release = owned - target
        claim = target - set(view.owners)
        if not release and not claim and owned == set(self._positions):
            return False
        owned, committed = await self._log.writer.run(
            _reassign, self.topic, self.group, self.member_id, release, claim
        )
        self._positions = {
            partition: self._positions.get(partition, committed.get(partition, 0)) for partition in sorted(owned)
        }
        self._polled = {partition: offset for partition, offset in self._polled.items() if partition in owned}
        if release:
            self._log.wake(self.topic)
        return True

    async def commit(self, offsets: Mapping[int, int] | None = None) -> None:
        to_commit = dict(self._polled if offsets is None else offsets)
        if not to_commit:
            return
        skipped = await self._log.writer.run(_commit, self.topic, self.group, self.member_id, to_commit)
        if skipped:
            log.warning(
                "not committing partitions %s of %s for group %s: another member owns them now",
                skipped, self.topic, self.group,
            )
        for partition, offset in to_commit.items():
            if self._polled.get(partition) == offset:
                del self._polled[partition]

    async def seek(self, partition: int, offset: int) -> None:
        if partition not in self._positions:
            raise ValueError(f"partition {partition} of {self.topic} is not assigned to this consumer")
        if offset < 0:
            raise ValueError(f"offsets start at 0, got {offset}")
        self._positions[partition] = offset

    async def seek_to_timestamp(self, timestamp: float) -> None:
        found = await self._log.reader.run(_offsets_for_time, self.topic, sorted(self._positions), timestamp)
        for partition, offset in found.items():
            if partition in self._positions:
                self._positions[partition] = offset

    async def lag(self) -> dict[int, int]:
        ends, committed = await self._log.reader.run(_offsets, self.topic, self.group)
        return {
            partition: ends.get(partition, 0) - committed.get(partition, 0) for partition in sorted(self._positions)
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._log.discard_consumer(self)
        if self._heartbeats is None:
            return
        self._heartbeats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeats
        await self._log.writer.run(_leave, self.topic, self.group, self.member_id)
        self._positions.clear()
        self._polled.clear()
        self._log.wake(self.topic)
