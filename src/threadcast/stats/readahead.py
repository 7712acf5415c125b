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
- `add` keeps at most `share` records per partition; the caller seeks the consumer back to the
  rest (a partition that runs ahead waits, as a paused Kafka partition does, instead of filling
  the buffer while the partitions behind it cannot be read).
"""

from __future__ import annotations

import heapq
import math
from collections import deque

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
        """The offset of the next record to read, per partition read so far."""
        self._ends: dict[Key, int] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def share(self, partitions: int) -> int:
        return self.capacity // max(1, partitions)

    def add(self, records: list[Record], share: int) -> dict[int, int]:
        """Buffer records of one topic, up to `share` per partition. Returns, per partition
        with records left out, the first offset left out."""
        refused: dict[int, int] = {}
        for record in records:
            if record.partition in refused:
                continue
            key = (record.topic, record.partition)
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

    def ends(self, topic: str, ends: dict[int, int]) -> None:
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
