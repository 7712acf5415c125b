"""A test kit: run services on in-memory backends, feed them, wait until they are done."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from threadcast.bus.log import EventLog, Message
from threadcast.bus.queue import WorkQueue
from threadcast.config import Settings
from threadcast.toolkit.backends import Backends
from threadcast.toolkit.backoff import Backoff
from threadcast.toolkit.codec import encode
from threadcast.toolkit.inbox import Inbox, MemoryInbox
from threadcast.toolkit.memory import MemoryEdge, MemoryLog, MemoryQueue
from threadcast.toolkit.runner import Runner
from threadcast.toolkit.service import Service

FAST_BACKOFF = Backoff(base=0.001, cap=0.01)
DRAIN_POLL = 0.005


class TestKit:
    """Runs services for a test:

        async with TestKit(svc) as kit:
            await kit.send_to_queue("realtime.format", event)
            await kit.drain()
            assert kit.edge.messages("thread:1")

    Backends default to in-memory ones (`MemoryLog`, `MemoryQueue`, `MemoryEdge`,
    `MemoryInbox`); pass `backends=` to use others. Retries wait at most 10 ms
    (`backoff=None` keeps the services' own). Metrics go to a registry of the kit's own.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *services: Service,
        backends: Backends | None = None,
        settings: Settings | None = None,
        configs: Mapping[str, Any] | None = None,
        backoff: Backoff | None = FAST_BACKOFF,
        concurrency: int | None = None,
        grace: float = 5.0,
    ) -> None:
        self.backends = backends or Backends(
            log=MemoryLog(), queue=MemoryQueue(), edge=MemoryEdge(), inbox=MemoryInbox()
        )
        self.registry = CollectorRegistry()
        self.runner = Runner(
            services,
            self.backends,
            settings=settings,
            configs=configs,
            concurrency=concurrency,
            backoff=backoff,
            grace=grace,
            registry=self.registry,
        )
        in_memory = isinstance(self.backends.queue, MemoryQueue | None) and isinstance(
            self.backends.log, MemoryLog | None
        )
        self._quiet_checks = 1 if in_memory else 3

    async def __aenter__(self) -> TestKit:
        await self.runner.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.runner.stop()

    @property
    def log(self) -> EventLog:
        return self.backends.require("log", "the test")

    @property
    def queue(self) -> WorkQueue:
        return self.backends.require("queue", "the test")

    @property
    def edge(self) -> MemoryEdge:
        return self.backends.require("edge", "the test")

    @property
    def inbox(self) -> Inbox:
        return self.backends.require("inbox", "the test")

    async def send_to_queue(
        self, queue: str, message: Any, *, message_id: str | None = None, headers: Mapping[str, str] | None = None
    ) -> str:
        """Publish a message (a Struct or dict as JSON, bytes as they are); return its id."""
        message_id = message_id or getattr(message, "event_id", None) or uuid.uuid4().hex
        await self.queue.publish(queue, encode(message), message_id=message_id, headers=headers)
        return message_id

    async def append_to_log(
        self, topic: str, message: Any, *, key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, int]:
        """Append a record; return its (partition, offset)."""
        record = Message(value=encode(message), key=key, headers=dict(headers or {}))
        [position] = await self.log.append(topic, [record])
        return position

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until nothing is in flight and the queues and log groups the services consume
        are empty (retries waiting for their delay included; dead letters are not). On the
        in-memory backends one check is exact; on others the state must hold for three
        checks in a row, as a message between a backend and a handler is seen by neither."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while True:
            idle = self.runner.in_flight() == 0 and await self.runner.backlog() == 0 and self.runner.in_flight() == 0
            quiet = quiet + 1 if idle else 0
            if quiet >= self._quiet_checks:
                return
            if loop.time() > deadline:
                raise TimeoutError(
                    f"not drained after {timeout}s: {self.runner.in_flight()} in flight, "
                    f"{await self.runner.backlog()} waiting"
                )
            await asyncio.sleep(DRAIN_POLL)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the kit's metrics (0 when never set), e.g.
        `kit.metric("threadcast_dead_letters_total", service="s", handler="h", reason="failed")`."""
        return self.registry.get_sample_value(name, labels) or 0.0
