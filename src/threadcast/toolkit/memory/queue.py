"""A work queue in memory."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from threadcast.bus.queue import DeadLetter, Delivery, QueueConsumer, QueueSpec, UnknownQueueError, WorkQueue
from threadcast.toolkit.memory.changes import Changes


@dataclass
class _Message:
    message_id: str
    body: bytes
    headers: dict[str, str]
    failures: int = 0
    """Nacks so far: the next delivery is attempt `failures + 1`. A delivery given back by a
    closing consumer is not a failure."""


@dataclass
class _Queue:
    spec: QueueSpec
    waiting: list[tuple[float, int, _Message]] = field(default_factory=list)
    """Heap of (available at, publish order, message): ready and delayed messages."""
    dead: list[DeadLetter] = field(default_factory=list)


class MemoryQueue(WorkQueue):
    """Messages wait in a heap ordered by the time they become available, then by publish
    order; `nack(delay)` puts a message back with a later availability."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._order = itertools.count()
        self._consumers: set[MemoryConsumer] = set()
        self.changes = Changes()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.close()

    async def ping(self) -> None:
        pass

    async def declare(self, spec: QueueSpec) -> None:
        existing = self._queues.get(spec.name)
        if existing is None:
            self._queues[spec.name] = _Queue(spec)
        else:
            existing.spec = spec

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.put(queue, _Message(message_id, bytes(body), dict(headers or {})), delay=0.0)

    def consume(self, queue: str, prefetch: int = 32) -> QueueConsumer:
        consumer = MemoryConsumer(self, self._queue(queue), prefetch)
        self._consumers.add(consumer)
        return consumer

    async def depth(self, queue: str) -> int:
        return len(self._queue(queue).waiting)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return self._queue(queue).dead[:limit]

    async def replay_dead_letters(self, queue: str, message_ids: list[str] | None = None) -> int:
        state = self._queue(queue)
        chosen = [d for d in state.dead if message_ids is None or d.message_id in message_ids]
        state.dead = [d for d in state.dead if d not in chosen]
        for letter in chosen:
            self.put(queue, _Message(letter.message_id, letter.body, dict(letter.headers)), delay=0.0)
        return len(chosen)

    async def purge_dead_letters(self, queue: str) -> int:
        state = self._queue(queue)
        purged, state.dead = len(state.dead), []
        return purged

    async def dead_letter_count(self, queue: str) -> int:
        return len(self._queue(queue).dead)

    async def expire_dead_letters(self, queue: str, dead_before: float) -> int:
        state = self._queue(queue)
        kept = [letter for letter in state.dead if letter.dead_at >= dead_before]
        expired, state.dead = len(state.dead) - len(kept), kept
        return expired

    # -- used by consumers and deliveries ---------------------------------------------------

    def _queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise UnknownQueueError(f"queue {name!r} was not declared") from None

    def put(self, queue: str, message: _Message, *, delay: float) -> None:
        heapq.heappush(self._queue(queue).waiting, (time.monotonic() + delay, next(self._order), message))
        self.changes.notify()

    def bury(self, queue: str, message: _Message, *, attempts: int, error: str) -> None:
        letter = DeadLetter(message.message_id, message.body, dict(message.headers), attempts, error, time.time())
        self._queue(queue).dead.append(letter)
        self.changes.notify()

    def forget(self, consumer: MemoryConsumer) -> None:
        self._consumers.discard(consumer)


class MemoryConsumer(QueueConsumer):
    def __init__(self, owner: MemoryQueue, state: _Queue, prefetch: int) -> None:
        self._owner = owner
        self._state = state
        self._prefetch = prefetch
        self._unacked: dict[int, _Message] = {}
        self._tags = itertools.count()
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        while not self._closed:
            if len(self._unacked) < self._prefetch:
                message = self._take()
                if message is not None:
                    tag = next(self._tags)
                    self._unacked[tag] = message
                    yield MemoryDelivery(self, tag, self._state.spec.name, message)
                    continue
            await self._owner.changes.wait(self._next_due())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner.forget(self)
        for message in self._unacked.values():
            self._owner.put(self._state.spec.name, message, delay=0.0)
        self._unacked.clear()
        self._owner.changes.notify()

    def _take(self) -> _Message | None:
        waiting = self._state.waiting
        if waiting and waiting[0][0] <= time.monotonic():
            return heapq.heappop(waiting)[2]
        return None

    def _next_due(self) -> float | None:
        """Seconds until the next delayed message is due (None: nothing to wait for)."""
        if len(self._unacked) >= self._prefetch or not self._state.waiting:
            return None
        return max(0.0, self._state.waiting[0][0] - time.monotonic())

    def settle(self, tag: int, message_id: str) -> _Message:
        if self._closed:
            raise RuntimeError(f"message {message_id!r} is no longer held: its consumer closed")
        try:
            message = self._unacked.pop(tag)
        except KeyError:
            raise RuntimeError(f"message {message_id!r} was already acked, nacked or rejected") from None
        self._owner.changes.notify()
        return message

    @property
    def owner(self) -> MemoryQueue:
        return self._owner

    @property
    def max_attempts(self) -> int:
        return self._state.spec.max_attempts


class MemoryDelivery(Delivery):
    def __init__(self, consumer: MemoryConsumer, tag: int, queue: str, message: _Message) -> None:
        self.queue = queue
        self.message_id = message.message_id
        self.body = message.body
        self.headers = dict(message.headers)
        self.attempt = message.failures + 1
        self._consumer = consumer
        self._tag = tag

    async def ack(self) -> None:
        self._consumer.settle(self._tag, self.message_id)

    async def nack(self, error: str, delay: float = 0.0) -> None:
        message = self._consumer.settle(self._tag, self.message_id)
        if self.attempt >= self._consumer.max_attempts:
            self._consumer.owner.bury(self.queue, message, attempts=self.attempt, error=error)
        else:
            message.failures += 1
            self._consumer.owner.put(self.queue, message, delay=delay)

    async def reject(self, reason: str) -> None:
        message = self._consumer.settle(self._tag, self.message_id)
        self._consumer.owner.bury(self.queue, message, attempts=self.attempt, error=reason)
