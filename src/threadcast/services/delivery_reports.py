"""Delivery reports: after the formatter published an event, it tells the stats topology when,
by appending a `Delivery` to the log topic `deliveries` (key: the thread id).

Reports are batched in process: one append per `interval` seconds (100 ms) or per `max_batch`
reports (500), whichever comes first, so the comment path pays a list append, not a log round
trip. Best effort by design: the reports of the last interval are lost if the process dies, and
a batch the log refuses is dropped (logged and counted); the stats then have a few fewer latency
samples, never wrong ones.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from prometheus_client import Counter

from threadcast.bus.log import EventLog, Message
from threadcast.events import Delivery, Event, encode

log = structlog.get_logger("threadcast.formatter")

REPORTS_LOST = Counter("threadcast_delivery_reports_lost_total", "Delivery reports the log did not take")


class DeliveryReports:
    def __init__(self, event_log: EventLog, topic: str, *, interval: float = 0.1, max_batch: int = 500) -> None:
        self._log = event_log
        self.topic = topic
        self.interval = interval
        self.max_batch = max_batch
        self._batch: list[Message] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, partitions: int) -> None:
        await self._log.create_topic(self.topic, partitions)
        self._task = asyncio.create_task(self._run(), name="delivery-reports")

    def add(self, event: Event, published_ts: float) -> None:
        report = Delivery(event.event_id, event.forum, event.thread_id, event.ts, published_ts)
        self._batch.append(Message(encode(report), key=str(event.thread_id)))
        if len(self._batch) >= self.max_batch:
            self._full.set()

    async def flush(self) -> None:
        batch, self._batch = self._batch, []
        self._full.clear()
        if not batch:
            return
        try:
            await self._log.append(self.topic, batch)
        except Exception as exc:
            REPORTS_LOST.inc(len(batch))
            log.warning("delivery reports lost", count=len(batch), error=repr(exc))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.interval)
            await self.flush()
