"""A work-queue consumer: pulls deliveries, runs the handler, acks, retries, dead-letters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable
from functools import partial
from typing import Any

import structlog

from threadcast.bus.queue import Delivery, QueueConsumer, WorkQueue
from threadcast.toolkit.aio import Shutdown, Stopped, until
from threadcast.toolkit.backoff import Backoff
from threadcast.toolkit.codec import Codec
from threadcast.toolkit.errors import Undecodable
from threadcast.toolkit.handling import Handler, Outcome, Result, event_id_of
from threadcast.toolkit.worker import Worker

log = structlog.get_logger("threadcast.toolkit")


class QueueWorker(Worker):
    """Consumes `queue_name` with `handler`. `as_batch` hands each message to the handler
    as a one-item list (the retry queue of a batch subscriber)."""

    def __init__(
        self,
        handler: Handler,
        queue: WorkQueue,
        queue_name: str,
        *,
        codec: Codec,
        prefetch: int,
        key_of: Callable[[Any], Hashable] | None,
        max_attempts: int,
        backoff: Backoff,
        shutdown: Shutdown,
        as_batch: bool = False,
    ) -> None:
        super().__init__(handler, prefetch=prefetch, shutdown=shutdown)
        self.queue = queue
        self.queue_name = queue_name
        self._codec = codec
        self._prefetch = prefetch
        self._key_of = key_of
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._as_batch = as_batch
        self._held = 0
        """Deliveries pulled and not yet handed to the lanes."""
        metrics, labels = handler.scope.metrics, (handler.scope.service, handler.label)
        self._dead = {
            reason: metrics.dead_letters.labels(*labels, reason) for reason in ("failed", "rejected", "undecodable")
        }

    @property
    def source(self) -> str:
        return f"queue {self.queue_name}"

    @property
    def in_flight(self) -> int:
        return super().in_flight + self._held

    async def _waiting(self) -> int:
        return await self.queue.depth(self.queue_name)

    def _open(self) -> QueueConsumer:
        return self.queue.consume(self.queue_name, prefetch=self._prefetch)

    async def _consume(self, consumer: QueueConsumer) -> None:
        deliveries = aiter(consumer)
        stopping = self._shutdown.stopping_waiter
        while True:
            try:
                delivery = await until(stopping, self._pull(deliveries))
                await until(stopping, self._dispatch(delivery))
            except Stopped:
                return
            except StopAsyncIteration:
                raise RuntimeError(f"the consumer of {self.queue_name!r} ended") from None
            finally:
                self._held = 0

    async def _finished(self, consumer: QueueConsumer) -> None:
        try:
            await consumer.close()
        except Exception:
            log.exception("closing a queue consumer failed", queue=self.queue_name)

    async def _pull(self, deliveries: AsyncIterator[Delivery]) -> Delivery:
        delivery = await anext(deliveries)
        self._held = 1  # in flight from the moment it arrives
        self._in.inc()
        return delivery

    async def _dispatch(self, delivery: Delivery) -> None:
        try:
            message = self._codec.decode(delivery.body)
            key = None if self._key_of is None else self._key_of(message)
        except Undecodable as exc:
            await delivery.reject(exc.reason)
            self._dead["undecodable"].inc()
            return
        await self._lanes.submit(key, partial(self._process, delivery, message))
        self._held = 0

    async def _process(self, delivery: Delivery, message: Any) -> None:
        event_id = event_id_of(delivery.headers, message, delivery.message_id)
        ctx = self.handler.context(event_id=event_id, attempt=delivery.attempt, headers=delivery.headers)
        if self._as_batch:
            result = await self.handler.run_batch([message], [event_id], ctx)
        else:
            result = await self.handler.run(message, ctx)
        try:
            await self._settle(delivery, result)
        except Exception:
            log.exception("could not settle a delivery; it will be delivered again", event_id=event_id)

    async def _settle(self, delivery: Delivery, result: Result) -> None:
        if result.settled:
            await delivery.ack()
        elif result.outcome is Outcome.REJECTED:
            await delivery.reject(result.error)
            self._dead["rejected"].inc()
        elif delivery.attempt >= self._max_attempts:
            await delivery.nack(result.error)
            self._dead["failed"].inc()
        else:
            await delivery.nack(result.error, delay=self._backoff.delay(delivery.attempt))
            self._retries.inc()
