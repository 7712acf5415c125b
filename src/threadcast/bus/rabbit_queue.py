"""The work queue on RabbitMQ (aio-pika).

Layout in the broker, for a queue declared as `name`:

- `name`: durable queue the consumers read (classic, or quorum with `?quorum=1`);
- `name.retry.<ms>`: one durable queue per retry delay, holding nacked messages for `<ms>`
  milliseconds (`x-message-ttl`) before the broker dead-letters them back to `name` through the
  default exchange: delayed retries without any plugin;
- `name.dead`: durable queue of dead letters, read by `dead_letters` without removing them.

Messages are persistent and every publish waits for the broker's confirm. The attempt number
travels in an internal header; `nack` publishes the next attempt (to a retry queue, or to
`name.dead` once the attempts are used up) and only then acks the delivery, so a crash in
between duplicates a message but never loses it. Unacked deliveries of a consumer whose
channel closes (`close()`, a crash, a lost connection) go back to the queue: the broker does
that, and their attempt number stays as it was (unlike the embedded queue, which counts a
delivery handed out and never settled).

URL: `amqp://USER:PASS@HOST:PORT/VHOST` with optional query arguments, all others are passed
to aio-pika (`heartbeat`, `reconnect_interval`, ...):

- `quorum=1`: quorum queues (replicated; needs RabbitMQ 3.10 or newer for the retry queues);
- `retry_delays=0.1,1,5,25,125`: the retry delays in seconds; a nack waits for the smallest
  one at least as long as it asked for (the longest when it asked for more);
- `timeout=30`: seconds an operation may wait for the broker, reconnection included, before
  it raises `BrokerUnavailable`.

Using a queue that was never declared (publish, consume, depth, dead letters) raises
`UnknownQueueError`, as the embedded backend does.

`QueueSpec.max_attempts` is kept by the process that declared the queue; a process that
consumes a queue it did not declare uses the default of `QueueSpec`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPConnectionError, ChannelInvalidStateError, ChannelNotFoundEntity, PublishError

from threadcast.bus.factory import BackendURLError
from threadcast.bus.queue import DeadLetter, Delivery, QueueConsumer, QueueSpec, WorkQueue
from threadcast.bus.queue import UnknownQueueError

log = logging.getLogger(__name__)

DEFAULT_RETRY_DELAYS = (0.1, 1.0, 5.0, 25.0, 125.0)
DEFAULT_TIMEOUT = 30.0
DEFAULT_RECONNECT_INTERVAL = "1"
"""aio-pika waits 5 s between reconnection attempts unless the URL says otherwise."""

ATTEMPT_HEADER = "x-threadcast-attempt"
ERROR_HEADER = "x-threadcast-error"
DEAD_AT_HEADER = "x-threadcast-dead-at"
_INTERNAL_HEADERS = frozenset({ATTEMPT_HEADER, ERROR_HEADER, DEAD_AT_HEADER, "x-death", "x-delivery-count"})
_INTERNAL_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")
"""Ours, and those the broker adds when it dead-letters or redelivers a message."""

_TRANSIENT_ERRORS = (AMQPConnectionError, ChannelInvalidStateError, ConnectionError)
"""Errors of a lost connection or channel: worth retrying once aio-pika has reconnected."""


class BrokerUnavailable(ConnectionError):
    """RabbitMQ did not answer within the configured timeout."""


@dataclass(frozen=True, slots=True)
class RabbitOptions:
    amqp_url: str
    """The URL handed to aio-pika: the given one without threadcast's own query arguments."""
    quorum: bool = False
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    timeout: float = DEFAULT_TIMEOUT


def parse_rabbit_url(url: str) -> RabbitOptions:
    """Split an `amqp://` or `amqps://` URL into aio-pika's URL and the queue options."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise BackendURLError(f"expected amqp://USER:PASS@HOST:PORT/VHOST, got {url!r}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    quorum = _parse_flag(query.pop("quorum", "0"), "quorum")
    retry_delays = _parse_delays(query.pop("retry_delays", None))
    timeout = _parse_seconds(query.pop("timeout", str(DEFAULT_TIMEOUT)), "timeout")
    query.setdefault("reconnect_interval", DEFAULT_RECONNECT_INTERVAL)
    amqp_url = urlunsplit(parts._replace(query=urlencode(query)))
    return RabbitOptions(amqp_url=amqp_url, quorum=quorum, retry_delays=retry_delays, timeout=timeout)


def _parse_flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no", ""):
        return False
    raise BackendURLError(f"{name}={value!r}: expected 1 or 0")


def _parse_seconds(value: str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise BackendURLError(f"{name}={value!r}: expected seconds") from None
    if not seconds > 0:
        raise BackendURLError(f"{name}={value!r}: must be positive")
    return seconds


def _parse_delays(value: str | None) -> tuple[float, ...]:
    if value is None:
        return DEFAULT_RETRY_DELAYS
    delays = tuple(_parse_seconds(item, "retry_delays") for item in value.split(","))
    if list(delays) != sorted(set(delays)):
        raise BackendURLError(f"retry_delays={value!r}: expected increasing delays")
    if len({delay_ms(delay) for delay in delays}) != len(delays):
        raise BackendURLError(f"retry_delays={value!r}: delays must differ by a millisecond at least")
    return delays


def delay_ms(delay: float) -> int:
    return max(1, round(delay * 1000))


def dead_queue_name(queue: str) -> str:
    return f"{queue}.dead"


def retry_queue_name(queue: str, delay: float) -> str:
    return f"{queue}.retry.{delay_ms(delay)}"


def retry_bucket(delays: tuple[float, ...], delay: float) -> float | None:
    """The retry delay a nack asking for `delay` gets: None (straight back) for no delay."""
    if delay <= 0:
        return None
    return next((bucket for bucket in delays if bucket >= delay), delays[-1])


def user_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The headers as the publisher gave them: internal and broker headers removed."""
    return {
        name: value.decode() if isinstance(value, bytes) else str(value)
        for name, value in (headers or {}).items()
        if name not in _INTERNAL_HEADERS and not name.startswith(_INTERNAL_HEADER_PREFIXES)
    }


def dead_letter_from(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    return DeadLetter(
        message_id=message.message_id or "",
        body=message.body,
        headers=user_headers(headers),
        attempts=int(headers.get(ATTEMPT_HEADER, 1)),
        error=str(headers.get(ERROR_HEADER, "")),
        dead_at=float(headers.get(DEAD_AT_HEADER, 0.0)),
    )


class RabbitQueue(WorkQueue):
    def __init__(self, url: str) -> None:
        self._options = parse_rabbit_url(url)
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._max_attempts: dict[str, int] = {}
        self._consumers: set[RabbitConsumer] = set()

    async def start(self) -> None:
        if self._connection is not None:
            return
        self._connection = await aio_pika.connect_robust(self._options.amqp_url, timeout=self._options.timeout)
        self._publisher = await self._connection.channel(publisher_confirms=True, on_return_raises=True)

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.close()
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._publisher = None

    async def ping(self) -> None:
        if not self._live_connection().connected.is_set():
            raise BrokerUnavailable("not connected to RabbitMQ (reconnecting)")
        async with self._channel():
            pass

    async def declare(self, spec: QueueSpec) -> None:
        if spec.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {spec.max_attempts}")
        kind = {"x-queue-type": "quorum"} if self._options.quorum else {}
        # Quorum queues dead-letter expired messages at most once unless told otherwise.
        expiry = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"} if self._options.quorum else {}
        async with self._channel() as channel:
            await channel.declare_queue(spec.name, durable=True, arguments=kind)
            await channel.declare_queue(dead_queue_name(spec.name), durable=True, arguments=kind)
            for delay in self._options.retry_delays:
                await channel.declare_queue(
                    retry_queue_name(spec.name, delay),
                    durable=True,
                    arguments={
                        **kind,
                        **expiry,
                        "x-message-ttl": delay_ms(delay),
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": spec.name,
                    },
                )
        self._max_attempts[spec.name] = spec.max_attempts

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        await self._send(queue, body, message_id, dict(headers or {}))

    def consume(self, queue: str, prefetch: int = 32) -> QueueConsumer:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        consumer = RabbitConsumer(self, queue, prefetch)
        self._consumers.add(consumer)
        return consumer

    async def depth(self, queue: str) -> int:
        names = [queue, *(retry_queue_name(queue, delay) for delay in self._options.retry_delays)]
        async with self._channel() as channel:
            total = 0
            for name in names:
                declared = await channel.declare_queue(name, passive=True)
                total += declared.declaration_result.message_count or 0
            return total

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        # Read without ack: closing the channel gives every message back to the queue.
        async with self._channel() as channel:
            dead = await channel.declare_queue(dead_queue_name(queue), passive=True)
            letters: list[DeadLetter] = []
            while len(letters) < limit and (message := await dead.get(no_ack=False, fail=False)):
                letters.append(dead_letter_from(message))
            return letters

    async def replay_dead_letters(self, queue: str, message_ids: list[str] | None = None) -> int:
        wanted = None if message_ids is None else set(message_ids)
        replayed = 0
        # Messages left unacked (not wanted) go back to the dead-letter queue when the channel closes.
        async with self._channel(bounded=False) as channel:
            dead = await channel.declare_queue(dead_queue_name(queue), passive=True, timeout=self._options.timeout)
            while message := await dead.get(no_ack=False, fail=False, timeout=self._options.timeout):
                if wanted is not None and message.message_id not in wanted:
                    continue
                await self._send(queue, message.body, message.message_id or "", user_headers(message.headers))
                await message.ack()
                replayed += 1
        return replayed

    async def purge_dead_letters(self, queue: str) -> int:
        async with self._channel() as channel:
            dead = await channel.declare_queue(dead_queue_name(queue), passive=True)
            purged = await dead.purge()
            return purged.message_count or 0

    async def dead_letter_count(self, queue: str) -> int:
        async with self._channel() as channel:
            dead = await channel.declare_queue(dead_queue_name(queue), passive=True)
            return dead.declaration_result.message_count or 0

    async def expire_dead_letters(self, queue: str, dead_before: float) -> int:
        expired = 0
        # The queue holds dead letters in the order they died: take from the head while they are
        # old enough; the first younger one is left unacked and goes back when the channel closes.
        async with self._channel(bounded=False) as channel:
            dead = await channel.declare_queue(dead_queue_name(queue), passive=True, timeout=self._options.timeout)
            while message := await dead.get(no_ack=False, fail=False, timeout=self._options.timeout):
                if dead_letter_from(message).dead_at >= dead_before:
                    break
                await message.ack()
                expired += 1
        return expired

    # -- used by deliveries and consumers ----------------------------------------------------

    def _live_connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("RabbitQueue is not started")
        return self._connection

    @asynccontextmanager
    async def _channel(self, *, bounded: bool = True) -> AsyncIterator[AbstractChannel]:
        """A short-lived plain channel for one operation: a broker error (a missing queue)
        closes it without disturbing the publisher or the consumers. The operation must end
        within the timeout unless `bounded` is False (then each of its steps must)."""
        connection = self._live_connection()
        async with self._deadline("open a channel"):
            await connection.ready()
            channel = aio_pika.Channel(connection, publisher_confirms=False)
            await channel.initialize()
        try:
            with _unknown_queue_error():
                if bounded:
                    async with self._deadline("answer"):
                        yield channel
                else:
                    yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    @asynccontextmanager
    async def _deadline(self, what: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._options.timeout):
                yield
        except TimeoutError as exc:
            raise BrokerUnavailable(f"RabbitMQ did not {what} within {self._options.timeout:g}s") from exc

    async def _send(self, routing_key: str, body: bytes, message_id: str, headers: dict[str, Any]) -> None:
        """Publish persistently through the default exchange and return once the broker
        confirmed; after a lost connection, publish again once aio-pika has reconnected (a
        duplicate at worst), until the timeout."""
        publisher = self._publisher
        if publisher is None:
            raise RuntimeError("RabbitQueue is not started")
        message = aio_pika.Message(
            body,
            message_id=message_id,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        async with self._deadline(f"confirm a publish to {routing_key!r}"):
            while True:
                try:
                    await publisher.default_exchange.publish(message, routing_key=routing_key, mandatory=True)
                    return
                except PublishError as exc:  # returned: the default exchange found no such queue
                    raise UnknownQueueError(f"work queue {routing_key!r} was never declared") from exc
                except _TRANSIENT_ERRORS as exc:
                    log.warning("publish to %r failed (%r); retrying after reconnection", routing_key, exc)
                    await asyncio.sleep(0.1)
                    await publisher.ready()

    def _max_attempts_of(self, queue: str) -> int:
        return self._max_attempts.get(queue, QueueSpec(queue).max_attempts)

    async def _retry_later(self, delivery: RabbitDelivery, delay: float) -> None:
        bucket = retry_bucket(self._options.retry_delays, delay)
        target = delivery.queue if bucket is None else retry_queue_name(delivery.queue, bucket)
        headers = {**delivery.headers, ATTEMPT_HEADER: delivery.attempt + 1}
        await self._send(target, delivery.body, delivery.message_id, headers)

    async def _bury(self, delivery: RabbitDelivery, error: str) -> None:
        headers = {
            **delivery.headers,
            ATTEMPT_HEADER: delivery.attempt,
            ERROR_HEADER: error,
            DEAD_AT_HEADER: repr(time.time()),  # AMQP floats are single precision
        }
        await self._send(dead_queue_name(delivery.queue), delivery.body, delivery.message_id, headers)

    def _forget(self, consumer: RabbitConsumer) -> None:
        self._consumers.discard(consumer)


@contextmanager
def _unknown_queue_error() -> Iterator[None]:
    """A passive declaration of a missing queue fails with NOT_FOUND: say which queue."""
    try:
        yield
    except ChannelNotFoundEntity as exc:
        raise UnknownQueueError(f"work queue missing: {exc}") from exc


async def _settle(message: AbstractIncomingMessage) -> None:
    """Ack; a delivery whose channel died with the connection is already back in its queue."""
    try:
        await message.ack()
    except _TRANSIENT_ERRORS as exc:
        log.warning("could not ack message %s (%r); the broker delivers it again", message.message_id, exc)


class RabbitDelivery(Delivery):
    def __init__(self, owner: RabbitQueue, queue: str, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        self.queue = queue
        self.message_id = message.message_id or ""
        self.body = message.body
        self.headers = user_headers(headers)
        self.attempt = int(headers.get(ATTEMPT_HEADER, 1))
        self._owner = owner
        self._message = message
        self._settled = False

    async def ack(self) -> None:
        self._check_unsettled()
        await _settle(self._message)
        self._settled = True

    async def nack(self, error: str, delay: float = 0.0) -> None:
        self._check_unsettled()
        if self.attempt >= self._owner._max_attempts_of(self.queue):
            await self._owner._bury(self, error)
        else:
            await self._owner._retry_later(self, delay)
        await _settle(self._message)
        self._settled = True

    async def reject(self, reason: str) -> None:
        self._check_unsettled()
        await self._owner._bury(self, reason)
        await _settle(self._message)
        self._settled = True

    def _check_unsettled(self) -> None:
        if self._settled:
            raise RuntimeError(f"message {self.message_id!r} was already acked, nacked or rejected")


class RabbitConsumer(QueueConsumer):
    """Deliveries of one queue on a channel of its own, at most `prefetch` unacked. The channel
    is robust: after a broker restart it is reopened and the consumer registered again."""

    def __init__(self, owner: RabbitQueue, queue: str, prefetch: int) -> None:
        self._owner = owner
        self._queue = queue
        self._prefetch = prefetch
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._channel: AbstractRobustChannel | None = None
        self._subscription: tuple[AbstractQueue, str] | None = None
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        if self._channel is None and not self._closed:
            await self._subscribe()
        while (message := await self._inbox.get()) is not None:
            if self._channel_lost(message):
                continue  # its channel died with the connection: the broker delivers it again
            yield RabbitDelivery(self._owner, self._queue, message)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner._forget(self)
        self._inbox.put_nowait(None)
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        """Cancel the consumer and close its channel: the broker takes back what is unacked."""
        channel, self._channel = self._channel, None
        if channel is None:
            return
        try:
            async with self._owner._deadline("close a consumer"):
                if self._subscription is not None:
                    amqp_queue, tag = self._subscription
                    await amqp_queue.cancel(tag)
                await channel.close()
        except (*_TRANSIENT_ERRORS, BrokerUnavailable) as exc:
            log.warning("closing the consumer of %s: %s", self._queue, exc)

    async def _subscribe(self) -> None:
        connection = self._owner._live_connection()
        async with self._owner._deadline(f"start a consumer on {self._queue!r}"):
            channel = await connection.channel(publisher_confirms=False)
            try:
                await channel.set_qos(prefetch_count=self._prefetch)
                with _unknown_queue_error():
                    amqp_queue = await channel.get_queue(self._queue, ensure=True)
                tag = await amqp_queue.consume(self._receive)
            except BaseException:
                await channel.close()
                raise
        self._channel = channel
        self._subscription = (amqp_queue, tag)
        if self._closed:  # closed while subscribing
            await self._unsubscribe()

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    @staticmethod
    def _channel_lost(message: AbstractIncomingMessage) -> bool:
        try:
            message.channel
        except ChannelInvalidStateError:
            return True
        return False
