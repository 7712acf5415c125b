"""Work queue contract: the embedded SQLite queue and RabbitMQ (when `THREADCAST_TEST_BACKENDS`
names rabbitmq; `THREADCAST_TEST_AMQP_URL` is its URL) behave the same.

Real brokers have coarse delays (the RabbitMQ backend rounds a retry delay up to one of its
fixed delay queues), so the tests use delays of at most a second, wait for conditions with
generous deadlines, and never assert exact timing. Every test declares queues of its own.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.conftest import backend_params
from threadcast.bus.queue import Delivery, QueueConsumer, QueueSpec, WorkQueue
from threadcast.bus.sqlite_queue import SqliteQueue

DEADLINE = 15.0
"""Seconds to wait for something that must happen."""
QUIET = 0.5
"""Seconds to watch for something that must not happen."""
MAX_ATTEMPTS = 3


@pytest.fixture(params=backend_params("rabbitmq"))
async def work_queue(request: pytest.FixtureRequest, data_dir) -> AsyncIterator[WorkQueue]:
    if request.param == "embedded":
        backend: WorkQueue = SqliteQueue(data_dir / "queue.db")
    else:
        from threadcast.bus.rabbit_queue import RabbitQueue

        backend = RabbitQueue(os.environ["THREADCAST_TEST_AMQP_URL"])
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def queue_name(work_queue: WorkQueue) -> str:
    name = f"test-{uuid.uuid4().hex}"
    await work_queue.declare(QueueSpec(name, max_attempts=MAX_ATTEMPTS))
    return name


class Reader:
    """Reads a consumer with deadlines. A wait that times out leaves its read pending (it is
    not cancelled), so the next read gets the delivery that arrives later."""

    def __init__(self, consumer: QueueConsumer) -> None:
        self.consumer = consumer
        self._deliveries = aiter(consumer)
        self._pending: asyncio.Future[Delivery] | None = None

    async def next(self, timeout: float = DEADLINE) -> Delivery:
        delivery = await self._wait(timeout)
        if delivery is None:
            raise AssertionError(f"no delivery within {timeout}s")
        return delivery

    async def take(self, count: int) -> list[Delivery]:
        return [await self.next() for _ in range(count)]

    async def quiet(self, seconds: float = QUIET) -> bool:
        """True when nothing was delivered for `seconds`."""
        return await self._wait(seconds) is None

    async def _wait(self, timeout: float) -> Delivery | None:
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._deliveries))
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return None
        pending, self._pending = self._pending, None
        return pending.result()

    async def close(self) -> None:
        """Close the consumer; a pending read ends (StopAsyncIteration)."""
        await self.consumer.close()
        if self._pending is not None:
            await asyncio.wait({self._pending}, timeout=DEADLINE)
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)


@pytest.fixture
async def open_reader(work_queue: WorkQueue) -> AsyncIterator[Callable[..., Reader]]:
    readers: list[Reader] = []

    def open_(queue: str, prefetch: int = 32) -> Reader:
        reader = Reader(work_queue.consume(queue, prefetch=prefetch))
        readers.append(reader)
        return reader

    yield open_
    for reader in readers:
        await reader.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {DEADLINE}s")
        await asyncio.sleep(0.05)


async def depth_is(work_queue: WorkQueue, queue: str, expected: int) -> None:
    async def check() -> bool:
        return await work_queue.depth(queue) == expected

    await eventually(check, f"depth of {queue} == {expected}")


async def publish_numbered(work_queue: WorkQueue, queue: str, count: int) -> list[str]:
    ids = [f"m{number}" for number in range(count)]
    for message_id in ids:
        await work_queue.publish(queue, message_id.encode(), message_id=message_id)
    return ids


async def test_ping_and_declare_again_keep_the_queue(work_queue, queue_name, open_reader):
    await work_queue.ping()
    await work_queue.publish(queue_name, b"kept", message_id="before")
    await work_queue.declare(QueueSpec(queue_name, max_attempts=MAX_ATTEMPTS))
    [delivery] = await open_reader(queue_name).take(1)
    assert (delivery.message_id, delivery.body) == ("before", b"kept")


async def test_one_consumer_gets_messages_in_publish_order(work_queue, queue_name, open_reader):
    ids = await publish_numbered(work_queue, queue_name, 5)
    deliveries = await open_reader(queue_name).take(5)
    assert [delivery.message_id for delivery in deliveries] == ids
    assert [delivery.body for delivery in deliveries] == [message_id.encode() for message_id in ids]
    assert {delivery.attempt for delivery in deliveries} == {1}
    assert {delivery.queue for delivery in deliveries} == {queue_name}
    for delivery in deliveries:
        await delivery.ack()
    await depth_is(work_queue, queue_name, 0)


async def test_headers_binary_bodies_and_message_ids_round_trip(work_queue, queue_name, open_reader):
    binary = bytes(range(256)) * 4
    headers = {"content-type": "application/x-threadcast", "event-id": "e-1", "note": "ünïcödé ✓"}
    await work_queue.publish(queue_name, binary, message_id="event:42/1", headers=headers)
    await work_queue.publish(queue_name, b"", message_id="empty")
    first, second = await open_reader(queue_name).take(2)
    assert (first.message_id, first.body, dict(first.headers)) == ("event:42/1", binary, headers)
    assert (second.message_id, second.body, dict(second.headers)) == ("empty", b"", {})


async def test_prefetch_bounds_unacked_deliveries(work_queue, queue_name, open_reader):
    await publish_numbered(work_queue, queue_name, 5)
    reader = open_reader(queue_name, prefetch=2)
    first, second = await reader.take(2)
    assert await reader.quiet(), "a third delivery while two were unacked"
    await first.ack()
    third = await reader.next()
    assert third.message_id == "m2"
    assert await reader.quiet(), "a fourth delivery while two were unacked"
    await second.nack("later", delay=0.0)
    await third.ack()
    rest = []
    for _ in range(3):
        delivery = await reader.next()
        rest.append(delivery.message_id)
        await delivery.ack()
    assert sorted(rest) == ["m1", "m3", "m4"]


async def test_competing_consumers_split_the_work_and_each_message_is_acked_once(
    work_queue, queue_name, open_reader
):
    ids = await publish_numbered(work_queue, queue_name, 30)
    readers = [open_reader(queue_name, prefetch=2) for _ in range(2)]
    received: list[list[str]] = [[], []]
    acked: Counter[str] = Counter()
    everyone_started = asyncio.Event()

    async def work(reader: Reader, mine: list[str]) -> None:
        while True:
            delivery = await reader.next()
            mine.append(delivery.message_id)
            if all(received):
                everyone_started.set()
            # Hold each delivery until the other consumer got one too: both must get work.
            await asyncio.wait_for(everyone_started.wait(), DEADLINE)
            await delivery.ack()
            acked[delivery.message_id] += 1

    workers = [asyncio.create_task(work(reader, mine)) for reader, mine in zip(readers, received, strict=True)]

    async def all_acked_or_failed() -> bool:
        return sum(acked.values()) >= len(ids) or any(worker.done() for worker in workers)

    try:
        await eventually(all_acked_or_failed, "every message acked")
    finally:
        for worker in workers:
            worker.cancel()
        failures = [
            result
            for result in await asyncio.gather(*workers, return_exceptions=True)
            if not isinstance(result, asyncio.CancelledError)
        ]
    assert failures == []
    assert all([await reader.quiet() for reader in readers]), "a message was delivered again"
    assert sorted(acked) == sorted(ids) and set(acked.values()) == {1}, acked
    assert all(received), received
    await depth_is(work_queue, queue_name, 0)


async def test_nack_redelivers_later_with_the_next_attempt(work_queue, queue_name, open_reader):
    await work_queue.publish(queue_name, b"flaky", message_id="job", headers={"k": "v"})
    reader = open_reader(queue_name)
    first = await reader.next()
    assert first.attempt == 1
    delay = 0.5
    nacked_at = time.monotonic()
    await first.nack("try again", delay=delay)
    again = await reader.next()
    assert time.monotonic() - nacked_at >= delay / 2, "redelivered without waiting"
    assert (again.message_id, again.body, dict(again.headers), again.attempt) == ("job", b"flaky", {"k": "v"}, 2)
    await again.ack()
    await depth_is(work_queue, queue_name, 0)


async def test_used_up_attempts_dead_letter_the_message_with_its_error(work_queue, queue_name, open_reader):
    before = time.time()
    await work_queue.publish(queue_name, b"poison", message_id="bad", headers={"k": "v"})
    reader = open_reader(queue_name)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        delivery = await reader.next()
        assert delivery.attempt == attempt
        await delivery.nack(f"failure {attempt}")
    assert await reader.quiet(), "delivered again after its last attempt"
    [dead] = await work_queue.dead_letters(queue_name)
    assert (dead.message_id, dead.body, dict(dead.headers)) == ("bad", b"poison", {"k": "v"})
    assert (dead.attempts, dead.error) == (MAX_ATTEMPTS, f"failure {MAX_ATTEMPTS}")
    assert dead.dead_at >= before - 1
    await depth_is(work_queue, queue_name, 0)


async def test_reject_dead_letters_at_once(work_queue, queue_name, open_reader):
    await work_queue.publish(queue_name, b"never", message_id="poison")
    await work_queue.publish(queue_name, b"fine", message_id="good")
    reader = open_reader(queue_name)
    poison, good = await reader.take(2)
    await poison.reject("cannot parse")
    await good.ack()
    [dead] = await work_queue.dead_letters(queue_name)
    assert (dead.message_id, dead.body, dead.attempts, dead.error) == ("poison", b"never", 1, "cannot parse")
    assert await reader.quiet(), "a rejected message was delivered again"


async def test_replayed_dead_letters_come_back_with_a_fresh_attempt_count(work_queue, queue_name, open_reader):
    await work_queue.publish(queue_name, b"a", message_id="a", headers={"h": "1"})
    reader = open_reader(queue_name)
    for _ in range(MAX_ATTEMPTS):
        await (await reader.next()).nack("down")
    for message_id in ("b", "c"):
        await work_queue.publish(queue_name, message_id.encode(), message_id=message_id)
        await (await reader.next()).reject("poison")
    assert [dead.message_id for dead in await work_queue.dead_letters(queue_name)] == ["a", "b", "c"]

    assert await work_queue.replay_dead_letters(queue_name, ["a"]) == 1
    replayed = await reader.next()
    assert (replayed.message_id, replayed.body, dict(replayed.headers), replayed.attempt) == ("a", b"a", {"h": "1"}, 1)
    await replayed.ack()
    assert [dead.message_id for dead in await work_queue.dead_letters(queue_name)] == ["b", "c"]

    assert await work_queue.replay_dead_letters(queue_name) == 2
    rest = await reader.take(2)
    assert sorted(delivery.message_id for delivery in rest) == ["b", "c"]
    assert {delivery.attempt for delivery in rest} == {1}
    assert await work_queue.dead_letters(queue_name) == []


async def test_dead_letters_are_listed_up_to_the_limit_and_purged(work_queue, queue_name, open_reader):
    ids = await publish_numbered(work_queue, queue_name, 3)
    reader = open_reader(queue_name)
    for delivery in await reader.take(3):
        await delivery.reject("poison")
    assert [dead.message_id for dead in await work_queue.dead_letters(queue_name, limit=2)] == ids[:2]
    assert await work_queue.purge_dead_letters(queue_name) == 3
    assert await work_queue.dead_letters(queue_name) == []
    assert await work_queue.purge_dead_letters(queue_name) == 0


async def test_dead_letters_are_counted_and_those_older_than_a_time_expire(work_queue, queue_name, open_reader):
    reader = open_reader(queue_name)
    await work_queue.publish(queue_name, b"old", message_id="old")
    await (await reader.next()).reject("poison")
    [old] = await work_queue.dead_letters(queue_name)
    while time.time() <= old.dead_at:  # the next ones die strictly later
        await asyncio.sleep(0.01)
    for message_id in ("young-1", "young-2"):
        await work_queue.publish(queue_name, message_id.encode(), message_id=message_id)
        await (await reader.next()).reject("poison")
    assert await work_queue.dead_letter_count(queue_name) == 3

    assert await work_queue.expire_dead_letters(queue_name, old.dead_at) == 0
    assert await work_queue.expire_dead_letters(queue_name, old.dead_at + 1e-6) == 1
    assert [dead.message_id for dead in await work_queue.dead_letters(queue_name)] == ["young-1", "young-2"]
    assert await work_queue.dead_letter_count(queue_name) == 2
    assert await work_queue.expire_dead_letters(queue_name, time.time() + 1) == 2
    assert await work_queue.dead_letter_count(queue_name) == 0


async def test_depth_counts_ready_and_delayed_messages_not_those_in_flight(work_queue, queue_name, open_reader):
    await publish_numbered(work_queue, queue_name, 3)
    await depth_is(work_queue, queue_name, 3)
    reader = open_reader(queue_name, prefetch=3)
    first, second, third = await reader.take(3)
    await depth_is(work_queue, queue_name, 0)
    await first.nack("later", delay=1.0)
    assert await work_queue.depth(queue_name) == 1, "a delayed retry is not counted"
    await second.reject("poison")
    await third.ack()
    await (await reader.next()).ack()
    await depth_is(work_queue, queue_name, 0)


async def test_closing_a_consumer_gives_its_unacked_messages_to_another(work_queue, queue_name, open_reader):
    await publish_numbered(work_queue, queue_name, 3)
    leaving = open_reader(queue_name, prefetch=3)
    first, second = await leaving.take(2)  # the third is prefetched but not handed out
    await first.ack()
    await leaving.close()
    staying = open_reader(queue_name)
    given_back = await staying.take(2)
    assert sorted(delivery.message_id for delivery in given_back) == ["m1", "m2"]
    assert {delivery.body for delivery in given_back} == {b"m1", b"m2"}
    for delivery in given_back:
        await delivery.ack()
    assert await staying.quiet(), "an acked message was given back"
    await depth_is(work_queue, queue_name, 0)
