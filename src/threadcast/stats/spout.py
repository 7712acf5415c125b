"""The log spout: reads event-log topics as a consumer group and emits one tuple per record, the
way Storm's KafkaSpout does, so the bolts behind it are the same on both engines.

- Output fields are KafkaSpout's default `(topic, partition, offset, key, value)`, with the
  record's value as text.
- Offsets are committed only up to the first record not acked yet, per partition (the
  contiguous acked prefix), every `commit_interval` seconds and at close: a crash replays
  exactly what was not done.
- A failed tuple (failed downstream, or timed out) is emitted again after a backoff.
- A reader task polls ahead (up to `buffer` records, a fair share per partition) while the
  topology works, and makes every call on the consumers (polls, seeks, commits), so a consumer
  is never used by two tasks at once.
- Records read ahead go out in append-time order across partitions and topics, so partitions
  advance together in event time (see `threadcast.stats.readahead`).
- A record the consumer hands out again is skipped (see `threadcast.stats.readahead`); only
  `fail` emits a record again. A group rebalance puts consumers back to the committed offsets,
  behind the records in flight; on Kafka every member that joins the group does that to the
  others (eager rebalancing), and the consumers of the spout's topics are members of one group.
- In a bounded run (`stop_at_end`), records appended after the spout opened are not emitted,
  and `exhausted` says when everything before was.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from threadcast.bus.log import EventLog, LogConsumer, Record
from threadcast.stats import metrics
from threadcast.stats.readahead import ReadAhead
from threadcast.toolkit.backoff import Backoff
from threadcast.toolkit.offsets import OffsetTracker

log = structlog.get_logger("threadcast.stats")

OUTPUT_FIELDS = ("topic", "partition", "offset", "key", "value")
IDLE_POLL = 0.1
"""Seconds a poll waits when no topic had records (and `next_tuple` for the reader)."""
END_REFRESH = 0.05
"""Seconds between two looks at the end offsets (which partitions have more to read)."""
UNREAD_WAIT = 10.0
"""Seconds the read-ahead holds every record back for a partition that delivered nothing yet
(see `threadcast.stats.readahead`); after that it gives up on it: its records may be gone
(retention), or none may be left after the time the spout starts at."""
REPLAY_BACKOFF = Backoff(base=0.1, cap=10.0)
ERROR_DELAY = 1.0

MessageId = tuple[str, int, int]
"""(topic, partition, offset)"""
Emit = Callable[[Sequence[Any], MessageId], None]


@dataclass(frozen=True)
class LogSpoutSpec:
    """What a log spout reads (plain data; on Storm it configures a KafkaSpout)."""

    topics: tuple[str, ...]
    group: str
    poll_records: int = 250
    buffer: int = 64_000
    """Records read ahead at most, a fair share per partition. Records beyond a partition's share
    are read again after a seek back, which on Kafka also drops what the consumer fetched ahead:
    a share should hold a fetch (about 1 MB per partition, 4,000 records of the stats)."""
    commit_interval: float = 1.0
    start_at: float | None = None
    """Seek every partition to the first record appended at or after this time (seconds since
    the epoch) instead of the group's committed offsets, once every topic's consumer joined."""
    stop_at_end: bool = False
    """A bounded run: stop at the end offsets the topics had when the spout opened."""

    @property
    def output_fields(self) -> tuple[str, ...]:
        return OUTPUT_FIELDS


class LogSpout:
    def __init__(self, spec: LogSpoutSpec, event_log: EventLog, emit: Emit) -> None:
        self.spec = spec
        self._log = event_log
        self._emit = emit
        self._consumers: dict[str, LogConsumer] = {}
        self._trackers: dict[str, OffsetTracker] = {topic: OffsetTracker() for topic in spec.topics}
        self._ahead = ReadAhead(spec.buffer)
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._in_flight: dict[MessageId, Record] = {}
        self._attempts: dict[MessageId, int] = {}
        self._replays: list[tuple[float, MessageId]] = []
        self._idle_turn = 0
        self._read_up_to: dict[str, float] = {topic: 0.0 for topic in spec.topics}
        """Per topic, the append time of the newest record read."""
        self._stop_at: dict[str, dict[int, int]] = {}
        self._drained: set[str] = set()
        self._fruitless: dict[str, int] = {topic: 0 for topic in spec.topics}
        """Bounded runs: polls in a row that found no record before the end offsets."""

    async def open(self) -> None:
        for topic in self.spec.topics:
            self._consumers[topic] = self._log.consumer(topic, self.spec.group)
            ends = await self._log.end_offsets(topic)
            if self.spec.stop_at_end:
                self._stop_at[topic] = ends
            starts = {} if self.spec.start_at is not None else await self._log.committed(topic, self.spec.group)
            self._ahead.ends(topic, ends)
            self._ahead.expect(topic, {partition: starts.get(partition, 0) for partition in ends})
        if self.spec.start_at is not None:
            await _join(list(self._consumers.values()))
            for consumer in self._consumers.values():
                await consumer.seek_to_timestamp(self.spec.start_at)
        self._reader = asyncio.create_task(self._read_ahead(), name="log-spout-reader")

    @property
    def exhausted(self) -> bool:
        """Bounded runs: every record before the end offsets was emitted, none waits for a replay."""
        return (
            self.spec.stop_at_end
            and not self._replays
            and not self._ahead
            and self._drained == set(self.spec.topics)
        )

    async def next_tuple(self, room: int) -> int:
        """Emit up to `room` tuples: replays that are due first, else records read ahead
        (waiting briefly when none can go). Return how many were emitted."""
        emitted = self._replay_due(room)
        if not emitted:
            emitted = self._emit_read_ahead(room)
        if not emitted:
            self._readable.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._readable.wait(), IDLE_POLL)
            emitted = self._emit_read_ahead(room)
        return emitted

    def _emit_read_ahead(self, room: int) -> int:
        records = self._ahead.take(room)
        emit, in_flight, trackers = self._emit, self._in_flight, self._trackers
        for record in records:
            msg_id = (record.topic, record.partition, record.offset)
            trackers[record.topic].begin(record.partition, record.offset)
            in_flight[msg_id] = record
            emit(_values(record), msg_id)
        if records:
            self._space.set()
        return len(records)

    def ack(self, msg_id: MessageId) -> None:
        topic, partition, offset = msg_id
        self._trackers[topic].finish(partition, offset)
        del self._in_flight[msg_id]
        self._attempts.pop(msg_id, None)

    def fail(self, msg_id: MessageId) -> None:
        attempts = self._attempts[msg_id] = self._attempts.get(msg_id, 0) + 1
        heapq.heappush(self._replays, (time.monotonic() + REPLAY_BACKOFF.delay(attempts), msg_id))
        metrics.REPLAYED.inc()

    async def close(self) -> None:
        """Stop reading, commit the acked prefix and leave the group (what is not committed is
        read again)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        try:
            await self._commit()
        finally:
            for consumer in self._consumers.values():
                await consumer.close()

    # -- the reader task -----------------------------------------------------------------------

    async def _read_ahead(self) -> None:
        began = last_commit = last_ends = time.monotonic()
        refusals = 0
        while True:
            try:
                if self._ahead.unread and time.monotonic() - began >= UNREAD_WAIT:
                    log.info("stats spout: partitions with records to read delivered none", seconds=UNREAD_WAIT)
                    self._ahead.forget_unread()
                if time.monotonic() - last_commit >= self.spec.commit_interval:
                    last_commit = time.monotonic()
                    await self._commit()
                if time.monotonic() - last_ends >= END_REFRESH:
                    last_ends = time.monotonic()
                    for topic in self.spec.topics:
                        ends = self._stop_at.get(topic) or await self._log.end_offsets(topic)
                        self._ahead.ends(topic, ends)
                kept, refused = await self._poll()
                if kept:
                    refusals = 0
                    self._readable.set()
                elif refused:  # records of partitions whose buffers are full only
                    refusals += 1
                    if refusals > self._assigned():  # all of them: wait for the topology
                        refusals = 0
                        await self._wait_for_space(IDLE_POLL)
            except Exception:
                log.exception("stats spout: reading the log failed; retrying")
                await asyncio.sleep(ERROR_DELAY)

    async def _wait_for_space(self, timeout: float) -> None:
        self._space.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._space.wait(), timeout)

    async def _commit(self) -> None:
        for topic, consumer in self._consumers.items():
            tracker = self._trackers[topic]
            positions = tracker.committable()
            if positions:
                await consumer.commit(positions)
                tracker.committed(positions)

    async def _poll(self) -> tuple[int, bool]:
        """One non-blocking poll per topic until one has records, first a topic with a partition
        that holds the others back, then the topic read least far (in append time); if none
        had records, one poll that waits a little (on each topic in turn). Returns how many
        records were kept, and whether some were refused (their partitions' buffers are full)."""
        order = sorted(self.spec.topics, key=lambda topic: (not self._ahead.hungry(topic), self._read_up_to[topic]))
        self._idle_turn = (self._idle_turn + 1) % len(order)
        for waiting, topic in enumerate((*order, order[self._idle_turn])):
            timeout = IDLE_POLL if waiting == len(order) else 0.0
            consumer = self._consumers[topic]
            records = await consumer.poll(max_records=self.spec.poll_records, timeout=timeout)
            if topic in self._stop_at:
                records = self._before_the_end(topic, records, waited=timeout > 0)
            if records:
                self._read_up_to[topic] = max(self._read_up_to[topic], records[-1].timestamp)
                return await self._keep(consumer, records)
        return 0, False

    async def _keep(self, consumer: LogConsumer, records: list[Record]) -> tuple[int, bool]:
        """Read records ahead; seek back to those refused (partitions ahead of the others).
        Returns how many were kept and whether some were refused."""
        before = len(self._ahead)
        share = max(self.spec.poll_records, self._ahead.share(self._assigned()))
        refused = self._ahead.add(records, share)
        for partition, offset in refused.items():
            await consumer.seek(partition, offset)
        return len(self._ahead) - before, bool(refused)

    def _assigned(self) -> int:
        return sum(len(consumer.assignment()) for consumer in self._consumers.values())

    def _before_the_end(self, topic: str, records: list[Record], *, waited: bool) -> list[Record]:
        """Bounded runs: the records appended before the spout opened; marks the topic drained
        once a poll per partition (they take turns) found none while the consumer held every
        partition (not while the group rebalances, or before the consumer joined it)."""
        stop_at = self._stop_at[topic]
        fresh = [r for r in records if r.offset < stop_at.get(r.partition, 0)]
        if fresh:
            self._fruitless[topic] = 0
        elif (records or waited) and self._consumers[topic].assignment() == set(stop_at):
            self._fruitless[topic] += 1
        if self._fruitless[topic] > len(stop_at):
            self._drained.add(topic)
        return fresh

    def _replay_due(self, room: int) -> int:
        now, emitted = time.monotonic(), 0
        while self._replays and emitted < room and self._replays[0][0] <= now:
            _, msg_id = heapq.heappop(self._replays)
            record = self._in_flight.get(msg_id)
            if record is not None:
                self._emit(_values(record), msg_id)
                emitted += 1
        return emitted


def _values(record: Record) -> list[Any]:
    return [record.topic, record.partition, record.offset, record.key, record.value.decode("utf-8", "replace")]


async def _join(consumers: list[LogConsumer]) -> None:
    """Poll the consumers in turns until each has its partitions (the records polled meanwhile
    are dropped: the caller seeks next). They are members of one group, and on Kafka each member
    that joins makes the others join again, back at the committed offsets: a seek made before
    all have joined is undone, and a member not polled meanwhile holds the group's rebalance up
    for minutes (until its max poll interval ends)."""
    while not all(consumer.assignment() for consumer in consumers):
        for consumer in consumers:
            await consumer.poll(max_records=1, timeout=IDLE_POLL)
