"""The work queue interface, shaped after RabbitMQ.

Jobs are published to a named queue and handed to competing consumers, at most `prefetch`
unacknowledged at a time per consumer. A delivery is acked when done; nacked to be delivered
again after a delay (the attempt count grows), or dead-lettered when its attempts are used up
or when it is rejected as poison. A consumer that goes away without acking gives its
deliveries back to the queue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass


class UnknownQueueError(LookupError):
    """The queue was never declared."""


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    max_attempts: int = 5
    """Deliveries before a message is dead-lettered."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str
    body: bytes
    headers: Mapping[str, str]
    attempts: int
    error: str
    dead_at: float


class Delivery(ABC):
    queue: str
    message_id: str
    body: bytes
    headers: Mapping[str, str]
    attempt: int
    """1 on the first delivery, 2 on the first retry, ..."""

    @abstractmethod
    async def ack(self) -> None: ...

    @abstractmethod
    async def nack(self, error: str, delay: float = 0.0) -> None:
        """Deliver again after `delay` seconds, or dead-letter it (recording `error`) when
        this was the last allowed attempt."""

    @abstractmethod
    async def reject(self, reason: str) -> None:
        """Dead-letter it now (a message that can never succeed)."""


class QueueConsumer(ABC):
    @abstractmethod
    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    @abstractmethod
    async def close(self) -> None:
        """Stop receiving. Deliveries not yet acked go back to the queue."""


class WorkQueue(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the backend is unreachable (readiness)."""

    @abstractmethod
    async def declare(self, spec: QueueSpec) -> None:
        """Create the queue and its dead-letter queue if missing. Idempotent."""

    @abstractmethod
    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish durably (returns once the broker has it)."""

    @abstractmethod
    def consume(self, queue: str, prefetch: int = 32) -> QueueConsumer: ...

    @abstractmethod
    async def depth(self, queue: str) -> int:
        """Messages ready or delayed, not counting dead letters."""

    @abstractmethod
    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]: ...

    @abstractmethod
    async def replay_dead_letters(self, queue: str, message_ids: list[str] | None = None) -> int:
        """Move dead letters (all, or the given ones) back to the queue with a fresh attempt
        count; return how many."""

    @abstractmethod
    async def purge_dead_letters(self, queue: str) -> int: ...

    @abstractmethod
    async def dead_letter_count(self, queue: str) -> int:
        """How many dead letters the queue holds."""

    @abstractmethod
    async def expire_dead_letters(self, queue: str, dead_before: float) -> int:
        """Delete the dead letters that died before `dead_before` (seconds since the epoch);
        return how many. (RabbitMQ takes them from the head of the dead-letter queue and stops
        at the first younger one: one buried out of order waits for a later pass.)"""

