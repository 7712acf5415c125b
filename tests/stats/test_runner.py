"""The embedded runner: acking, offset commits, replays, timeouts, groupings and ticks, on the
embedded SQLite log and on Kafka (when THREADCAST_TEST_BACKENDS names it), with small bolts that
let the test ack and fail by hand."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import backend_params
from tests.stats.streams import key_for
from tests.toolkit.helpers import wait_until
from threadcast.bus.log import EventLog, LogConsumer, Message
from threadcast.bus.sqlite_log import SqliteLog
from threadcast.stats import spout
from threadcast.stats.runner import EmbeddedRunner
from threadcast.stats.spout import LogSpoutSpec
from threadcast.stats.topology import Bolt, Collector, Topology, TopologyContext, Tuple

GROUP = "counting"


class Holding(Bolt):
    """Keeps every tuple it gets (with its collector) in the shared list `resources["held"]`;
    the test acks or fails them."""

    def prepare(self, conf: Mapping[str, Any], context: TopologyContext, collector: Collector) -> None:
        super().prepare(conf, context, collector)
        self.held: list[tuple[Tuple, Collector, tuple[str, int]]] = context.resources["held"]

    def process(self, tup: Tuple) -> None:
        self.held.append((tup, self.collector, (self.context.component, self.context.task_index)))


class Forward(Bolt):
    """Emits `(key, offset)` anchored to its input, then acks it."""

    outputs = {"default": ("key", "offset")}

    def process(self, tup: Tuple) -> None:
        self.collector.emit([tup["key"], tup["offset"]], anchors=[tup])
        self.collector.ack(tup)


class Exploding(Bolt):
    """Raises on the first sight of offset 1, acks everything else (and offset 1 the next time)."""

    def prepare(self, conf: Mapping[str, Any], context: TopologyContext, collector: Collector) -> None:
        super().prepare(conf, context, collector)
        self.seen: list[int] = context.resources["seen"]

    def process(self, tup: Tuple) -> None:
        self.seen.append(tup["offset"])
        if tup["offset"] == 1 and self.seen.count(1) == 1:
            raise RuntimeError("boom")
        self.collector.ack(tup)


class Ticking(Bolt):
    def prepare(self, conf: Mapping[str, Any], context: TopologyContext, collector: Collector) -> None:
        super().prepare(conf, context, collector)
        self.ticks: list[float] = context.resources["ticks"]

    def process(self, tup: Tuple) -> None:
        self.collector.ack(tup)

    def tick(self, now: float) -> None:
        self.ticks.append(now)


@dataclass(frozen=True)
class Numbers:
    """Six records in a one-partition topic of a log (a new topic each time, for Kafka)."""

    log: EventLog
    topic: str


@pytest.fixture(params=backend_params("kafka"))
async def event_log(request, tmp_path: Path) -> AsyncIterator[EventLog]:
    if request.param == "kafka":
        from threadcast.bus.kafka_log import KafkaLog

        log: EventLog = KafkaLog(os.environ["THREADCAST_TEST_KAFKA_URL"])
    else:
        log = SqliteLog(tmp_path / "log.db", poll_interval=0.01)
    await log.start()
    yield log
    await log.close()


async def new_topic(log: EventLog, partitions: int, messages: list[Message]) -> str:
    """A topic of its own (for Kafka) holding `messages`."""
    topic = f"numbers-{uuid.uuid4().hex[:8]}"
    await log.create_topic(topic, partitions)
    await log.append(topic, messages)
    return topic


def on_each_partition(value: bytes, partitions: int = 2) -> list[Message]:
    return [Message(value, key=key_for(partition, partitions)) for partition in range(partitions)]


@pytest.fixture
async def numbers(event_log: EventLog) -> Numbers:
    messages = [Message(f"v{n}".encode(), key=f"k{n % 3}") for n in range(6)]
    return Numbers(event_log, await new_topic(event_log, 1, messages))


@pytest.fixture
async def two_partitions(event_log: EventLog) -> Numbers:
    """Three records in each of the two partitions of a topic."""
    messages = [Message(f"v{n}".encode(), key=key_for(n % 2, 2)) for n in range(6)]
    return Numbers(event_log, await new_topic(event_log, 2, messages))


def topology(numbers: Numbers, **options: Any) -> Topology:
    built = Topology("test", **options)
    built.spout("log", LogSpoutSpec((numbers.topic,), GROUP, commit_interval=0.02))
    return built


@contextlib.asynccontextmanager
async def running(built: Topology, log: EventLog, resources: Mapping[str, Any]) -> AsyncIterator[EmbeddedRunner]:
    """The topology running on the embedded runner over `log`, stopped at the end."""
    runner = EmbeddedRunner(built, log, resources=resources)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


async def committed(numbers: Numbers) -> int:
    return (await numbers.log.committed(numbers.topic, GROUP))[0]


async def wait_committed(numbers: Numbers, offset: int) -> None:
    for _ in range(1500):
        if await committed(numbers) == offset:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"committed {await committed(numbers)}, expected {offset}")


def by_offset(held: list, offset: int) -> tuple[Tuple, Collector, Any]:
    return next(entry for entry in reversed(held) if entry[0]["offset"] == offset)


async def test_only_the_contiguous_acked_prefix_is_committed(numbers):
    held: list = []
    built = topology(numbers)
    built.bolt("hold", Holding).shuffle("log")
    async with running(built, numbers.log, {"held": held}):
        await wait_until(lambda: len(held) == 6, "every record held")
        for offset in (2, 3, 5):
            tup, collector, _ = by_offset(held, offset)
            collector.ack(tup)
        await asyncio.sleep(0.1)
        assert await committed(numbers) == 0
        tup, collector, _ = by_offset(held, 0)
        collector.ack(tup)
        await wait_committed(numbers, 1)
        tup, collector, _ = by_offset(held, 1)
        collector.ack(tup)
        await wait_committed(numbers, 4)
    assert await committed(numbers) == 4  # 4 was never acked: read again after a restart


async def test_a_tree_is_done_only_when_every_descendant_is_acked(numbers):
    held: list = []
    built = topology(numbers)
    built.bolt("forward", Forward, parallelism=2).shuffle("log")
    built.bolt("hold", Holding).global_("forward")
    async with running(built, numbers.log, {"held": held}) as runner:
        await wait_until(lambda: len(held) == 6, "every record forwarded")
        await asyncio.sleep(0.1)
        assert await committed(numbers) == 0 and runner.pending() == 6
        for tup, collector, _ in held:
            collector.ack(tup)
        await wait_committed(numbers, 6)
        assert runner.pending() == 0


async def test_a_failed_tuple_is_emitted_again_and_the_second_ack_commits(numbers):
    held: list = []
    built = topology(numbers)
    built.bolt("hold", Holding).shuffle("log")
    async with running(built, numbers.log, {"held": held}):
        await wait_until(lambda: len(held) == 6, "every record held")
        for tup, collector, _ in list(held):
            (collector.fail if tup["offset"] == 1 else collector.ack)(tup)
        await wait_committed(numbers, 1)
        await wait_until(lambda: len(held) == 7, "offset 1 emitted again")
        again, collector, _ = held[-1]
        assert again["offset"] == 1 and again["value"] == "v1" and again.id != by_offset(held[:6], 1)[0].id
        collector.ack(again)
        await wait_committed(numbers, 6)


async def test_a_tuple_not_done_within_the_message_timeout_is_replayed(numbers):
    held: list = []
    built = topology(numbers, message_timeout=0.3)
    built.bolt("hold", Holding).shuffle("log")
    async with running(built, numbers.log, {"held": held}):
        await wait_until(lambda: len(held) == 6, "every record held")
        first = list(held)
        for tup, collector, _ in first:
            if tup["offset"] != 4:
                collector.ack(tup)
        await wait_until(lambda: len(held) == 7, "offset 4 replayed after the timeout")
        assert held[-1][0]["offset"] == 4
        late, collector, _ = by_offset(first, 4)
        collector.ack(late)  # the timed-out copy: ignored
        await asyncio.sleep(0.1)
        assert await committed(numbers) == 4
        replay, collector, _ = held[-1]
        collector.ack(replay)
        await wait_committed(numbers, 6)


async def test_a_bolt_that_raises_fails_its_tuple_which_is_replayed(numbers):
    seen: list[int] = []
    built = topology(numbers)
    built.bolt("explode", Exploding).shuffle("log")
    async with running(built, numbers.log, {"seen": seen}) as runner:
        await wait_committed(numbers, 6)
        assert sorted(seen) == [0, 1, 1, 2, 3, 4, 5]
        assert runner.failure is None


async def test_max_spout_pending_caps_the_tuples_in_flight(numbers):
    held: list = []
    built = topology(numbers, max_spout_pending=4)
    built.bolt("hold", Holding).shuffle("log")
    async with running(built, numbers.log, {"held": held}):
        await wait_until(lambda: len(held) == 4, "four held")
        await asyncio.sleep(0.1)
        assert len(held) == 4
        tup, collector, _ = held[0]
        collector.ack(tup)
        await wait_until(lambda: len(held) == 5, "one more after an ack")


async def test_fields_grouping_sends_one_key_to_one_task_and_all_grouping_to_every_task(numbers):
    held: list = []
    built = topology(numbers)
    built.bolt("keyed", Holding, parallelism=3).fields("log", "key")
    built.bolt("every", Holding, parallelism=2).all_("log")
    async with running(built, numbers.log, {"held": held}):
        await wait_until(lambda: len(held) == 6 + 2 * 6, "every tuple delivered")
    keyed = [(tup["key"], where) for tup, _collector, where in held if where[0] == "keyed"]
    assert len(keyed) == 6
    assert all(len({w for k, w in keyed if k == key}) == 1 for key, _ in keyed)
    every = [(tup["offset"], where) for tup, _collector, where in held if where[0] == "every"]
    assert sorted(every) == sorted((offset, ("every", task)) for offset in range(6) for task in (0, 1))


async def test_ticks_reach_a_bolt_at_its_interval(numbers):
    ticks: list[float] = []
    built = topology(numbers)
    built.bolt("tick", Ticking, tick=0.05).shuffle("log")
    async with running(built, numbers.log, {"ticks": ticks}):
        await wait_until(lambda: len(ticks) >= 3, "three ticks")


async def test_records_read_again_after_a_group_rebalance_are_not_emitted_twice(two_partitions):
    """Another member joins the spout's group and leaves: the spout's consumer gets partitions
    back at the committed offsets (on Kafka, every join also puts each member back there), so
    it reads the records in flight again. They are not emitted again: each record has one
    tuple in flight, and acking them all commits everything."""
    numbers, held = two_partitions, []
    built = topology(numbers)
    built.bolt("hold", Holding).shuffle("log")
    async with running(built, numbers.log, {"held": held}) as runner:
        await wait_until(lambda: len(held) == 6, "every record held")
        other = numbers.log.consumer(numbers.topic, GROUP)
        try:
            for _ in range(600):  # until the group gave it a partition
                await other.poll(max_records=1, timeout=0.05)
                if other.assignment():
                    break
            assert other.assignment(), "the other member got no partition"
        finally:
            await other.close()
        # Records appended now come after the ones read again, in each partition.
        await numbers.log.append(numbers.topic, on_each_partition(b"new"))
        await wait_until(lambda: [tup["value"] for tup, _, _ in held].count("new") == 2, "the records appended last")
        emitted = sorted((tup["partition"], tup["offset"]) for tup, _, _ in held)
        assert emitted == [(p, o) for p in (0, 1) for o in range(4)]
        for tup, collector, _ in held:
            collector.ack(tup)
        await wait_until(lambda: runner.pending() == 0, "every tuple done")
    assert await numbers.log.committed(numbers.topic, GROUP) == {0: 4, 1: 4}


async def test_a_spout_reading_from_a_time_starts_every_topic_there(event_log):
    """A bounded spout reading two topics from a time (a rebuild): every topic starts at that
    time. On Kafka the topics' consumers join their group together before seeking: the second
    one joining would otherwise wait for the first to join again (minutes, while nothing polls
    it), and put it back to the committed offsets, undoing its seek."""
    topics = tuple([await new_topic(event_log, 2, on_each_partition(b"old")) for _ in range(2)])
    await asyncio.sleep(0.05)
    since = time.time()
    await asyncio.sleep(0.05)
    for topic in topics:
        await event_log.append(topic, on_each_partition(b"new"))
    held: list = []
    built = Topology("test")
    built.spout("log", LogSpoutSpec(topics, GROUP, start_at=since, stop_at_end=True))
    built.bolt("hold", Holding).shuffle("log")
    async with running(built, event_log, {"held": held}):
        await wait_until(lambda: len(held) == 4, "the records appended since")
    assert sorted((tup["topic"], tup["partition"], tup["value"]) for tup, _, _ in held) == [
        (topic, partition, "new") for topic in sorted(topics) for partition in (0, 1)
    ]


async def held_by_another_member(log: EventLog, topic: str, partitions: set[int]) -> LogConsumer:
    """A member of the spout's group that polls until it owns `partitions`, then only stays."""
    other = log.consumer(topic, GROUP)
    while other.assignment() != partitions:
        await other.poll(max_records=1, timeout=0.01)
    return other


async def test_a_bounded_run_reads_the_partitions_another_member_held_when_it_started(tmp_path):
    """Polls that find nothing while the spout's consumer lacks partitions (another member
    holds them, or the group rebalances) do not make a bounded run end: it reads them once they
    are its own."""
    log = SqliteLog(tmp_path / "log.db", poll_interval=0.01)
    await log.start()
    try:
        topic = await new_topic(log, 2, on_each_partition(b"a") + on_each_partition(b"b"))
        other = await held_by_another_member(log, topic, {0, 1})
        held: list = []
        built = Topology("test")
        built.spout("log", LogSpoutSpec((topic,), GROUP, stop_at_end=True))
        built.bolt("hold", Holding).shuffle("log")
        runner = EmbeddedRunner(built, log, resources={"held": held})
        run = asyncio.create_task(runner.run_bounded())
        await asyncio.sleep(0.5)  # the spout polls meanwhile, with no partition of its own
        await other.close()
        await asyncio.wait_for(run, 30)
    finally:
        await log.close()
    assert sorted((tup["partition"], tup["offset"]) for tup, _, _ in held) == [(p, o) for p in (0, 1) for o in (0, 1)]


async def test_a_partition_read_late_holds_the_others_back_so_records_go_out_in_append_order(tmp_path):
    """The spout gets one partition while another member holds the other (on Kafka: a topic's
    partitions deliver their first records seconds apart, a consumer may join late). Records
    go out oldest first across partitions anyway: emitted as read, the first partition's would
    run ahead, and windows would wait for the other with the tuples in flight."""
    log = SqliteLog(tmp_path / "log.db", poll_interval=0.01)
    await log.start()
    try:
        topic = await new_topic(log, 2, [])
        appended = [(await log.append(topic, [Message(b"v", key=key_for(n % 2, 2))]))[0] for n in range(6)]
        other = await held_by_another_member(log, topic, {0, 1})
        held: list = []
        built = Topology("test")
        built.spout("log", LogSpoutSpec((topic,), GROUP))
        built.bolt("hold", Holding).shuffle("log")
        async with running(built, log, {"held": held}):
            while len(other.assignment()) != 1:  # the group has two members now: it gives one up
                await other.poll(max_records=1, timeout=0.01)
            await asyncio.sleep(0.3)  # the spout reads the partition it got meanwhile
            await other.close()
            await wait_until(lambda: len(held) == 6, "every record")
        assert [(tup["partition"], tup["offset"]) for tup, _, _ in held] == appended
    finally:
        await log.close()


async def test_a_partition_that_delivers_nothing_holds_the_others_back_only_for_a_while(tmp_path, monkeypatch):
    monkeypatch.setattr(spout, "UNREAD_WAIT", 0.2)
    log = SqliteLog(tmp_path / "log.db", poll_interval=0.01)
    await log.start()
    try:
        topic = await new_topic(log, 2, on_each_partition(b"v"))
        other = await held_by_another_member(log, topic, {0, 1})
        held: list = []
        built = Topology("test")
        built.spout("log", LogSpoutSpec((topic,), GROUP))
        built.bolt("hold", Holding).shuffle("log")
        async with running(built, log, {"held": held}):
            while len(other.assignment()) != 1:  # it gives one partition up, and keeps the other
                await other.poll(max_records=1, timeout=0.01)
            await wait_until(lambda: len(held) == 1, "the record of the spout's partition")
        assert held[0][0]["partition"] not in other.assignment()
        await other.close()
    finally:
        await log.close()
