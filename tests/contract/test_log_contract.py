"""The contract of every event log backend: the embedded SQLite log always, Kafka when
THREADCAST_TEST_BACKENDS names it (THREADCAST_TEST_KAFKA_URL says where the broker is).

Every test uses its own topic and group, so the suite can run on a shared broker. Waits poll in
a loop until a condition holds, failing at a generous deadline: Kafka group joins take seconds.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from tests.conftest import backend_params
from threadcast.bus.log import EventLog, LogConsumer, Message, Record
from threadcast.bus.partitioner import partition_for
from threadcast.bus.sqlite_log import SqliteLog

DEADLINE = 30.0
"""Seconds a test waits for a condition before it fails."""


@pytest.fixture(params=backend_params("kafka"))
async def log(request, data_dir) -> AsyncIterator[EventLog]:
    if request.param == "kafka":
        from threadcast.bus.kafka_log import KafkaLog

        event_log: EventLog = KafkaLog(os.environ["THREADCAST_TEST_KAFKA_URL"])
    else:
        event_log = SqliteLog(data_dir / "log.db")
    await event_log.start()
    yield event_log
    await event_log.close()


class Consumers:
    """Makes the consumers of a test and closes the ones the test left open."""

    def __init__(self, event_log: EventLog) -> None:
        self._log = event_log
        self._open: list[LogConsumer] = []

    def new(self, topic: str, group: str) -> LogConsumer:
        consumer = self._log.consumer(topic, group)
        self._open.append(consumer)
        return consumer

    async def close(self, consumer: LogConsumer) -> None:
        self._open.remove(consumer)
        await consumer.close()

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])


@pytest.fixture
async def consumers(log) -> AsyncIterator[Consumers]:
    made = Consumers(log)
    yield made
    await made.close_all()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def new_topic(event_log: EventLog, partitions: int) -> str:
    topic = unique("contract")
    await event_log.create_topic(topic, partitions)
    return topic


def deadline_passed(deadline: float) -> bool:
    return asyncio.get_running_loop().time() > deadline


def deadline_in(seconds: float = DEADLINE) -> float:
    return asyncio.get_running_loop().time() + seconds


async def read(consumer: LogConsumer, count: int, *, commit: bool = False) -> list[Record]:
    """Poll until at least `count` records came, committing after each batch when asked."""
    records: list[Record] = []
    deadline = deadline_in()
    while len(records) < count:
        assert not deadline_passed(deadline), f"read {len(records)} of {count} records before the deadline"
        batch = await consumer.poll(timeout=0.5)
        records.extend(batch)
        if commit and batch:
            await consumer.commit()
    return records


async def poll_until(members: Sequence[LogConsumer], condition: Callable[[], bool]) -> None:
    """Keep every member polling (that is how they take part in their group) until `condition`."""
    deadline = deadline_in()
    while not condition():
        assert not deadline_passed(deadline), "the condition did not hold before the deadline"
        batches = await asyncio.gather(*(member.poll(timeout=0.2) for member in members))
        assert not any(batches), "nothing was appended yet"


def per_partition(records: Sequence[Record]) -> dict[int, list[int]]:
    offsets: dict[int, list[int]] = defaultdict(list)
    for record in records:
        offsets[record.partition].append(record.offset)
    return dict(offsets)


async def test_create_topic_is_idempotent_and_keeps_the_partition_count(log):
    topic = unique("contract")
    await log.create_topic(topic, 3)
    await log.create_topic(topic, 5)
    assert await log.partitions(topic) == 3


async def test_append_returns_dense_increasing_offsets_per_partition(log):
    topic = await new_topic(log, 3)
    placed = await log.append(topic, [Message(b"%d" % i, key=f"key-{i}") for i in range(30)])
    placed += await log.append(topic, [Message(b"%d" % i, key=f"key-{i}") for i in range(30, 60)])
    offsets: dict[int, list[int]] = defaultdict(list)
    for partition, offset in placed:
        offsets[partition].append(offset)
    assert set(offsets) <= {0, 1, 2}
    for partition_offsets in offsets.values():
        assert partition_offsets == list(range(len(partition_offsets)))
    assert await log.end_offsets(topic) == {p: len(offsets.get(p, [])) for p in range(3)}


async def test_one_key_keeps_its_partition_and_its_order(log, consumers):
    topic = await new_topic(log, 4)
    keys = [f"thread-{n}" for n in range(8)]
    messages = [Message(f"{key}:{seq}".encode(), key=key) for seq in range(5) for key in keys]
    placed = await log.append(topic, messages)
    assert [partition for partition, _ in placed] == [partition_for(m.key, 4) for m in messages]

    records = await read(consumers.new(topic, unique("group")), len(messages))
    sequences: dict[str | None, list[int]] = defaultdict(list)
    for record in records:
        assert record.partition == partition_for(record.key, 4)
        sequences[record.key].append(int(record.value.split(b":")[1]))
    assert sequences == {key: [0, 1, 2, 3, 4] for key in keys}


async def test_a_new_group_starts_at_the_earliest_record(log, consumers):
    topic = await new_topic(log, 1)
    await log.append(topic, [Message(b"a"), Message(b"b"), Message(b"c")])
    records = await read(consumers.new(topic, unique("group")), 3)
    assert [(r.topic, r.partition, r.offset, r.value) for r in records] == [
        (topic, 0, 0, b"a"),
        (topic, 0, 1, b"b"),
        (topic, 0, 2, b"c"),
    ]


async def test_a_waiting_poll_returns_a_record_appended_meanwhile(log, consumers):
    topic = await new_topic(log, 1)
    consumer = consumers.new(topic, unique("group"))
    await poll_until([consumer], lambda: consumer.assignment() == {0})
    waiting = asyncio.create_task(consumer.poll(timeout=DEADLINE))
    await log.append(topic, [Message(b"late")])
    assert [r.value for r in await waiting] == [b"late"]


async def test_a_new_member_resumes_after_the_committed_offsets(log, consumers):
    topic, group = await new_topic(log, 2), unique("group")
    await log.append(topic, [Message(b"old-%d" % i, key=f"key-{i}") for i in range(6)])
    first = consumers.new(topic, group)
    assert len(await read(first, 6)) == 6
    await first.commit()
    assert await log.committed(topic, group) == await log.end_offsets(topic)
    await consumers.close(first)

    fresh = [Message(b"new-%d" % i, key=f"key-{i}") for i in range(4)]
    await log.append(topic, fresh)
    records = await read(consumers.new(topic, group), 4)
    assert sorted(r.value for r in records) == sorted(m.value for m in fresh)


async def test_uncommitted_records_are_read_again_by_the_next_member(log, consumers):
    topic, group = await new_topic(log, 1), unique("group")
    await log.append(topic, [Message(b"%d" % i) for i in range(5)])
    first = consumers.new(topic, group)
    assert [r.offset for r in await read(first, 5)] == [0, 1, 2, 3, 4]
    await first.commit({0: 2})
    await consumers.close(first)

    again = await read(consumers.new(topic, group), 3)
    assert [r.offset for r in again] == [2, 3, 4]


async def test_groups_read_independently(log, consumers):
    topic = await new_topic(log, 1)
    group_a, group_b = unique("group"), unique("group")
    await log.append(topic, [Message(b"%d" % i) for i in range(3)])
    await read(consumers.new(topic, group_a), 3, commit=True)
    assert await log.committed(topic, group_a) == {0: 3}
    assert await log.committed(topic, group_b) == {0: 0}
    assert [r.offset for r in await read(consumers.new(topic, group_b), 3)] == [0, 1, 2]


async def test_seek_replays_a_partition(log, consumers):
    topic = await new_topic(log, 1)
    await log.append(topic, [Message(b"%d" % i) for i in range(5)])
    consumer = consumers.new(topic, unique("group"))
    await read(consumer, 5)
    await consumer.seek(0, 1)
    assert [(r.offset, r.value) for r in await read(consumer, 4)] == [(i, b"%d" % i) for i in range(1, 5)]


async def test_seek_to_timestamp_finds_the_first_record_at_or_after_it(log, consumers):
    topic = await new_topic(log, 1)
    for i in range(6):
        await log.append(topic, [Message(b"%d" % i)])
    consumer = consumers.new(topic, unique("group"))
    records = await read(consumer, 6)
    pivot = records[3].timestamp
    first = next(r.offset for r in records if r.timestamp >= pivot)

    await consumer.seek_to_timestamp(pivot)
    assert [r.offset for r in await read(consumer, 6 - first)] == list(range(first, 6))

    await consumer.seek_to_timestamp(records[-1].timestamp + 3600)
    await log.append(topic, [Message(b"after")])
    assert [r.value for r in await read(consumer, 1)] == [b"after"]


async def test_end_offsets_committed_offsets_and_lag(log, consumers):
    topic, group = await new_topic(log, 2), unique("group")
    assert await log.end_offsets(topic) == {0: 0, 1: 0}
    assert await log.committed(topic, group) == {0: 0, 1: 0}

    placed = await log.append(topic, [Message(b"x", key=f"key-{i}") for i in range(10)])
    counts = Counter(partition for partition, _ in placed)
    ends = {0: counts[0], 1: counts[1]}
    assert await log.end_offsets(topic) == ends

    consumer = consumers.new(topic, group)
    await read(consumer, 10)
    assert consumer.assignment() == {0, 1}
    assert await consumer.lag() == ends
    await consumer.commit()
    assert await log.committed(topic, group) == ends
    assert await consumer.lag() == {0: 0, 1: 0}


async def test_members_of_a_group_split_the_partitions_then_take_over(log, consumers):
    topic, group = await new_topic(log, 4), unique("group")
    a, b = consumers.new(topic, group), consumers.new(topic, group)

    def split() -> bool:
        mine, theirs = a.assignment(), b.assignment()
        return bool(mine) and bool(theirs) and not mine & theirs and mine | theirs == {0, 1, 2, 3}

    await poll_until([a, b], split)
    first = [Message(b"first-%d" % i, key=f"key-{i}") for i in range(40)]
    await log.append(topic, first)
    seen: dict[LogConsumer, list[Record]] = {a: [], b: []}
    deadline = deadline_in()
    while len(seen[a]) + len(seen[b]) < len(first):
        assert not deadline_passed(deadline), "the group did not read every record before the deadline"
        for member, batch in zip((a, b), await asyncio.gather(a.poll(timeout=0.2), b.poll(timeout=0.2))):
            seen[member].extend(batch)
            if batch:
                await member.commit()
    for member, records in seen.items():
        assert {r.partition for r in records} <= member.assignment()
    assert sorted(r.value for r in seen[a] + seen[b]) == sorted(m.value for m in first)

    await consumers.close(b)
    second = [Message(b"second-%d" % i, key=f"key-{i}") for i in range(20)]
    await log.append(topic, second)
    records = await read(a, len(second), commit=True)
    assert sorted(r.value for r in records) == sorted(m.value for m in second)
    assert a.assignment() == {0, 1, 2, 3}


async def test_keys_headers_and_binary_values_round_trip(log, consumers):
    topic = await new_topic(log, 2)
    messages = [
        Message(bytes(range(256)), key=None, headers={"event_id": "e-1", "kind": "post.created"}),
        Message(b"", key="empty value"),
        Message(b"\x00\xff\x00", key="clé ключ", headers={"note": "ünïcode"}),
    ]
    await log.append(topic, messages)
    records = await read(consumers.new(topic, unique("group")), 3)

    def shape(key: str | None, value: bytes, headers) -> tuple:
        return (key or "", value, sorted(dict(headers).items()))

    assert sorted(shape(r.key, r.value, r.headers) for r in records) == sorted(
        shape(m.key, m.value, m.headers) for m in messages
    )
    assert any(r.key is None for r in records)
