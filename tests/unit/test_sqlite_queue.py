"""The embedded work queue beyond the contract: consumers in other processes that die or hang,
lease renewal, processes competing for one queue, and what a consumer that goes away counts.

Child consumers run this module (`python -m tests.unit.test_sqlite_queue MODE ...`): they print
the id of every message they get, and ack it or hold it.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.contract.test_queue_contract import DEADLINE, Reader, depth_is, eventually, publish_numbered
from threadcast.bus.queue import QueueSpec
from threadcast.bus.queue import UnknownQueueError
from threadcast.bus.sqlite_queue import CONSUMER_GONE, SqliteQueue

ROOT = Path(__file__).resolve().parents[2]
CHILD_MODULE = "tests.unit.test_sqlite_queue"
QUEUE = "jobs"


@pytest.fixture
def db_path(data_dir) -> Path:
    return data_dir / "queue.db"


@pytest.fixture
async def work_queue(db_path) -> AsyncIterator[SqliteQueue]:
    backend = SqliteQueue(db_path)
    await backend.start()
    await backend.declare(QueueSpec(QUEUE, max_attempts=5))
    try:
        yield backend
    finally:
        await backend.close()


class Child:
    """A consumer in another process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def received(self) -> str:
        """The id of the next message the child got."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), DEADLINE)
        if not line:
            raise AssertionError(f"the child consumer exited with {await self.process.wait()}")
        return line.decode().strip()


@asynccontextmanager
async def child_consumer(
    db_path: Path, mode: str, *, prefetch: int, lease_timeout: float = 60.0
) -> AsyncIterator[Child]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", CHILD_MODULE, mode, str(db_path), QUEUE, str(prefetch), str(lease_timeout),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield Child(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_messages_of_a_consumer_killed_in_another_process_go_to_the_next_consumer(work_queue, db_path):
    ids = await publish_numbered(work_queue, QUEUE, 5)
    async with child_consumer(db_path, "hold", prefetch=3) as child:
        assert [await child.received() for _ in range(3)] == ids[:3]
        child.process.send_signal(signal.SIGKILL)
        await child.process.wait()
    reader = Reader(work_queue.consume(QUEUE, prefetch=5))
    try:
        deliveries = await reader.take(5)
    finally:
        await reader.close()
    # Its lease runs for a minute: it is its PID that is gone. What it held counts as a delivery.
    assert [(delivery.message_id, delivery.attempt) for delivery in deliveries] == [
        ("m0", 2), ("m1", 2), ("m2", 2), ("m3", 1), ("m4", 1)
    ]


async def test_messages_of_a_hung_consumer_go_to_the_next_consumer_when_its_lease_expires(work_queue, db_path):
    await work_queue.publish(QUEUE, b"job", message_id="job")
    async with child_consumer(db_path, "hold", prefetch=1, lease_timeout=0.5) as child:
        assert await child.received() == "job"
        child.process.send_signal(signal.SIGSTOP)  # alive, but renews nothing
        reader = Reader(work_queue.consume(QUEUE))
        try:
            delivery = await reader.next()
        finally:
            await reader.close()
    assert (delivery.message_id, delivery.attempt) == ("job", 2)


async def test_lease_renewal_keeps_a_slow_handlers_message(db_path):
    lease_timeout = 1.0
    slow_queue, other_queue = (SqliteQueue(db_path, lease_timeout=lease_timeout) for _ in range(2))
    for backend in (slow_queue, other_queue):
        await backend.start()
    await slow_queue.declare(QueueSpec(QUEUE))
    slow, other = Reader(slow_queue.consume(QUEUE)), Reader(other_queue.consume(QUEUE))
    try:
        await slow_queue.publish(QUEUE, b"slow", message_id="slow")
        delivery = await slow.next()
        assert await other.quiet(2.5 * lease_timeout), "a message in flight was delivered again"
        await delivery.ack()
        await depth_is(other_queue, QUEUE, 0)
        assert await other.quiet(), "an acked message was delivered again"
    finally:
        for reader in (slow, other):
            await reader.close()
        for backend in (slow_queue, other_queue):
            await backend.close()


async def test_consumers_in_two_processes_never_get_the_same_message(work_queue, db_path):
    async with (
        child_consumer(db_path, "ack", prefetch=2) as first,
        child_consumer(db_path, "ack", prefetch=2) as second,
    ):
        await consumers_registered(db_path, 2)
        ids = await publish_numbered(work_queue, QUEUE, 300)
        received: list[list[str]] = [[], []]

        async def read(child: Child, into: list[str]) -> None:
            while True:
                into.append(await child.received())

        readers = [
            asyncio.create_task(read(child, into)) for child, into in zip((first, second), received, strict=True)
        ]

        async def all_received_or_failed() -> bool:
            return sum(map(len, received)) >= len(ids) or any(reader.done() for reader in readers)

        try:
            await eventually(all_received_or_failed, "every message received")
        finally:
            for reader in readers:
                reader.cancel()
            results = await asyncio.gather(*readers, return_exceptions=True)
        assert all(isinstance(result, asyncio.CancelledError) for result in results), results
        await depth_is(work_queue, QUEUE, 0)
    assert sorted(received[0] + received[1]) == sorted(ids), "a message was delivered twice (or lost)"
    assert all(received), "one process got no work: the test did not make them compete"


async def consumers_registered(db_path: Path, count: int) -> None:
    async def registered() -> int:
        def read() -> int:
            with sqlite3.connect(db_path) as conn:
                return conn.execute("SELECT count(*) FROM queue_consumers").fetchone()[0]

        return await asyncio.to_thread(read)

    deadline = asyncio.get_running_loop().time() + DEADLINE
    while await registered() < count:
        assert asyncio.get_running_loop().time() < deadline, f"{count} consumers did not register"
        await asyncio.sleep(0.05)


async def test_closing_counts_a_delivery_only_for_messages_handed_out(work_queue):
    await publish_numbered(work_queue, QUEUE, 3)
    leaving = Reader(work_queue.consume(QUEUE, prefetch=3))
    await leaving.next()  # m0 is handed out; m1 and m2 are leased, waiting to be
    await leaving.close()
    staying = Reader(work_queue.consume(QUEUE, prefetch=3))
    try:
        deliveries = await staying.take(3)
    finally:
        await staying.close()
    assert [(delivery.message_id, delivery.attempt) for delivery in deliveries] == [("m0", 2), ("m1", 1), ("m2", 1)]


async def test_a_message_whose_consumers_keep_going_away_is_dead_lettered(work_queue):
    await work_queue.declare(QueueSpec(QUEUE, max_attempts=2))
    await work_queue.publish(QUEUE, b"crashes its consumers", message_id="poison")
    for attempt in (1, 2):
        reader = Reader(work_queue.consume(QUEUE))
        delivery = await reader.next()
        assert delivery.attempt == attempt
        await reader.close()
    [dead] = await work_queue.dead_letters(QUEUE)
    assert (dead.message_id, dead.attempts, dead.error) == ("poison", 2, CONSUMER_GONE)
    assert await work_queue.depth(QUEUE) == 0


async def test_a_consumer_cannot_settle_a_message_it_gave_back(work_queue):
    await work_queue.publish(QUEUE, b"job", message_id="job")
    leaving = Reader(work_queue.consume(QUEUE))
    stale = await leaving.next()
    await leaving.close()
    staying = Reader(work_queue.consume(QUEUE))
    try:
        current = await staying.next()
        await stale.ack()  # ignored: the message is the staying consumer's now
        await current.nack("again")
        again = await staying.next()
    finally:
        await staying.close()
    assert (again.message_id, again.attempt) == ("job", 3)


async def test_a_failing_call_does_not_fail_the_calls_committed_with_it(work_queue):
    gate = threading.Event()
    # While the queue's thread is held, the publishes queue up and then run as one batch.
    held = asyncio.create_task(work_queue.run(lambda conn: gate.wait(DEADLINE)))
    publishes = [
        asyncio.create_task(work_queue.publish(queue, queue.encode(), message_id=queue))
        for queue in (QUEUE, "nowhere", QUEUE)
    ]
    await asyncio.sleep(0)
    gate.set()
    await held
    first, failed, last = await asyncio.gather(*publishes, return_exceptions=True)
    assert (first, last) == (None, None)
    assert isinstance(failed, UnknownQueueError)
    assert await work_queue.depth(QUEUE) == 2


async def test_undeclared_queues_are_refused(work_queue):
    with pytest.raises(UnknownQueueError):
        await work_queue.publish("nowhere", b"lost", message_id="lost")
    with pytest.raises(UnknownQueueError):
        await work_queue.depth("nowhere")
    consumer = work_queue.consume("nowhere")
    with pytest.raises(UnknownQueueError):
        await anext(aiter(consumer))
    await consumer.close()


async def _child(mode: str, path: str, queue: str, prefetch: str, lease_timeout: str) -> None:
    """Consume `queue`, printing each message id; ack (mode "ack") or hold (mode "hold")."""
    work_queue = SqliteQueue(Path(path), lease_timeout=float(lease_timeout))
    await work_queue.start()
    async for delivery in work_queue.consume(queue, prefetch=int(prefetch)):
        print(delivery.message_id, flush=True)
        if mode == "ack":
            await delivery.ack()


if __name__ == "__main__":
    asyncio.run(_child(*sys.argv[1:]))
