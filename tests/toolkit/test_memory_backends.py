"""The in-memory backends keep the interfaces' promises that the toolkit relies on."""

from __future__ import annotations

import asyncio

import pytest

from threadcast.bus.log import Message
from threadcast.bus.partitioner import partition_for
from threadcast.bus.queue import QueueSpec, UnknownQueueError
from threadcast.toolkit.memory import MemoryEdge, MemoryLog, MemoryQueue


@pytest.fixture
async def queue() -> MemoryQueue:
    work_queue = MemoryQueue()
    await work_queue.declare(QueueSpec("q", max_attempts=2))
    return work_queue


async def test_queue_attempts_grow_on_nack_and_end_in_the_dead_letters(queue):
    await queue.publish("q", b"x", message_id="m", headers={"h": "1"})
    deliveries = aiter(queue.consume("q"))
    first = await anext(deliveries)
    await first.nack("boom")
    second = await anext(deliveries)
    assert (second.attempt, second.headers) == (2, {"h": "1"})
    await second.nack("boom again", delay=5.0)
    [letter] = await queue.dead_letters("q")
    assert (letter.message_id, letter.attempts, letter.error) == ("m", 2, "boom again")
    with pytest.raises(RuntimeError, match="already acked"):
        await second.ack()


async def test_queue_delays_a_nacked_message_and_counts_it_in_the_depth(queue):
    await queue.publish("q", b"x", message_id="m")
    deliveries = aiter(queue.consume("q"))
    await (await anext(deliveries)).nack("later", delay=3600)
    assert await queue.depth("q") == 1
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(deliveries), timeout=0.05)


async def test_queue_hands_out_at_most_prefetch_unacked(queue):
    for n in range(3):
        await queue.publish("q", b"x", message_id=str(n))
    deliveries = aiter(queue.consume("q", prefetch=2))
    held = [await anext(deliveries), await anext(deliveries)]
    waiting = asyncio.ensure_future(anext(deliveries))
    await asyncio.sleep(0)
    assert not waiting.done()
    await held[0].ack()
    assert (await waiting).message_id == "2"


async def test_a_closing_consumer_gives_its_unacked_deliveries_back_without_counting_an_attempt(queue):
    await queue.publish("q", b"x", message_id="m")
    consumer = queue.consume("q")
    delivery = await anext(aiter(consumer))
    await consumer.close()
    with pytest.raises(RuntimeError, match="consumer closed"):
        await delivery.ack()
    again = await anext(aiter(queue.consume("q")))
    assert (again.message_id, again.attempt) == ("m", 1)


async def test_queue_replays_and_purges_dead_letters(queue):
    for name in ("a", "b"):
        await queue.publish("q", name.encode(), message_id=name)
        await (await anext(aiter(queue.consume("q")))).reject("poison")
    assert await queue.replay_dead_letters("q", ["b"]) == 1
    assert (await anext(aiter(queue.consume("q")))).attempt == 1
    assert await queue.purge_dead_letters("q") == 1
    assert await queue.dead_letters("q") == []


async def test_queue_refuses_undeclared_queues():
    with pytest.raises(UnknownQueueError, match="was not declared"):
        await MemoryQueue().publish("nope", b"x", message_id="m")


async def test_log_partitions_by_key_like_kafka_and_keeps_offsets_per_partition():
    log = MemoryLog()
    await log.create_topic("t", 4)
    positions = await log.append("t", [Message(b"1", key="k"), Message(b"2", key="k")])
    partition = partition_for("k", 4)
    assert positions == [(partition, 0), (partition, 1)]
    assert (await log.end_offsets("t"))[partition] == 2


async def test_log_groups_resume_from_their_committed_offsets_and_report_lag():
    log = MemoryLog()
    await log.create_topic("t", 1)
    await log.append("t", [Message(str(n).encode()) for n in range(5)])
    consumer = log.consumer("t", "g")
    assert [r.offset for r in await consumer.poll(max_records=3, timeout=0)] == [0, 1, 2]
    await consumer.commit({0: 2})
    assert await consumer.lag() == {0: 3}
    await consumer.close()

    other_group = log.consumer("t", "h")
    assert len(await other_group.poll(timeout=0)) == 5
    again = log.consumer("t", "g")
    assert [r.offset for r in await again.poll(timeout=0)] == [2, 3, 4]
    await again.seek_to_timestamp(0)
    assert [r.offset for r in await again.poll(timeout=0)] == [0, 1, 2, 3, 4]


async def test_log_members_of_a_group_share_the_partitions():
    log = MemoryLog()
    await log.create_topic("t", 4)
    first, second = log.consumer("t", "g"), log.consumer("t", "g")
    assert first.assignment() | second.assignment() == {0, 1, 2, 3}
    assert not first.assignment() & second.assignment()
    await second.close()
    assert first.assignment() == {0, 1, 2, 3}


async def test_a_poll_waits_for_an_append():
    log = MemoryLog()
    await log.create_topic("t", 1)
    polling = asyncio.ensure_future(log.consumer("t", "g").poll(timeout=10))
    await asyncio.sleep(0)
    await log.append("t", [Message(b"late")])
    assert [r.value for r in await polling] == [b"late"]


async def test_the_edge_keeps_messages_per_channel_and_drops_a_repeated_id():
    edge = MemoryEdge()
    await edge.publish("thread:1", b"a", message_id="e1")
    await edge.publish("thread:1", b"a again", message_id="e1")
    await edge.publish("thread:2", b"b", message_id="e1")
    assert edge.messages("thread:1") == [b"a"]
    assert edge.messages("thread:2") == [b"b"]
