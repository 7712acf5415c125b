"""What queue and log workers share: the consume / finish / reconnect loop and metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import structlog

from threadcast.toolkit.aio import Shutdown, Stopped
from threadcast.toolkit.handling import Handler
from threadcast.toolkit.lanes import Lanes

log = structlog.get_logger("threadcast.toolkit")

RECONNECT_DELAY = 1.0


class Worker(ABC):
    """Feeds one handler from one source, at most `prefetch` units in flight."""

    def __init__(self, handler: Handler, *, prefetch: int, shutdown: Shutdown) -> None:
        self.handler = handler
        self._shutdown = shutdown
        self._lanes = Lanes(prefetch)
        metrics, labels = handler.scope.metrics, (handler.scope.service, handler.label)
        self._in = metrics.messages_in.labels(*labels)
        self._retries = metrics.retries.labels(*labels)
        self._lag = metrics.lag.labels(*labels)
        metrics.in_flight.labels(*labels).set_function(lambda: self.in_flight)

    @property
    def in_flight(self) -> int:
        return self._lanes.in_flight

    async def backlog(self) -> int:
        """Messages waiting for this worker (also exported as the consumer lag)."""
        waiting = await self._waiting()
        self._lag.set(waiting)
        return waiting

    async def run(self) -> None:
        """Consume until the shutdown begins. Then let the work in flight finish (cancelled
        when the grace period expires), settle what finished, and close the consumer, which
        gives back whatever was not settled. A consumer that fails is replaced."""
        while not self._shutdown.stopping.is_set():
            consumer = self._open()
            broken = False
            try:
                await self._consume(consumer)
            except Exception:
                log.exception("consumer failed; reconnecting", source=self.source)
                broken = True
            finally:
                if not await self._shutdown.finish(self._lanes.join()):
                    await self._lanes.cancel()
                await self._finished(consumer)
            if broken:
                try:
                    await self._shutdown.sleep(RECONNECT_DELAY)
                except Stopped:
                    return

    @property
    @abstractmethod
    def source(self) -> str:
        """What this worker reads, for logs and task names."""

    @abstractmethod
    def _open(self) -> Any:
        """A new consumer."""

    @abstractmethod
    async def _consume(self, consumer: Any) -> None:
        """Hand the consumer's messages to the lanes until the shutdown begins."""

    @abstractmethod
    async def _finished(self, consumer: Any) -> None:
        """Nothing is in flight any more: settle and close the consumer (never raises)."""

    @abstractmethod
    async def _waiting(self) -> int: ...
