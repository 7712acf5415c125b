"""An event log in memory."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from threadcast.bus.log import EventLog, LogConsumer, Message, Record, UnknownTopicError
from threadcast.bus.partitioner import partition_for
from threadcast.toolkit.memory.changes import Changes


class MemoryLog(EventLog):
    """Topics of partitions held in lists, partitioned by key as Kafka does
    (`threadcast.bus.partitioner`). The members of a group share its partitions: member i of
    n reads the partitions p with p % n == i."""

    def __init__(self) -> None:
        self._topics: dict[str, list[list[Record]]] = {}
        self._committed: dict[tuple[str, str], dict[int, int]] = {}
        self._members: dict[tuple[str, str], list[MemoryLogConsumer]] = {}
        self.changes = Changes()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        for members in list(self._members.values()):
            for member in list(members):
                await member.close()

    async def ping(self) -> None:
        pass

    async def create_topic(self, topic: str, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("a topic needs at least one partition")
        self._topics.setdefault(topic, [[] for _ in range(partitions)])

    async def partitions(self, topic: str) -> int:
        return len(self.records(topic))

    async def append(self, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        partitions = self.records(topic)
        positions = []
        for message in messages:
            partition = partition_for(message.key, len(partitions))
            offset = len(partitions[partition])
            value, headers = bytes(message.value), dict(message.headers)
            record = Record(topic, partition, offset, message.key, value, time.time(), headers)
            partitions[partition].append(record)
            positions.append((partition, offset))
        self.changes.notify()
        return positions

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {partition: len(records) for partition, records in enumerate(self.records(topic))}

    async def committed(self, topic: str, group: str) -> dict[int, int]:
        saved = self.saved_offsets(topic, group)
        return {partition: saved.get(partition, 0) for partition in range(len(self.records(topic)))}

    def consumer(self, topic: str, group: str) -> LogConsumer:
        self.records(topic)
        member = MemoryLogConsumer(self, topic, group)
        self._members.setdefault((topic, group), []).append(member)
        return member

    # -- used by consumers -------------------------------------------------------------------

    def records(self, topic: str) -> list[list[Record]]:
        try:
            return self._topics[topic]
        except KeyError:
            raise UnknownTopicError(f"topic {topic!r} does not exist") from None

    def saved_offsets(self, topic: str, group: str) -> dict[int, int]:
        return self._committed.get((topic, group), {})

    def commit(self, topic: str, group: str, offsets: Mapping[int, int]) -> None:
        self._committed.setdefault((topic, group), {}).update(offsets)
        self.changes.notify()

    def members(self, topic: str, group: str) -> list[MemoryLogConsumer]:
        return self._members.get((topic, group), [])

    def leave(self, member: MemoryLogConsumer, topic: str, group: str) -> None:
        self._members[(topic, group)].remove(member)
        self.changes.notify()


class MemoryLogConsumer(LogConsumer):
    def __init__(self, owner: MemoryLog, topic: str, group: str) -> None:
        self._owner = owner
        self._topic = topic
        self._group = group
        self._positions: dict[int, int] = {}
        self._closed = False

    def assignment(self) -> set[int]:
        if self._closed:
            return set()
        members = self._owner.members(self._topic, self._group)
        index, count = members.index(self), len(members)
        return {p for p in range(len(self._owner.records(self._topic))) if p % count == index}

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        if self._closed:
            raise RuntimeError("this consumer is closed")
        deadline = time.monotonic() + timeout
        while True:
            records = self._take(max_records)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            await self._owner.changes.wait(remaining)

    async def commit(self, offsets: Mapping[int, int] | None = None) -> None:
        self._owner.commit(self._topic, self._group, dict(self._positions) if offsets is None else offsets)

    async def seek(self, partition: int, offset: int) -> None:
        self._sync_positions()
        if partition not in self._positions:
            raise ValueError(f"partition {partition} is not assigned to this consumer")
        self._positions[partition] = offset
        self._owner.changes.notify()

    async def seek_to_timestamp(self, timestamp: float) -> None:
        self._sync_positions()
        partitions = self._owner.records(self._topic)
        for partition in self._positions:
            records = partitions[partition]
            self._positions[partition] = next((r.offset for r in records if r.timestamp >= timestamp), len(records))
        self._owner.changes.notify()

    async def lag(self) -> dict[int, int]:
        ends = await self._owner.end_offsets(self._topic)
        committed = await self._owner.committed(self._topic, self._group)
        return {partition: ends[partition] - committed[partition] for partition in self.assignment()}

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner.leave(self, self._topic, self._group)

    def _sync_positions(self) -> None:
        """Follow rebalances: newly assigned partitions start at the group's committed offset."""
        assigned = self.assignment()
        committed = self._owner.saved_offsets(self._topic, self._group)
        self._positions = {p: self._positions.get(p, committed.get(p, 0)) for p in sorted(assigned)}

    def _take(self, max_records: int) -> list[Record]:
        self._sync_positions()
        partitions = self._owner.records(self._topic)
        taken: list[Record] = []
        for partition, position in self._positions.items():
            chunk = partitions[partition][position : position + max_records - len(taken)]
            taken += chunk
            self._positions[partition] = position + len(chunk)
        return taken
