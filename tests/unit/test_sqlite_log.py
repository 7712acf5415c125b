"""What only the embedded log promises on top of the contract: one file shared by several
processes and several `SqliteLog` instances, group members that die, offsets kept on disk."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import defaultdict
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest

from threadcast.bus.log import LogConsumer, Message, Record
from threadcast.bus.log import UnknownTopicError
from threadcast.bus.sqlite_log import SqliteLog

DEADLINE = 30.0
WRITERS = 2
PER_WRITER = 400
spawn = multiprocessing.get_context("spawn")


@pytest.fixture
async def log(data_dir):
    event_log = SqliteLog(data_dir / "log.db")
    await event_log.start()
    yield event_log
    await event_log.close()


async def read(consumer: LogConsumer, count: int) -> list[Record]:
    records: list[Record] = []
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while len(records) < count:
        assert asyncio.get_running_loop().time() < deadline, f"read {len(records)} of {count} records"
        records.extend(await consumer.poll(timeout=0.5))
    return records


def append_from_process(path: str, writer: int, start_together: Barrier) -> None:
    asyncio.run(_append_batches(Path(path), writer, start_together))


async def _append_batches(path: Path, writer: int, start_together: Barrier) -> None:
    """Open the (maybe new) file and create the topic at the same moment as the other writers,
    then append small batches."""
    start_together.wait()
    event_log = SqliteLog(path)
    await event_log.start()
    await event_log.create_topic("shared", 3)
    for first in range(0, PER_WRITER, 4):
        batch = [Message(f"{writer}:{i}".encode(), key=f"key-{i % 5}") for i in range(first, first + 4)]
        await event_log.append("shared", batch)
    await event_log.close()


async def test_processes_opening_and_appending_at_once_get_dense_unique_offsets(data_dir):
    path = data_dir / "shared.db"
    start_together = spawn.Barrier(WRITERS)
    writers = [spawn.Process(target=append_from_process, args=(str(path), n, start_together)) for n in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        await asyncio.to_thread(process.join, DEADLINE)
        assert process.exitcode == 0

    log = SqliteLog(path)
    await log.start()
    try:
        records = await read(log.consumer("shared", "check"), WRITERS * PER_WRITER)
        assert await log.partitions("shared") == 3
        ends = await log.end_offsets("shared")
    finally:
        await log.close()
    offsets: dict[int, list[int]] = defaultdict(list)
    order: dict[tuple[int, str | None], list[int]] = defaultdict(list)
    for record in records:
        offsets[record.partition].append(record.offset)
        writer, seq = map(int, record.value.split(b":"))
        order[writer, record.key].append(seq)
    assert {p: sorted(o) for p, o in offsets.items()} == {p: list(range(len(o))) for p, o in offsets.items()}
    assert sorted(r.value for r in records) == sorted(
        f"{writer}:{i}".encode() for writer in range(WRITERS) for i in range(PER_WRITER)
    )
    assert all(seqs == sorted(seqs) for seqs in order.values())
    assert ends == {p: len(offsets.get(p, [])) for p in range(3)}


def own_then_hang(path: str, topic: str, group: str, ready: Event) -> None:
    asyncio.run(_own_then_hang(Path(path), topic, group, ready))


async def _own_then_hang(path: Path, topic: str, group: str, ready: Event) -> None:
    """Read every record without committing, then stay in the group (heartbeating) until killed."""
    event_log = SqliteLog(path, session_timeout=3.0)
    await event_log.start()
    await read(event_log.consumer(topic, group), 4)
    ready.set()
    await asyncio.sleep(DEADLINE)


async def test_a_killed_member_is_evicted_and_its_records_read_again(log):
    await log.create_topic("jobs", 2)
    placed = await log.append("jobs", [Message(b"%d" % i, key=f"key-{i}") for i in range(4)])
    ready = spawn.Event()
    member = spawn.Process(target=own_then_hang, args=(str(log.path), "jobs", "workers", ready))
    member.start()
    try:
        assert await asyncio.to_thread(ready.wait, DEADLINE)
        survivor = log.consumer("jobs", "workers")
        assert await survivor.poll(timeout=0.2) == []
        assert survivor.assignment() == set(), "a live member keeps its partitions"
    finally:
        member.kill()
        await asyncio.to_thread(member.join, DEADLINE)

    records = await read(survivor, len(placed))
    assert sorted((r.partition, r.offset) for r in records) == sorted(placed)
    assert survivor.assignment() == {0, 1}


async def test_a_closed_member_leaves_at_once(data_dir):
    patient = SqliteLog(data_dir / "log.db", session_timeout=3600)
    await patient.start()
    try:
        await patient.create_topic("events", 2)
        await patient.append("events", [Message(b"%d" % i, key=f"key-{i}") for i in range(6)])
        leaving, staying = patient.consumer("events", "group"), patient.consumer("events", "group")
        assert len(await read(leaving, 6)) == 6
        await leaving.close()
        assert len(await read(staying, 6)) == 6, "nothing was committed, so everything is read again"
        assert staying.assignment() == {0, 1}
    finally:
        await patient.close()


async def test_another_log_instance_on_the_file_sees_appends(log):
    await log.create_topic("events", 2)
    other = SqliteLog(log.path, poll_interval=0.01)
    await other.start()
    try:
        consumer = other.consumer("events", "elsewhere")
        assert await consumer.poll(timeout=0) == []
        assert consumer.assignment() == {0, 1}
        waiting = asyncio.create_task(consumer.poll(timeout=DEADLINE))
        await log.append("events", [Message(b"hello", key="thread-1")])
        assert [r.value for r in await waiting] == [b"hello"]
    finally:
        await other.close()


async def test_records_and_committed_offsets_outlive_the_process(data_dir):
    first = SqliteLog(data_dir / "log.db")
    await first.start()
    await first.create_topic("events", 1)
    await first.append("events", [Message(b"%d" % i) for i in range(3)])
    consumer = first.consumer("events", "group")
    await read(consumer, 2)
    await consumer.commit({0: 2})
    await first.close()

    reopened = SqliteLog(data_dir / "log.db")
    await reopened.start()
    try:
        assert await reopened.partitions("events") == 1
        assert await reopened.end_offsets("events") == {0: 3}
        assert await reopened.committed("events", "group") == {0: 2}
        assert [r.offset for r in await read(reopened.consumer("events", "group"), 1)] == [2]
    finally:
        await reopened.close()


async def test_a_member_cannot_commit_a_partition_another_live_member_owns(log):
    await log.create_topic("events", 1)
    await log.append("events", [Message(b"a"), Message(b"b")])
    owner, other = log.consumer("events", "group"), log.consumer("events", "group")
    await read(owner, 2)
    await other.commit({0: 99})
    assert await log.committed("events", "group") == {0: 0}
    await owner.commit()
    assert await log.committed("events", "group") == {0: 2}


async def test_a_consumer_waits_for_its_topic_to_be_created(log):
    consumer = log.consumer("later", "group")
    assert await consumer.poll(timeout=0) == []
    assert consumer.assignment() == set()
    await log.create_topic("later", 2)
    await log.append("later", [Message(b"first", key="k")])
    assert [r.value for r in await read(consumer, 1)] == [b"first"]


async def test_unknown_topics_are_reported(log):
    with pytest.raises(UnknownTopicError):
        await log.partitions("missing")
    with pytest.raises(UnknownTopicError):
        await log.append("missing", [Message(b"x")])


async def test_seek_needs_an_assigned_partition(log):
    await log.create_topic("events", 1)
    consumer = log.consumer("events", "group")
    with pytest.raises(ValueError):
        await consumer.seek(0, 0)
