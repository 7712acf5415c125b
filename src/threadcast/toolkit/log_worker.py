"""An event-log subscriber: consume, process, produce, then commit.

Offsets are committed only up to records whose handling is over: the handler returned, or
the record was moved to the retry queue. Whatever the handler produced (queue messages, log
records, edge publishes) is therefore durable before the offset moves past its input; a
crash in between makes the group read the record again (at least once, the inbox skips it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from threadcast.bus.log import EventLog, LogConsumer, Record
from threadcast.bus.queue import WorkQueue
from threadcast.toolkit.aio import Shutdown, Stopped, until
from threadcast.toolkit.backoff import Backoff
from threadcast.toolkit.codec import Codec
from threadcast.toolkit.context import EVENT_ID_HEADER
from threadcast.toolkit.errors import Undecodable
from threadcast.toolkit.handling import Handler, Outcome, Result, event_id_of
from threadcast.toolkit.offsets import OffsetTracker
from threadcast.toolkit.worker import Worker

log = structlog.get_logger("threadcast.toolkit")

POLL_TIMEOUT = 1.0
PARKED_FROM_HEADER = "x-parked-from"
"""`topic/partition/offset` of a record moved to a retry queue."""
PARKED_ERROR_HEADER = "x-parked-error"
PARKED_ATTEMPTS_HEADER = "x-parked-attempts"


@dataclass(frozen=True, slots=True)
class Item:
    """A polled record with its decoded message and lane key, or the decoding error."""

    record: Record
    message: Any
    key: Hashable
    error: Undecodable | None = None

    @property
    def position(self) -> str:
        return f"{self.record.topic}/{self.record.partition}/{self.record.offset}"

    @property
    def event_id(self) -> str:
        return event_id_of(self.record.headers, self.message, self.position)


class LogWorker(Worker):
    """Reads `topic` as `group` with `handler`, at most `prefetch` units (records, or
    batches) in flight, in order per partition or per `key_of` key."""

    def __init__(
        self,
        handler: Handler,
        log_backend: EventLog,
        queue: WorkQueue,
        *,
        topic: str,
        group: str,
        retry_queue: str,
        codec: Codec,
        prefetch: int,
        batch: int | None,
        key_of: Callable[[Any], Hashable] | None,
        max_attempts: int,
        backoff: Backoff,
        shutdown: Shutdown,
    ) -> None:
        super().__init__(handler, prefetch=prefetch, shutdown=shutdown)
        self.log = log_backend
        self.queue = queue
        self.topic = topic
        self.group = group
        self.retry_queue = retry_queue
        self._codec = codec
        self._batch = batch
        self._key_of = key_of
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._poll_size = prefetch * (batch or 1)
        self._consumer: LogConsumer | None = None
        self._tracker = OffsetTracker()
        self._committing = False
        self._commit_again = False
        self._parked = handler.scope.metrics.parked.labels(handler.scope.service, handler.label)

    @property
    def source(self) -> str:
        return f"log {self.topic} as {self.group}"

    async def _waiting(self) -> int:
        """Records of the topic the group has not committed."""
        ends = await self.log.end_offsets(self.topic)
        committed = await self.log.committed(self.topic, self.group)
        return sum(max(0, end - committed.get(partition, 0)) for partition, end in ends.items())

    def _open(self) -> LogConsumer:
        self._consumer = self.log.consumer(self.topic, self.group)
        self._tracker = OffsetTracker()
        return self._consumer

    async def _consume(self, consumer: LogConsumer) -> None:
        stopping = self._shutdown.stopping_waiter
        while True:
            try:
                records = await until(stopping, consumer.poll(max_records=self._poll_size, timeout=POLL_TIMEOUT))
                self._in.inc(len(records))
                for unit in self._units(records):
                    await until(stopping, self._submit(unit))
            except Stopped:
                return
            await self._commit()

    async def _finished(self, consumer: LogConsumer) -> None:
        await self._commit()
        try:
            await consumer.close()
        except Exception:
            log.exception("closing a log consumer failed", topic=self.topic, group=self.group)

    def _units(self, records: list[Record]) -> Iterator[list[Item]]:
        items = [self._decode(record) for record in records]
        if self._batch is None:
            yield from ([item] for item in items)
            return
        by_partition = sorted(items, key=lambda item: item.record.partition)  # stable: offsets stay in order
        for _, group in itertools.groupby(by_partition, key=lambda item: item.record.partition):
            partition_items = list(group)
            for start in range(0, len(partition_items), self._batch):
                yield partition_items[start : start + self._batch]

    def _decode(self, record: Record) -> Item:
        """Records run in their partition's lane, or in their key's lane with `ordered_by`;
        a record that does not decode takes its partition's lane to be parked."""
        partition_lane = ("partition", record.partition)
        try:
            message = self._codec.decode(record.value)
            key = partition_lane if self._key_of is None else ("key", self._key_of(message))
        except Undecodable as exc:
            return Item(record, None, partition_lane, exc)
        return Item(record, message, key)

    async def _submit(self, unit: list[Item]) -> None:
        for item in unit:
            self._tracker.begin(item.record.partition, item.record.offset)
        await self._lanes.submit(unit[0].key, partial(self._process, unit))

    async def _process(self, unit: list[Item]) -> None:
        try:
            for item in unit:
                if item.error is not None:
                    await self._park(item, item.error.reason, attempts=0)
            decoded = [item for item in unit if item.error is None]
            if decoded:
                await self._handle(decoded)
        except Stopped:
            return  # not finished: the offsets stay uncommitted and the group reads it again
        for item in unit:
            self._tracker.finish(item.record.partition, item.record.offset)
        await self._commit()

    async def _handle(self, items: list[Item]) -> None:
        """Run the handler, retrying in place with backoff; then park the records."""
        for attempt in itertools.count(1):
            result = await self._attempt(items, attempt)
            if result.settled:
                return
            if result.outcome is Outcome.REJECTED or attempt >= self._max_attempts:
                for item in items:
                    await self._park(item, result.error, attempts=attempt)
                return
            self._retries.inc()
            await self._shutdown.sleep(self._backoff.delay(attempt))

    async def _attempt(self, items: list[Item], attempt: int) -> Result:
        if self._batch is not None:
            ctx = self.handler.context(event_id=None, attempt=attempt)
            messages, event_ids = [item.message for item in items], [item.event_id for item in items]
            return await self.handler.run_batch(messages, event_ids, ctx)
        [item] = items
        ctx = self.handler.context(event_id=item.event_id, attempt=attempt, headers=item.record.headers)
        return await self.handler.run(item.message, ctx)

    async def _park(self, item: Item, error: str, *, attempts: int) -> None:
        """Move a record to the retry queue (retrying the publish until it is accepted)."""
        headers = {
            **item.record.headers,
            EVENT_ID_HEADER: item.event_id,
            PARKED_FROM_HEADER: item.position,
            PARKED_ERROR_HEADER: error,
            PARKED_ATTEMPTS_HEADER: str(attempts),
        }
        for attempt in itertools.count(1):
            try:
                await self.queue.publish(self.retry_queue, item.record.value, message_id=item.position, headers=headers)
                break
            except Exception:
                log.exception("could not park a record in the retry queue", record=item.position)
                await self._shutdown.sleep(self._backoff.delay(attempt))
        self._parked.inc()
        log.warning(
            "record parked in the retry queue",
            event_id=item.event_id,
            record=item.position,
            error=error,
            retry_queue=self.retry_queue,
        )

    async def _commit(self) -> None:
        """Commit the finished positions; calls made while a commit runs are folded into one
        more commit after it."""
        if self._committing:
            self._commit_again = True
            return
        self._committing = True
        try:
            self._commit_again = True
            while self._commit_again:
                self._commit_again = False
                positions = self._tracker.committable()
                if positions and self._consumer is not None:
                    await self._consumer.commit(positions)
                    self._tracker.committed(positions)
        except Exception:
            log.exception("commit failed; the records after the last commit may be read again")
        finally:
            self._committing = False

