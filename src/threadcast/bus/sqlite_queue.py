"""The work queue in one SQLite file, shared safely by every process that opens it.

Tables:

- `queues`: declared queues and their `max_attempts`. Publishing to a queue that was never
  declared raises `UnknownQueueError`, as RabbitMQ's default exchange would route such a message
  nowhere (the RabbitMQ backend publishes as mandatory and raises too): a typo in a queue name
  fails loudly instead of piling up messages nobody reads;
- `queue_messages`: one row per message, `id` giving the FIFO order. `attempt` is the number of
  the next (or current) delivery, `available_at` when it may be delivered (later than now after a
  delayed nack), and `leased_by` / `leased_until` the consumer holding it and until when;
- `queue_consumers`: the live consumers: their host, PID and when their leases expire;
- `queue_dead_letters`: messages whose attempts were used up, or that were rejected, with the
  error and the number of deliveries made.

Leases: a consumer leases up to `prefetch` ready messages at a time, in FIFO order, in one
`BEGIN IMMEDIATE` transaction, so two consumers (of any processes) never hold one message at
once. Acks delete the message, nacks put it back for its next attempt (or dead-letter it),
rejects dead-letter it; each only if the consumer still holds the lease. While a consumer runs
it renews its leases every third of `lease_timeout`, so a slow handler keeps its message.

A consumer that goes away gives its messages back:

- `close()` releases them at once. A message handed to the application and not settled counts as
  a delivery (its attempt grows, and it is dead-lettered once the attempts are used up, so a poison
  message that crashes its consumers still ends up dead); a message leased but not handed out yet
  goes back as it was;
- a consumer whose process died (same host, PID gone) or whose leases expired (its process hung
  or another host lost it) loses them to the next consumer of the queue that looks, and they
  count as a delivery as above (should its PID have been reused already, they wait for the lease
  to expire). A consumer that comes back after losing its leases goes on, and its acks of lost
  messages are ignored (they are delivered elsewhere: at least once).

`depth` counts the ready and delayed messages, not those leased (as RabbitMQ counts ready
messages, not unacknowledged ones).

Concurrency: WAL mode, a busy timeout, short transactions, one dedicated thread per `SqliteQueue`
owning its connection, so SQLite never runs on the event loop. `synchronous=NORMAL`: a publish
that returned survives a crash of any process; a power loss may drop the last transactions.
Ready messages published, nacked or released by this `SqliteQueue` wake its waiting consumers at
once; those of other processes are seen within `poll_interval`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

import orjson

from threadcast.bus.queue import DeadLetter, Delivery, QueueConsumer, QueueSpec, UnknownQueueError, WorkQueue
from threadcast.sqlite_thread import connect

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another process's write lock before it fails."""
MAX_BATCH = 256
"""Calls committed together at most (the write lock is held that long)."""

CONSUMER_GONE = "its consumer went away without settling it"
LEASE_EXPIRED = "its consumer's lease expired"

_HOST = socket.gethostname()

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS queues (
        name TEXT PRIMARY KEY,
        max_attempts INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS queue_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body BLOB NOT NULL,
        headers TEXT,
        attempt INTEGER NOT NULL,
        available_at REAL NOT NULL,
        leased_by TEXT,
        leased_until REAL
    )""",
    "CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (queue, id) WHERE leased_by IS NULL",
    """CREATE INDEX IF NOT EXISTS queue_messages_leases ON queue_messages (queue, leased_until)
        WHERE leased_by IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS queue_messages_owner ON queue_messages (leased_by) WHERE leased_by IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS queue_consumers (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS queue_dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body BLOB NOT NULL,
        headers TEXT,
        attempts INTEGER NOT NULL,
        error TEXT NOT NULL,
        dead_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS queue_dead_letters_by_queue ON queue_dead_letters (queue, id)",
)

T = TypeVar("T")

_Leased = tuple[int, str, bytes, str | None, int]
"""A leased message as read: row id, message id, body, encoded headers, attempt."""


# --- SQLite side: plain functions run on the queue's thread, each one short transaction -------


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    """IMMEDIATE takes the write lock up front (a read that later writes could fail to upgrade);
    DEFERRED gives a reader one snapshot. Inside a transaction already (a batch of calls, see
    `_Connection`), a savepoint: a failing call undoes its own changes only."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT call")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO call")
            raise
        finally:
            conn.execute("RELEASE call")
        return
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _create_schema(conn: sqlite3.Connection) -> None:
    with _transaction(conn):
        for statement in _SCHEMA:
            conn.execute(statement)


def _max_attempts(conn: sqlite3.Connection, queue: str) -> int:
    row = conn.execute("SELECT max_attempts FROM queues WHERE name = ?", (queue,)).fetchone()
    if row is None:
        raise UnknownQueueError(f"work queue {queue!r} was never declared")
    return row[0]


def _declare(conn: sqlite3.Connection, queue: str, max_attempts: int) -> None:
    with _transaction(conn):
        conn.execute(
            "INSERT INTO queues (name, max_attempts) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET max_attempts = excluded.max_attempts",
            (queue, max_attempts),
        )


def _publish(conn: sqlite3.Connection, queue: str, body: bytes, message_id: str, headers: str | None) -> None:
    with _transaction(conn):
        _max_attempts(conn, queue)
        conn.execute(
            "INSERT INTO queue_messages (queue, message_id, body, headers, attempt, available_at)"
            " VALUES (?, ?, ?, ?, 1, ?)",
            (queue, message_id, body, headers, time.time()),
        )


def _bury(conn: sqlite3.Connection, where: str, params: Sequence[tuple[Any, ...]], error: str) -> int:
    """Move the messages matching `where` (once per parameter tuple) to the dead letters."""
    now = time.time()
    buried = conn.executemany(
        "INSERT INTO queue_dead_letters (queue, message_id, body, headers, attempts, error, dead_at)"
        f" SELECT queue, message_id, body, headers, attempt, ?, ? FROM queue_messages WHERE {where} ORDER BY id",
        [(error, now, *param) for param in params],
    ).rowcount
    conn.executemany(f"DELETE FROM queue_messages WHERE {where}", params)
    return buried


def _give_back(
    conn: sqlite3.Connection,
    where: str,
    params: Sequence[tuple[Any, ...]],
    *,
    max_attempts: int,
    error: str,
    available_at: float,
) -> int:
    """Count a delivery of the leased messages matching `where`: put them back for their next
    attempt at `available_at`, or dead-letter those whose attempts are used up. Return how many
    matched."""
    buried = _bury(conn, f"{where} AND attempt >= {max_attempts:d}", params, error)
    retried = conn.executemany(
        "UPDATE queue_messages SET attempt = attempt + 1, available_at = ?, leased_by = NULL, leased_until = NULL"
        f" WHERE {where}",
        [(available_at, *param) for param in params],
    ).rowcount
    return buried + retried


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _gone_consumers(conn: sqlite3.Connection, queue: str, consumer: str, now: float) -> list[str]:
    """The other consumers of `queue` whose leases expired or whose process died."""
    rows = conn.execute(
        "SELECT id, host, pid, expires_at FROM queue_consumers WHERE queue = ? AND id != ?", (queue, consumer)
    ).fetchall()
    return [
        consumer_id
        for consumer_id, host, pid, expires_at in rows
        if expires_at < now or (host == _HOST and not _pid_alive(pid))
    ]


def _has_ready(conn: sqlite3.Connection, queue: str, now: float) -> bool:
    (ready,) = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM queue_messages WHERE queue = ? AND leased_by IS NULL AND available_at <= ?)"
        " OR EXISTS (SELECT 1 FROM queue_messages WHERE queue = ? AND leased_by IS NOT NULL AND leased_until < ?)",
        (queue, now, queue, now),
    ).fetchone()
    return bool(ready)


def _take(conn: sqlite3.Connection, queue: str, consumer: str, limit: int, lease_timeout: float) -> list[_Leased]:
    """Lease up to `limit` ready messages to `consumer`, oldest first, after taking back those
    of gone consumers and of expired leases. Looks before it locks: an idle poll (run alone,
    not in a batch) does not take the write lock."""
    now = time.time()
    gone = _gone_consumers(conn, queue, consumer, now)
    if not gone and not _has_ready(conn, queue, now):
        return []
    with _transaction(conn):
        now = time.time()
        max_attempts = _max_attempts(conn, queue)
        if gone:
            log.info("taking back the messages of gone consumers %s of %s", gone, queue)
            _give_back(
                conn,
                "leased_by = ?",
                [(gone_id,) for gone_id in gone],
                max_attempts=max_attempts,
                error=CONSUMER_GONE,
                available_at=now,
            )
            conn.executemany("DELETE FROM queue_consumers WHERE id = ?", [(gone_id,) for gone_id in gone])
        _give_back(
            conn,
            "queue = ? AND leased_by IS NOT NULL AND leased_until < ?",
            [(queue, now)],
            max_attempts=max_attempts,
            error=LEASE_EXPIRED,
            available_at=now,
        )
        rows = conn.execute(
            "SELECT id, message_id, body, headers, attempt FROM queue_messages"
            " WHERE queue = ? AND leased_by IS NULL AND available_at <= ? ORDER BY id LIMIT ?",
            (queue, now, limit),
        ).fetchall()
        conn.executemany(
            "UPDATE queue_messages SET leased_by = ?, leased_until = ? WHERE id = ?",
            [(consumer, now + lease_timeout, row[0]) for row in rows],
        )
    return rows


def _heartbeat(conn: sqlite3.Connection, queue: str, consumer: str, lease_timeout: float) -> set[int]:
    """Register the consumer, or keep it registered, and renew its leases; return the row ids
    of the messages it still holds."""
    with _transaction(conn):
        _max_attempts(conn, queue)
        until = time.time() + lease_timeout
        conn.execute(
            "INSERT INTO queue_consumers (id, queue, host, pid, expires_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
            (consumer, queue, _HOST, os.getpid(), until),
        )
        return {
            row_id
            for (row_id,) in conn.execute(
                "UPDATE queue_messages SET leased_until = ? WHERE leased_by = ? RETURNING id", (until, consumer)
            ).fetchall()
        }


def _leave(conn: sqlite3.Connection, queue: str, consumer: str, delivered: Sequence[int]) -> int:
    """Give back everything `consumer` holds, counting a delivery for the `delivered` ones, and
    unregister it; return how many messages went back."""
    with _transaction(conn):
        returned = 0
        if delivered:
            returned = _give_back(
                conn,
                "id = ? AND leased_by = ?",
                [(row_id, consumer) for row_id in delivered],
                max_attempts=_max_attempts(conn, queue),
                error=CONSUMER_GONE,
                available_at=time.time(),
            )
        returned += conn.execute(
            "UPDATE queue_messages SET leased_by = NULL, leased_until = NULL WHERE leased_by = ?", (consumer,)
        ).rowcount
        conn.execute("DELETE FROM queue_consumers WHERE id = ?", (consumer,))
    return returned


def _ack(conn: sqlite3.Connection, queue: str, row_id: int, consumer: str) -> bool:
    with _transaction(conn):
        return conn.execute(
            "DELETE FROM queue_messages WHERE id = ? AND leased_by = ?", (row_id, consumer)
        ).rowcount == 1


def _nack(conn: sqlite3.Connection, queue: str, row_id: int, consumer: str, error: str, delay: float) -> bool:
    with _transaction(conn):
        return (
            _give_back(
                conn,
                "id = ? AND leased_by = ?",
                [(row_id, consumer)],
                max_attempts=_max_attempts(conn, queue),
                error=error,
                available_at=time.time() + max(delay, 0.0),
            )
            == 1
        )


def _reject(conn: sqlite3.Connection, queue: str, row_id: int, consumer: str, reason: str) -> bool:
    with _transaction(conn):
        return _bury(conn, "id = ? AND leased_by = ?", [(row_id, consumer)], reason) == 1


def _depth(conn: sqlite3.Connection, queue: str) -> int:
    with _transaction(conn, "DEFERRED"):
        _max_attempts(conn, queue)
        (count,) = conn.execute(
            "SELECT (SELECT count(*) FROM queue_messages WHERE queue = ? AND leased_by IS NULL)"
            " + (SELECT count(*) FROM queue_messages WHERE queue = ? AND leased_by IS NOT NULL AND leased_until < ?)",
            (queue, queue, time.time()),
        ).fetchone()
    return count


def _dead_letters(conn: sqlite3.Connection, queue: str, limit: int) -> list[DeadLetter]:
    with _transaction(conn, "DEFERRED"):
        _max_attempts(conn, queue)
        rows = conn.execute(
            "SELECT message_id, body, headers, attempts, error, dead_at FROM queue_dead_letters"
            " WHERE queue = ? ORDER BY id LIMIT ?",
            (queue, limit),
        ).fetchall()
    return [
        DeadLetter(message_id, body, _decode_headers(headers), attempts, error, dead_at)
        for message_id, body, headers, attempts, error, dead_at in rows
    ]


def _replay(conn: sqlite3.Connection, queue: str, message_ids: Sequence[str] | None) -> int:
    where = "queue = ?"
    params: list[tuple[str, ...]] = [(queue,)]
    if message_ids is not None:
        where = "queue = ? AND message_id = ?"
        params = [(queue, message_id) for message_id in dict.fromkeys(message_ids)]
    with _transaction(conn):
        _max_attempts(conn, queue)
        now = time.time()
        replayed = conn.executemany(
            "INSERT INTO queue_messages (queue, message_id, body, headers, attempt, available_at)"
            f" SELECT queue, message_id, body, headers, 1, ? FROM queue_dead_letters WHERE {where} ORDER BY id",
            [(now, *param) for param in params],
        ).rowcount
        conn.executemany(f"DELETE FROM queue_dead_letters WHERE {where}", params)
    return replayed


def _purge(conn: sqlite3.Connection, queue: str) -> int:
    with _transaction(conn):
        _max_attempts(conn, queue)
        return conn.execute("DELETE FROM queue_dead_letters WHERE queue = ?", (queue,)).rowcount


def _dead_count(conn: sqlite3.Connection, queue: str) -> int:
    with _transaction(conn, "DEFERRED"):
        _max_attempts(conn, queue)
        (count,) = conn.execute("SELECT count(*) FROM queue_dead_letters WHERE queue = ?", (queue,)).fetchone()
    return count


def _expire(conn: sqlite3.Connection, queue: str, dead_before: float) -> int:
    with _transaction(conn):
        _max_attempts(conn, queue)
        return conn.execute(
            "DELETE FROM queue_dead_letters WHERE queue = ? AND dead_at < ?", (queue, dead_before)
        ).rowcount


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT count(*) FROM queues").fetchone()


def _encode_headers(headers: Mapping[str, str] | None) -> str | None:
    return orjson.dumps(dict(headers)).decode() if headers else None


def _decode_headers(headers: str | None) -> dict[str, str]:
    return orjson.loads(headers) if headers else {}


class _Connection:
    """One SQLite connection owned by one dedicated thread. `run(fn, *args)` calls
    `fn(conn, *args)` there. Calls made meanwhile by concurrent tasks are run together, in one
    transaction (group commit: each call in a savepoint of its own), and answered together once
    it committed, so a busy queue pays one thread hand-over and one commit per batch rather
    than per call."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="threadcast-queue", daemon=True)
        self._opened: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def open(self) -> None:
        self._thread.start()
        await asyncio.wrap_future(self._opened)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put(_Call(fn, args, loop, future))
        return await future

    async def close(self) -> None:
        self._calls.put(None)
        await asyncio.to_thread(self._thread.join)

    def _serve(self) -> None:
        try:
            conn = connect(self._path, busy_timeout=BUSY_TIMEOUT)
        except BaseException as exc:
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)
        try:
            closing = False
            while not closing:
                batch = self._next_batch()
                closing = batch[-1] is None
                self._run_batch(conn, [call for call in batch if call is not None])
        finally:
            conn.close()

    def _next_batch(self) -> list[_Call | None]:
        """Wait for a call, then take the calls already waiting (up to `MAX_BATCH`, or up to
        the close: None)."""
        batch = [self._calls.get()]
        with contextlib.suppress(Empty):
            while batch[-1] is not None and len(batch) < MAX_BATCH:
                batch.append(self._calls.get_nowait())
        return batch

    @staticmethod
    def _run_batch(conn: sqlite3.Connection, calls: list[_Call]) -> None:
        answers: list[_Answer] = []
        try:
            # A lone call runs as it is: an idle poll reads without taking the write lock.
            with _transaction(conn) if len(calls) > 1 else contextlib.nullcontext():
                for call in calls:
                    try:
                        answers.append((call.future, call.fn(conn, *call.args), None))
                    except Exception as exc:
                        answers.append((call.future, None, exc))
        except sqlite3.Error as exc:  # the batch did not commit
            answers = [(call.future, None, exc) for call in calls]
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for call, answer in zip(calls, answers, strict=True):
            by_loop.setdefault(call.loop, []).append(answer)
        for loop, loop_answers in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_answer, loop_answers)


@dataclass(frozen=True, slots=True)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_Answer = tuple[asyncio.Future[Any], Any, Exception | None]


def _answer(answers: list[_Answer]) -> None:
    for future, result, error in answers:
        if future.done():  # the caller was cancelled
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


# --- asyncio side -------------------------------------------------------------------------


class SqliteQueue(WorkQueue):
    def __init__(self, path: Path, *, poll_interval: float = 0.05, lease_timeout: float = 60.0) -> None:
        if lease_timeout <= 0:
            raise ValueError(f"lease_timeout must be positive, got {lease_timeout}")
        self.path = Path(path)
        self.poll_interval = poll_interval
        """How often a waiting consumer looks for messages other processes made ready."""
        self.lease_timeout = lease_timeout
        """A consumer not heard from for that long loses its messages to other consumers."""
        self._conn: _Connection | None = None
        self._start_lock = asyncio.Lock()
        self._consumers: dict[str, set[SqliteConsumer]] = {}

    async def start(self) -> None:
        async with self._start_lock:
            if self._conn is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _Connection(self.path)
            await conn.open()
            try:
                await conn.run(_create_schema)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn

    async def close(self) -> None:
        for consumers in list(self._consumers.values()):
            for consumer in list(consumers):
                await consumer.close()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` on the queue's SQLite thread."""
        if self._conn is None:
            raise RuntimeError("the SQLite work queue is not started")
        return await self._conn.run(fn, *args)

    async def ping(self) -> None:
        await self.run(_ping)

    async def declare(self, spec: QueueSpec) -> None:
        """Create the queue, or set its `max_attempts` when it exists (the last declaration wins)."""
        if spec.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {spec.max_attempts}")
        await self.run(_declare, spec.name, spec.max_attempts)

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish durably; raise `UnknownQueueError` when the queue was never declared."""
        await self.run(_publish, queue, bytes(body), message_id, _encode_headers(headers))
        self.wake(queue)

    def consume(self, queue: str, prefetch: int = 32) -> SqliteConsumer:
        """A consumer that registers (and raises `UnknownQueueError` for an undeclared queue)
        when iteration starts."""
        consumer = SqliteConsumer(self, queue, prefetch)
        self._consumers.setdefault(queue, set()).add(consumer)
        return consumer

    async def depth(self, queue: str) -> int:
        return await self.run(_depth, queue)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return await self.run(_dead_letters, queue, limit)

    async def replay_dead_letters(self, queue: str, message_ids: list[str] | None = None) -> int:
        replayed = await self.run(_replay, queue, message_ids)
        self.wake(queue)
        return replayed

    async def purge_dead_letters(self, queue: str) -> int:
        return await self.run(_purge, queue)

    async def dead_letter_count(self, queue: str) -> int:
        return await self.run(_dead_count, queue)

    async def expire_dead_letters(self, queue: str, dead_before: float) -> int:
        return await self.run(_expire, queue, dead_before)

    def wake(self, queue: str) -> None:
        """Tell this queue's consumers of `queue` that messages may be ready."""
        for consumer in self._consumers.get(queue, ()):
            consumer.wake()

    def forget(self, consumer: SqliteConsumer) -> None:
        consumers = self._consumers.get(consumer.queue)
        if consumers is not None:
            consumers.discard(consumer)
            if not consumers:
                del self._consumers[consumer.queue]


class SqliteDelivery(Delivery):
    def __init__(
        self, consumer: SqliteConsumer, row_id: int, message_id: str, body: bytes, headers: str | None, attempt: int
    ) -> None:
        self.queue = consumer.queue
        self.row_id = row_id
        self.message_id = message_id
        self.body = body
        self.headers = _decode_headers(headers)
        self.attempt = attempt
        self._consumer = consumer
        self._settled = False

    async def ack(self) -> None:
        await self._settle(_ack)

    async def nack(self, error: str, delay: float = 0.0) -> None:
        await self._settle(_nack, error, delay, ready_again=delay <= 0)

    async def reject(self, reason: str) -> None:
        await self._settle(_reject, reason)

    async def _settle(self, fn: Callable[..., bool], *args: Any, ready_again: bool = False) -> None:
        if self._settled:
            raise RuntimeError(f"message {self.message_id!r} was already acked, nacked or rejected")
        await self._consumer.settle(self, fn, *args, ready_again=ready_again)
        self._settled = True


class SqliteConsumer(QueueConsumer):
    """Leases up to `prefetch` messages at a time and hands them out one by one; leases more
    only as deliveries are settled."""

    def __init__(self, owner: SqliteQueue, queue: str, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self._owner = owner
        self.queue = queue
        self.prefetch = prefetch
        self.consumer_id = uuid.uuid4().hex
        self._leased: deque[SqliteDelivery] = deque()
        """Leased, not handed out yet."""
        self._unsettled: set[int] = set()
        """Row ids handed out and not settled yet."""
        self._signal = asyncio.Event()
        """Set when messages may be ready, a delivery was settled or the consumer closed."""
        self._started = False
        self._heartbeats: asyncio.Task[None] | None = None
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        if not self._started and not self._closed:
            self._started = True
            await self._join()
        while not self._closed:
            if self._leased:
                delivery = self._leased.popleft()
                self._unsettled.add(delivery.row_id)
                yield delivery
            else:
                await self._lease_more()

    async def _join(self) -> None:
        await self._owner.run(_heartbeat, self.queue, self.consumer_id, self._owner.lease_timeout)
        if self._closed:  # closed while joining; its `_leave` runs after the join
            return
        self._heartbeats = asyncio.create_task(self._heartbeat_forever(), name=f"queue-heartbeat-{self.consumer_id}")

    async def _lease_more(self) -> None:
        """Lease what the prefetch allows, or wait for a reason to try again."""
        self._signal.clear()
        room = self.prefetch - len(self._unsettled)
        if room <= 0:
            await self._signal.wait()
            return
        rows = await self._owner.run(_take, self.queue, self.consumer_id, room, self._owner.lease_timeout)
        if rows:
            self._leased.extend(SqliteDelivery(self, *row) for row in rows)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), self._owner.poll_interval)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._owner.lease_timeout / 3)
            waiting = {delivery.row_id for delivery in self._leased}
            try:
                held = await self._owner.run(_heartbeat, self.queue, self.consumer_id, self._owner.lease_timeout)
            except sqlite3.Error:
                log.warning("work queue heartbeat failed", exc_info=True)
                continue
            lost = waiting - held
            if lost:
                log.warning(
                    "consumer %s of %s lost %d leases; they go to other consumers",
                    self.consumer_id, self.queue, len(lost),
                )
                self._leased = deque(delivery for delivery in self._leased if delivery.row_id not in lost)

    def wake(self) -> None:
        self._signal.set()

    async def settle(
        self, delivery: SqliteDelivery, fn: Callable[..., bool], *args: Any, ready_again: bool
    ) -> None:
        """Ack, nack or reject `delivery` with `fn(conn, queue, row_id, consumer_id, *args)`, if
        this consumer still holds it. `ready_again`: the message is ready at once afterwards."""
        held = await self._owner.run(fn, self.queue, delivery.row_id, self.consumer_id, *args)
        was_full = len(self._unsettled) >= self.prefetch
        self._unsettled.discard(delivery.row_id)
        if was_full:
            self._signal.set()
        if not held:
            log.warning(
                "message %r of %s was settled after its consumer lost it; it is delivered again",
                delivery.message_id, self.queue,
            )
        elif ready_again:
            self._owner.wake(self.queue)

    async def close(self) -> None:
        """Stop; give back every message held, counting a delivery for those handed out."""
        if self._closed:
            return
        self._closed = True
        self._owner.forget(self)
        self._signal.set()
        if not self._started:
            return
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
        delivered = sorted(self._unsettled)
        self._leased.clear()
        self._unsettled.clear()
        if await self._owner.run(_leave, self.queue, self.consumer_id, delivered):
            self._owner.wake(self.queue)
