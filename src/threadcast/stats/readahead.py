"""The log spout's read-ahead buffer: records polled but not emitted yet, handed out in append
time order across partitions and topics (as Kafka Streams picks records by timestamp).

Why: windows downstream close when the slowest partition has passed them, and every tuple of an
open window is in flight. A consumer hands out one partition's records in batches, and
partitions hold different numbers of records per second; emitted as polled, some partitions
would run minutes of event time ahead of others (event time follows append time closely), and
the tuples held meanwhile would reach `max_spout_pending` before any window could close.

- `take` hands out the oldest record first, but never a record appended after the last one read
  from a partition whose buffer is empty while the log has more of it (by the end offsets the
  caller refreshes): the consumer will refill it (it takes partitions in turns). A partition
  that is caught up holds no one back.
- A partition `expect`ed but not read yet, that the log has more of, holds every record back:
  its records may be the oldest. (A consumer does not deliver its partitions' first records
  together: Kafka's come a partition at a time over seconds, and a topic's consumer may join its
  group after another's started reading.) The caller gives up on those that deliver nothing
  (`forget_unread`), as their records may be gone.
- `add` keeps at most `share` records per partition; the caller seeks the consumer back to the
  rest (a partition that runs ahead waits, as a paused Kafka partition does, instead of filling
  the buffer while the partitions behind it cannot be read).
- `add` leaves out a record below the next offset to read of its partition: it was read before,
  and the consumer went back past it (a consumer group rebalance puts the positions back to the
  committed offsets, behind the records in flight). The spout still holds it, here or in flight,
  or acked it; emitted again, one message id would have two tuples in flight. (Storm's
  KafkaSpout skips a record already emitted or acked the same way.)
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping

from threadcast.bus.log import Record

Key = tuple[str, int]


class ReadAhead:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._buffers: dict[Key, deque[Record]] = {}
        self._heads: list[tuple[float, str, int]] = []
        """(append time, topic, partition) of the first record of each buffer that has one."""
        self._last_read: dict[Key, float] = {}
        self._next: dict[Key, int] = {}
        """The offset of the next record to read, per partition read so far or expected."""
        self._ends: dict[Key, int] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def share(self, partitions: int) -> int:
        return self.capacity // max(1, partitions)

    def add(self, records: list[Record], share: int) -> dict[int, int]:
        """Buffer records of one topic, up to `share` per partition, leaving out those read
        before. Returns, per partition with records refused for want of room, the first offset
        refused."""
        refused: dict[int, int] = {}
        for record in records:
            if record.partition in refused:
                continue
            key = (record.topic, record.partition)
            if record.offset < self._next.get(key, 0):
                continue
            buffer = self._buffers.get(key)
            if buffer is None:
                buffer = self._buffers[key] = deque()
            if len(buffer) >= share:
                refused[record.partition] = record.offset
                continue
            if not buffer:
                heapq.heappush(self._heads, (record.timestamp, record.topic, record.partition))
            buffer.append(record)
            self._last_read[key] = record.timestamp
            self._next[key] = record.offset + 1
            self._size += 1
        return refused

    def expect(self, topic: str, positions: Mapping[int, int]) -> None:
        """The partitions of `topic` to read, and the offsets they are read from (offsets from
        which on records are new: 0 when not known)."""
        for partition, offset in positions.items():
            key = (topic, partition)
            if key not in self._next:
                self._buffers[key] = deque()
                self._next[key] = offset
                self._last_read[key] = -math.inf

    @property
    def unread(self) -> bool:
        """An expected partition that the log has more of delivered nothing yet."""
        return any(self._behind(key) for key, last in self._last_read.items() if last == -math.inf)

    def forget_unread(self) -> None:
        """Hold nothing back for the expected partitions that delivered nothing yet."""
        for key in [key for key, last in self._last_read.items() if last == -math.inf]:
            del self._buffers[key], self._next[key], self._last_read[key]

    def ends(self, topic: str, ends: Mapping[int, int]) -> None:
        """The topic's end offsets now (what the log holds)."""
        for partition, end in ends.items():
            self._ends[(topic, partition)] = end

    def take(self, limit: int) -> list[Record]:
        """Up to `limit` records, oldest first (see the module's doc)."""
        bound = min((self._last_read[key] for key in self._next if self._behind(key)), default=math.inf)
        heads, taken = self._heads, []
        while heads and len(taken) < limit and heads[0][0] <= bound:
            _, topic, partition = heapq.heappop(heads)
            key = (topic, partition)
            buffer = self._buffers[key]
            taken.append(buffer.popleft())
            if buffer:
                heapq.heappush(heads, (buffer[0].timestamp, topic, partition))
            elif self._behind(key):
                bound = min(bound, self._last_read[key])
        self._size -= len(taken)
        return taken

    def hungry(self, topic: str) -> bool:
        """A partition of the topic holds the others back: its buffer is empty, the log has more."""
        return any(self._behind(key) for key in self._next if key[0] == topic)

    def _behind(self, key: Key) -> bool:
        """The partition's buffer is empty, and the log has more of it."""
        return not self._buffers[key] and self._next[key] < self._ends.get(key, 0)
