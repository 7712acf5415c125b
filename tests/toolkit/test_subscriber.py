"""Event-log subscribers: consume-process-produce, in-place retries, the retry queue,
undecodable records, batches, order per partition."""

from __future__ import annotations

import asyncio
import random

from tests.toolkit.helpers import Gate, Job, wait_until
from threadcast.bus.queue import QueueSpec
from threadcast.toolkit import Backends, Context, MemoryInbox, Service, TestKit
from threadcast.toolkit.memory import MemoryEdge, MemoryLog, MemoryQueue


async def one_partition_backends(topic: str = "events") -> Backends:
    event_log = MemoryLog()
    await event_log.create_topic(topic, 1)
    return Backends(log=event_log, queue=MemoryQueue(), edge=MemoryEdge(), inbox=MemoryInbox())


async def test_offsets_are_committed_only_after_the_output_is_produced():
    svc = Service("relay")
    gate = Gate()

    @svc.subscriber(topic="events", group="g", model=Job)
    async def forward(job: Job, ctx: Context) -> None:
        await gate.pass_through()
        await ctx.publish("out", job)

    async with TestKit(svc, backends=await one_partition_backends()) as kit:
        await kit.queue.declare(QueueSpec("out"))
        await kit.append_to_log("events", Job("a"))
        await wait_until(lambda: gate.entered == 1, "the handler to start")
        assert await kit.log.committed("events", "g") == {0: 0}
        assert await kit.queue.depth("out") == 0

        gate.open()
        await kit.drain()
        assert await kit.queue.depth("out") == 1
        assert await kit.log.committed("events", "g") == {0: 1}


async def test_a_failing_record_is_retried_in_place_then_parked_so_the_partition_moves_on():
    svc = Service("notifier")
    broken = {"poison"}
    attempts: list[tuple[str, int]] = []

    @svc.subscriber(topic="events", group="g", model=Job, max_attempts=3)
    async def notify(job: Job, ctx: Context) -> None:
        attempts.append((job.id, ctx.attempt))
        if job.id in broken:
            raise ValueError(f"cannot notify about {job.id}")

    async with TestKit(svc, backends=await one_partition_backends()) as kit:
        await kit.append_to_log("events", Job("poison"), headers={"event_id": "e-poison"})
        await kit.append_to_log("events", Job("next"))
        await kit.drain()

        # in place: 3 attempts; in the retry queue: 3 more, then the dead-letter queue
        assert [a for a in attempts if a[0] == "poison"] == [("poison", n) for n in (1, 2, 3, 1, 2, 3)]
        assert ("next", 1) in attempts
        assert await kit.log.committed("events", "g") == {0: 2}
        [letter] = await kit.queue.dead_letters("events.g.retry")
        assert (letter.attempts, letter.error) == (3, "ValueError: cannot notify about poison")
        assert letter.headers["x-parked-from"] == "events/0/0"
        assert letter.headers["x-parked-error"] == "ValueError: cannot notify about poison"
        assert letter.headers["event_id"] == "e-poison"

        in_place = {"service": "notifier", "handler": "notify"}
        retried = {"service": "notifier", "handler": "notify.retry"}
        assert kit.metric("threadcast_retries_total", **in_place) == 2
        assert kit.metric("threadcast_parked_total", **in_place) == 1
        assert kit.metric("threadcast_retries_total", **retried) == 2
        assert kit.metric("threadcast_dead_letters_total", **retried, reason="failed") == 1

        broken.clear()  # fixed: replaying the dead letter runs the handler again
        assert await kit.queue.replay_dead_letters("events.g.retry") == 1
        await kit.drain()
        assert attempts[-1] == ("poison", 1)
        assert await kit.queue.dead_letters("events.g.retry") == []
        assert await kit.inbox.seen("notifier.notify", "e-poison")


async def test_an_undecodable_record_is_dead_lettered_with_the_reason_and_never_handled():
    svc = Service("typed")
    handled: list[Job] = []

    @svc.subscriber(topic="events", group="g", model=Job)
    async def take(job: Job) -> None:
        handled.append(job)

    async with TestKit(svc, backends=await one_partition_backends()) as kit:
        await kit.append_to_log("events", b"\x00 binary junk")
        await kit.append_to_log("events", Job("after"))
        await kit.drain()

        assert handled == [Job("after")]
        [letter] = await kit.queue.dead_letters("events.g.retry")
        assert letter.error.startswith("undecodable as Job: JSON is malformed")
        assert letter.attempts == 1
        assert letter.headers["x-parked-from"] == "events/0/0"
        retried = {"service": "typed", "handler": "take.retry"}
        assert kit.metric("threadcast_dead_letters_total", **retried, reason="undecodable") == 1


async def test_a_record_appended_twice_is_handled_once():
    svc = Service("dedup")
    handled: list[str] = []

    @svc.subscriber(topic="events", group="g", model=Job)
    async def take(job: Job) -> None:
        handled.append(job.id)

    async with TestKit(svc) as kit:
        for _ in range(2):  # the outbox relay may append an event again after a crash
            await kit.append_to_log("events", Job("a"), key="1", headers={"event_id": "evt-a"})
        await kit.drain()
    assert handled == ["a"]


async def test_records_of_a_partition_are_handled_in_order_by_default():
    svc = Service("sequential")
    seen: list[int] = []
    shuffle = random.Random(5)

    @svc.subscriber(topic="events", group="g", model=Job, prefetch=8)
    async def take(job: Job) -> None:
        for _ in range(shuffle.randint(20, 100)):  # long enough to overlap with the next records
            await asyncio.sleep(0)
        seen.append(int(job.id))

    async with TestKit(svc) as kit:
        for n in range(60):
            await kit.append_to_log("events", Job(str(n)), key="one-thread")
        await kit.drain()
    assert seen == list(range(60))


async def test_a_batch_subscriber_gets_consecutive_records_per_partition_minus_duplicates():
    svc = Service("batcher")
    batches: list[list[str]] = []

    @svc.subscriber(topic="events", group="g", model=Job, batch=3)
    async def take(jobs: list[Job], ctx: Context) -> None:
        assert ctx.event_id is None
        batches.append([job.id for job in jobs])

    async with TestKit(svc, backends=await one_partition_backends()) as kit:
        await kit.inbox.record("batcher.take", "evt-1")  # handled before
        for n in range(7):
            await kit.append_to_log("events", Job(str(n)), headers={"event_id": f"evt-{n}"})
        await kit.drain()
        assert [job for batch in batches for job in batch] == ["0", "2", "3", "4", "5", "6"]
        assert all(len(batch) <= 3 for batch in batches)
        assert await kit.log.committed("events", "g") == {0: 7}


async def test_a_failing_batch_is_parked_record_by_record_and_retried_one_by_one():
    svc = Service("batcher")
    calls: list[list[str]] = []

    @svc.subscriber(topic="events", group="g", model=Job, batch=10, max_attempts=2)
    async def take(jobs: list[Job]) -> None:
        calls.append([job.id for job in jobs])
        if len(jobs) > 1:
            raise RuntimeError("this sink takes one at a time")

    async with TestKit(svc, backends=await one_partition_backends()) as kit:
        for n in range(3):
            await kit.append_to_log("events", Job(str(n)))
        await kit.drain()
        assert calls[:2] == [["0", "1", "2"], ["0", "1", "2"]]
        assert sorted(calls[2:]) == [["0"], ["1"], ["2"]]
        assert await kit.queue.dead_letters("events.g.retry") == []
