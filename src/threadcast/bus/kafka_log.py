"""The event log on Apache Kafka, through confluent-kafka (librdkafka).

URL: `kafka://HOST:PORT[,HOST:PORT...]` (port 9092 when left out), with optional query
arguments:

- `replication_factor=N`: replicas of the topics `create_topic` makes (default 1);
- `min_insync_replicas=N`: set on those topics (default: the broker's setting);
- `client_id=NAME`: the client id the broker sees in its logs and quotas.

Topics are created with `message.timestamp.type=LogAppendTime`, so a record's timestamp is
the broker's append time, as `Record.timestamp` promises, and `seek_to_timestamp` finds the
records appended at or after a time.

Producer: idempotent (`acks=all`), so a retried send neither duplicates nor reorders a record;
keys go to partitions with librdkafka's `murmur2_random`, the same as Kafka's Java client and
`threadcast.bus.partitioner`. A background thread serves the delivery reports and resolves one
future per message on the event loop. A message the broker does not take within
`MESSAGE_TIMEOUT` seconds (broker down, topic gone) fails its `append` with a `KafkaException`;
librdkafka reconnects by itself.

Consumer: a classic consumer group member with eager rebalancing and no auto commit: offsets
move only by `commit()`. Each consumer runs every librdkafka call on one thread of its own, so
the event loop never blocks and calls on one consumer never overlap; rebalance callbacks run
there too, inside `poll`. When partitions are revoked, the positions of records polled from
them and not yet committed are dropped: whoever takes the partitions reads them again from the
committed offset (at least once).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec, TopicMetadata

from threadcast.bus.factory import BackendURLError
from threadcast.bus.log import EventLog, LogConsumer, Message, Record, UnknownTopicError

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092
MESSAGE_TIMEOUT = 30.0
"""Seconds librdkafka keeps trying to deliver a message before `append` fails."""
REQUEST_TIMEOUT = 30.0
"""Seconds an admin request or a consumer's metadata/offset request may take."""
PING_TIMEOUT = 5.0
POLL_SLICE = 0.2
"""A waiting poll wakes this often to notice that its consumer is closing."""
SEEK_RETRY_PAUSE = 0.01
"""Seconds between attempts to seek a partition whose fetching has not started yet."""
SESSION_TIMEOUT_MS = 6000
"""The broker's smallest allowed session: a dead member's partitions move on quickly."""
HEARTBEAT_INTERVAL_MS = 500
"""Members learn of a rebalance at their next heartbeat, so keep it short."""

_CONNECTION = {
    "reconnect.backoff.ms": 100,
    "reconnect.backoff.max.ms": 2000,
    "socket.keepalive.enable": True,
}

_LOST_COMMIT_ERRORS = frozenset(
    {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID}
)
"""A commit refused because the group moved on: the partitions are read again by their new owner."""

_NOT_READY_ERRORS = frozenset(
    {
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError._NOENT,  # librdkafka's "no leaders found" for a partition
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
    }
)
"""Answers about a partition or a group that is not ready yet (just created, or moving to
another broker): asking again shortly succeeds."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    bootstrap_servers: str
    """`host:port,host:port`, as librdkafka takes it."""
    replication_factor: int = 1
    min_insync_replicas: int | None = None
    client_id: str = "threadcast"


def parse_kafka_url(url: str, *, replication_factor: int = 1, client_id: str = "threadcast") -> KafkaOptions:
    """Read a `kafka://` URL; its query arguments win over the keyword defaults."""
    try:
        parts = urlsplit(url)
    except ValueError as error:  # unbalanced IPv6 brackets
        raise BackendURLError(f"bad Kafka URL {url!r}: {error}") from None
    if parts.scheme != "kafka" or not parts.netloc or parts.path not in ("", "/"):
        raise BackendURLError(f"expected kafka://HOST:PORT[,HOST:PORT...], got {url!r}")
    servers = ",".join(_server(item, url) for item in parts.netloc.split(","))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    replication_factor = _positive_int(query.pop("replication_factor", str(replication_factor)), "replication_factor")
    min_isr = query.pop("min_insync_replicas", None)
    min_insync_replicas = None if min_isr is None else _positive_int(min_isr, "min_insync_replicas")
    client_id = query.pop("client_id", client_id)
    if not client_id:
        raise BackendURLError("client_id must not be empty")
    if query:
        raise BackendURLError(f"unknown Kafka URL arguments {sorted(query)} in {url!r}")
    if min_insync_replicas is not None and min_insync_replicas > replication_factor:
        raise BackendURLError(
            f"min_insync_replicas={min_insync_replicas} exceeds replication_factor={replication_factor}"
        )
    return KafkaOptions(servers, replication_factor, min_insync_replicas, client_id)


_BROKER = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/]+)(?::(?P<port>\d{1,5}))?")
"""`host[:port]`, an IPv6 host in brackets."""


def _server(item: str, url: str) -> str:
    """One broker address of the URL -> `host:port`."""
    match = _BROKER.fullmatch(item)
    port = int(match["port"] or DEFAULT_PORT) if match else 0
    if match is None or not 0 < port < 65536:
        raise BackendURLError(f"bad broker address {item!r} in {url!r}")
    return f"{match['host']}:{port}"


def _positive_int(value: str, name: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise BackendURLError(f"{name}={value!r}: expected a positive integer")
    return int(value)


def _error_code(error: KafkaException) -> int | None:
    inner = error.args[0] if error.args else None
    return inner.code() if isinstance(inner, KafkaError) else None


async def _until_ready(request: Callable[[], Awaitable[T]]) -> T:
    """Run `request` again, with a growing pause, while the broker answers that a partition or
    group is not ready yet; give up after REQUEST_TIMEOUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REQUEST_TIMEOUT
    pause = 0.02
    while True:
        try:
            return await request()
        except KafkaException as error:
            if _error_code(error) not in _NOT_READY_ERRORS or loop.time() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


def _report_error(error: KafkaError) -> None:
    """librdkafka's error callback. It recovers from all but fatal errors by itself, and its
    log (handed to `log`) already tells of each failed connection."""
    if error.fatal():
        log.error("Kafka client fatal error: %s", error)
    else:
        log.debug("Kafka client error: %s", error)


def _to_record(message: KafkaMessage) -> Record:
    key = message.key()
    _, timestamp_ms = message.timestamp()
    return Record(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=None if key is None else key.decode(),
        value=message.value() or b"",
        timestamp=timestamp_ms / 1000,
        headers={name: (value or b"").decode() for name, value in message.headers() or ()},
    )


def _timestamp_ms(timestamp: float) -> int:
    """Seconds -> the first whole millisecond at or after them (a record's own timestamp, read
    back as seconds, gives its own millisecond despite float rounding)."""
    return math.ceil(timestamp * 1000 - 1e-3)


class KafkaLog(EventLog):
    def __init__(self, url: str, *, replication_factor: int = 1, client_id: str = "threadcast") -> None:
        self.options = parse_kafka_url(url, replication_factor=replication_factor, client_id=client_id)
        self._common = {
            "bootstrap.servers": self.options.bootstrap_servers,
            "client.id": self.options.client_id,
            **_CONNECTION,
        }
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None
        self._pump: threading.Thread | None = None
        self._stopping = threading.Event()
        self._partition_counts: dict[str, int] = {}
        self._consumers: set[KafkaConsumer] = set()

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._admin = AdminClient({**self._common, "logger": log})
        self._producer = Producer(
            {
                **self._common,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "linger.ms": 2,
                "message.timeout.ms": int(MESSAGE_TIMEOUT * 1000),
                "error_cb": _report_error,
                "logger": log,
            }
        )
        self._stopping.clear()
        self._pump = threading.Thread(target=self._serve_callbacks, name="kafka-log-callbacks", daemon=True)
        self._pump.start()

    def _serve_callbacks(self) -> None:
        """Run the producer's delivery callbacks, and the producer's and the admin client's
        logs and error callbacks, until `close`."""
        producer, admin = self.producer, self.admin
        while not self._stopping.is_set():
            producer.poll(POLL_SLICE)
            admin.poll(0)

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.close()
        producer, pump = self._producer, self._pump
        if producer is None or pump is None:
            return
        try:
            undelivered = await asyncio.to_thread(producer.flush, MESSAGE_TIMEOUT)
            if undelivered:
                log.warning("closing the Kafka producer with %d messages undelivered", undelivered)
        finally:
            self._stopping.set()
            await asyncio.to_thread(pump.join)
            self._producer = self._pump = self._admin = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the Kafka event log is not started")
        return self._producer

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            raise RuntimeError("the Kafka event log is not started")
        return self._admin

    async def ping(self) -> None:
        await asyncio.to_thread(self.admin.list_topics, timeout=PING_TIMEOUT)

    async def create_topic(self, topic: str, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"a topic has at least one partition, got {partitions}")
        config = {"message.timestamp.type": "LogAppendTime"}
        if self.options.min_insync_replicas is not None:
            config["min.insync.replicas"] = str(self.options.min_insync_replicas)
        new_topic = NewTopic(
            topic, num_partitions=partitions, replication_factor=self.options.replication_factor, config=config
        )
        futures = self.admin.create_topics(
            [new_topic], operation_timeout=REQUEST_TIMEOUT, request_timeout=REQUEST_TIMEOUT
        )
        try:
            await asyncio.wrap_future(futures[topic])
        except KafkaException as error:
            if _error_code(error) != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            return
        await _until_ready(lambda: self._require_leaders(topic))
        self._partition_counts[topic] = partitions

    async def _require_leaders(self, topic: str) -> None:
        """Raise a not-ready error until the metadata shows a leader for every partition."""
        found = await self._describe(topic)
        if found is None or any(partition.leader < 0 for partition in found.partitions.values()):
            raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE, f"{topic} has no leaders yet"))

    async def _describe(self, topic: str) -> TopicMetadata | None:
        """The broker's metadata of the topic; None when it does not know the topic."""
        metadata = await asyncio.to_thread(self.admin.list_topics, topic, timeout=REQUEST_TIMEOUT)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        if found.error is not None:
            raise KafkaException(found.error)
        return found

    async def partitions(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            found = await self._describe(topic)
            if found is None:
                raise UnknownTopicError(topic)
            count = self._partition_counts[topic] = len(found.partitions)
        return count

    async def append(self, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        if not messages:
            return []
        await self.partitions(topic)  # an unknown topic fails now, not after the message timeout
        loop = asyncio.get_running_loop()
        deliveries: list[asyncio.Future[tuple[int, int]]] = []
        for message in messages:
            delivery = loop.create_future()
            await self._produce(topic, message, _delivery_callback(loop, delivery))
            deliveries.append(delivery)
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    async def _produce(self, topic: str, message: Message, on_delivery: Callable[[Any, Any], None]) -> None:
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=message.value,
                    key=None if message.key is None else message.key.encode(),
                    headers=[(name, value.encode()) for name, value in message.headers.items()],
                    on_delivery=on_delivery,
                )
                return
            except BufferError:  # librdkafka's local queue is full: wait for deliveries
                await asyncio.to_thread(self.producer.poll, POLL_SLICE)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        count = await self.partitions(topic)
        return await _until_ready(lambda: self._end_offsets(topic, count))

    async def _end_offsets(self, topic: str, count: int) -> dict[int, int]:
        futures = self.admin.list_offsets(
            {TopicPartition(topic, partition): OffsetSpec.latest() for partition in range(count)},
            request_timeout=REQUEST_TIMEOUT,
        )
        ends = {part.partition: (await asyncio.wrap_future(future)).offset for part, future in futures.items()}
        return dict(sorted(ends.items()))

    async def committed(self, topic: str, group: str) -> dict[int, int]:
        count = await self.partitions(topic)
        return await _until_ready(lambda: self._committed(topic, group, count))

    async def _committed(self, topic: str, group: str, count: int) -> dict[int, int]:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(count)])
        futures = self.admin.list_consumer_group_offsets([request], request_timeout=REQUEST_TIMEOUT)
        answer = await asyncio.wrap_future(futures[group])
        return {part.partition: max(part.offset, 0) for part in sorted(answer.topic_partitions)}

    def consumer(self, topic: str, group: str) -> KafkaConsumer:
        consumer = KafkaConsumer(
            self,
            topic,
            {
                **self._common,
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                "partition.assignment.strategy": "range",  # eager: each assignment is the whole set
                "error_cb": _report_error,
                "logger": log,
            },
        )
        self._consumers.add(consumer)
        return consumer

    def discard_consumer(self, consumer: KafkaConsumer) -> None:
        """Called by a consumer that closed."""
        self._consumers.discard(consumer)


def _delivery_callback(
    loop: asyncio.AbstractEventLoop, delivery: asyncio.Future[tuple[int, int]]
) -> Callable[[Any, Any], None]:
    """librdkafka's delivery report for one message (on the pump thread) -> its future."""

    def settle(error: KafkaError | None, partition: int, offset: int) -> None:
        if delivery.done():
            return
        if error is not None:
            delivery.set_exception(KafkaException(error))
        else:
            delivery.set_result((partition, offset))

    def report(error: KafkaError | None, message: KafkaMessage) -> None:
        try:
            loop.call_soon_threadsafe(settle, error, message.partition(), message.offset())
        except RuntimeError:  # the loop closed while the message was in flight
            log.warning("delivery report after the event loop closed: %s", error or "delivered")

    return report


class KafkaConsumer(LogConsumer):
    def __init__(self, log: KafkaLog, topic: str, config: dict[str, Any]) -> None:
        self._log = log
        self.topic = topic
        self.group: str = config["group.id"]
        self._consumer = Consumer(config)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-consumer-{self.group}")
        self._subscribed = False
        self._closing = threading.Event()
        self._assigned: frozenset[int] = frozenset()
        self._polled: dict[int, int] = {}
        """Partition -> offset after the last record returned and not yet committed. Only
        touched on the consumer's thread."""

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._closing.is_set():
            raise RuntimeError("the consumer is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def assignment(self) -> set[int]:
        return set(self._assigned)

    # --- on the consumer's thread ------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = frozenset(part.partition for part in partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {part.partition for part in partitions}
        self._assigned = self._assigned - revoked
        for partition in revoked:
            self._polled.pop(partition, None)

    def _poll(self, max_records: int, timeout: float) -> list[Record]:
        if not self._subscribed:
            self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._subscribed = True
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            # poll() returns at the first message; consume() then takes what is already fetched.
            first = self._consumer.poll(max(0.0, min(remaining, POLL_SLICE)))
            batch = [] if first is None else [first]
            if first is not None and max_records > 1:
                batch += self._consumer.consume(max_records - 1, 0)
            records = self._accept(batch)
            if records or remaining <= 0 or self._closing.is_set():
                return records

    def _accept(self, batch: list[KafkaMessage]) -> list[Record]:
        """The records of a batch, their positions noted; errors raised when fatal, else logged
        (librdkafka recovers from them)."""
        records = []
        for message in batch:
            error = message.error()
            if error is None:
                records.append(_to_record(message))
            elif error.fatal():
                raise KafkaException(error)
            else:
                log.warning("Kafka consumer of %s (group %s): %s", self.topic, self.group, error)
        for record in records:
            self._polled[record.partition] = record.offset + 1
        return records

    def _commit(self, offsets: Mapping[int, int] | None) -> None:
        to_commit = dict(self._polled if offsets is None else offsets)
        if not to_commit:
            return
        parts = [TopicPartition(self.topic, partition, offset) for partition, offset in sorted(to_commit.items())]
        try:
            self._consumer.commit(offsets=parts, asynchronous=False)
        except KafkaException as error:
            if _error_code(error) not in _LOST_COMMIT_ERRORS:
                raise
            log.warning("commit of %s for group %s refused, the group rebalanced: %s", self.topic, self.group, error)
            return
        for partition, offset in to_commit.items():
            if self._polled.get(partition) == offset:
                del self._polled[partition]

    def _seek(self, positions: Mapping[int, int]) -> None:
        deadline = time.monotonic() + REQUEST_TIMEOUT
        for partition, offset in positions.items():
            if partition not in self._assigned:
                continue
            while True:
                try:
                    self._consumer.seek(TopicPartition(self.topic, partition, offset))
                    break
                except KafkaException as error:
                    # Just assigned: librdkafka refuses to seek until it has fetched the committed
                    # offset and started fetching, which its own threads do within moments.
                    if _error_code(error) != KafkaError._STATE or time.monotonic() > deadline:
                        raise
                time.sleep(SEEK_RETRY_PAUSE)

    def _seek_to_time(self, timestamp_ms: int) -> None:
        """Seek each assigned partition to its first offset at or after the time, else to its end."""
        wanted = [TopicPartition(self.topic, partition, timestamp_ms) for partition in sorted(self._assigned)]
        found = {}
        for part in self._consumer.offsets_for_times(wanted, timeout=REQUEST_TIMEOUT) if wanted else []:
            if part.error is not None:
                raise KafkaException(part.error)
            found[part.partition] = part.offset if part.offset >= 0 else self._end_offset(part.partition)
        self._seek(found)

    def _end_offset(self, partition: int) -> int:
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=REQUEST_TIMEOUT
        )
        return high

    def _lag(self) -> dict[int, int]:
        parts = [TopicPartition(self.topic, partition) for partition in sorted(self._assigned)]
        committed = self._consumer.committed(parts, timeout=REQUEST_TIMEOUT) if parts else []
        return {
            part.partition: self._end_offset(part.partition) - max(part.offset, 0) for part in committed
        }

    # --- LogConsumer ----------------------------------------------------------------------

    async def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        return await self._run(self._poll, max_records, timeout)

    async def commit(self, offsets: Mapping[int, int] | None = None) -> None:
        await self._run(self._commit, offsets)

    async def seek(self, partition: int, offset: int) -> None:
        if partition not in self._assigned:
            raise ValueError(f"partition {partition} of {self.topic} is not assigned to this consumer")
        if offset < 0:
            raise ValueError(f"offsets start at 0, got {offset}")
        await self._run(self._seek, {partition: offset})

    async def seek_to_timestamp(self, timestamp: float) -> None:
        await self._run(self._seek_to_time, _timestamp_ms(timestamp))

    async def lag(self) -> dict[int, int]:
        return await self._run(self._lag)

    async def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._log.discard_consumer(self)
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._consumer.close)
        finally:
            self._thread.shutdown(wait=False)
            self._assigned = frozenset()
