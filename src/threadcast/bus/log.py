"""The event log interface, shaped after Apache Kafka.

A log holds topics split into partitions. Producers append records with a key; the partition
is chosen by hashing the key (murmur2, as Kafka's Java client does), so one key's records stay
in order. Consumers belong to a group; the group's committed offset per partition says where
reading resumes. Any consumer may seek back to replay.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class UnknownTopicError(LookupError):
    """The topic was never created."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    timestamp: float
    """Append time, seconds since the epoch."""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    """What a producer appends."""

    value: bytes
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class LogConsumer(ABC):
    """One member of a consumer group, reading the partitions assigned to it."""

    @abstractmethod
    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Return the next records after the current positions, waiting up to `timeout`
        seconds for at least one. Records of one partition come in offset order."""

    @abstractmethod
    async def commit(self, offsets: Mapping[int, int] | None = None) -> None:
        """Commit, per partition, the offset of the next record to read. With no argument,
        commit the positions just after the records returned by `poll` so far."""

    @abstractmethod
    async def seek(self, partition: int, offset: int) -> None:
        """Move the read position of one assigned partition (replay)."""

    @abstractmethod
    async def seek_to_timestamp(self, timestamp: float) -> None:
        """Move every assigned partition to the first record appended at or after `timestamp`."""

    @abstractmethod
    def assignment(self) -> set[int]:
        """The partitions this member currently reads."""

    @abstractmethod
    async def lag(self) -> dict[int, int]:
        """Per assigned partition: end offset minus committed offset."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the group. Uncommitted work is read again by whoever takes the partitions."""


class EventLog(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Connect / open storage. Idempotent."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the backend is unreachable (readiness)."""

    @abstractmethod
    async def create_topic(self, topic: str, partitions: int) -> None:
        """Create the topic if missing; an existing topic is left as it is."""

    @abstractmethod
    async def partitions(self, topic: str) -> int: ...

    @abstractmethod
    async def append(self, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        """Append durably, in the given order; return (partition, offset) for each message."""

    @abstractmethod
    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition: the offset the next appended record will get."""

    @abstractmethod
    async def committed(self, topic: str, group: str) -> dict[int, int]:
        """Per partition: the group's committed offset (0 when none)."""

    @abstractmethod
    def consumer(self, topic: str, group: str) -> LogConsumer:
        """A new member of `group` on `topic`. With no committed offset it starts at the
        earliest record."""
