"""The embedded edge's core: in-memory channels with bounded buffers, fan-out and resume.

Every message gets an opaque edge id `"{boot}:{n}"`: `boot` is random per `Hub` instance and `n`
a hub-wide counter, so one id orders messages across all the channels of a connection and ids
never collide with those of an earlier process. Resuming from an id this hub does not know
(another boot, garbage) or from one that already left the buffer replays everything still
buffered, like Nchan starting at the oldest message left; resuming never raises.

Publishing is synchronous under the hood: a message is appended and handed to every
subscriber's bounded queue without awaiting, so a slow subscriber never blocks a publisher or
the others. A subscriber whose queue overflows is dropped; it reconnects and resumes.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from threadcast.edge.publisher import EdgeError, EdgePublisher


class Message(NamedTuple):
    """One buffered message as subscribers receive it. `time` is the wall-clock publish time."""

    id: str
    channel: str
    data: bytes
    time: float
    content_type: str = ""


class Published(NamedTuple):
    """The outcome of `Hub.put`: the edge id, how many subscribers got it, and whether it was
    a duplicate of a message still buffered (then `id` is the earlier message's id)."""

    id: str
    subscribers: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    messages: int
    subscribers: int
    last_message_id: str | None


@dataclass(frozen=True, slots=True)
class HubStats:
    """Figures for metrics."""

    channels: int
    subscribers: int
    buffered: int
    published: int
    delivered: int
    dropped: int


class _Stored(NamedTuple):
    seq: int
    message_id: str
    message: Message


class _Channel:
    __slots__ = ("buffer", "by_message_id", "subscribers")

    def __init__(self) -> None:
        # A list, not a deque: far smaller when empty (most channels of idle subscribers), and
        # dropping the head of a buffer of a few hundred entries is a short memmove.
        self.buffer: list[_Stored] = []
        self.by_message_id: dict[str, _Stored] = {}
        self.subscribers: set[Subscription] = set()

    def evict_oldest(self) -> None:
        stored = self.buffer.pop(0)
        del self.by_message_id[stored.message_id]

    def after(self, seq: int) -> list[_Stored]:
        """Buffered messages newer than `seq`, oldest first."""
        newer: list[_Stored] = []
        for stored in reversed(self.buffer):
            if stored.seq <= seq:
                break
            newer.append(stored)
        newer.reverse()
        return newer


class Subscription:
    """Messages of some channels, in publish order: first the replay, then live ones.

    Iterate it (`async for message in sub`) or call `get(timeout)`. Iteration ends when the
    subscription is closed: by `close()`, by the hub closing, or because it fell more than
    `max_pending` live messages behind (`dropped` is then true)."""

    __slots__ = ("channels", "dropped", "_hub", "_pending", "_replay_left", "_max_pending", "_waiter", "_closed")

    def __init__(self, hub: Hub, channels: tuple[str, ...], replay: list[Message], max_pending: int) -> None:
        self.channels = channels
        self.dropped = False
        self._hub = hub
        # Created on first use: an empty deque costs more than the rest of an idle subscription.
        self._pending: deque[Message] | None = deque(replay) if replay else None
        self._replay_left = len(replay)  # the head of `_pending` that does not count against the limit
        self._max_pending = max_pending
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def get_nowait(self) -> Message | None:
        """The next message if one is waiting, else None."""
        pending = self._pending
        if not pending:
            return None
        message = pending.popleft()
        if self._replay_left:
            self._replay_left -= 1
        self._hub._delivered += 1
        return message

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message; None after `timeout` seconds without one, or once closed."""
        message = self.get_nowait()
        if message is not None or self._closed:
            return message
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return self.get_nowait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while True:
            message = await self.get()
            if message is not None:
                return message
            if self._closed:
                raise StopAsyncIteration

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending = None
        self._replay_left = 0
        self._hub._detach(self)
        if self._waiter is not None:
            _wake(self._waiter)

    def _deliver(self, message: Message) -> bool:
        """Queue a live message; False when the queue is full (the caller drops us)."""
        pending = self._pending
        if pending is None:
            pending = self._pending = deque()
        elif len(pending) - self._replay_left >= self._max_pending:
            return False
        pending.append(message)
        if self._waiter is not None:
            _wake(self._waiter)
        return True


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Hub(EdgePublisher):
    """In-memory push edge. `buffer_length` messages per channel are kept at most, each for
    `buffer_ttl` seconds; a subscriber may fall `max_pending` live messages behind."""

    def __init__(
        self,
        buffer_length: int = 200,
        buffer_ttl: float = 3600.0,
        *,
        max_pending: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if buffer_length < 1 or buffer_ttl <= 0 or max_pending < 1:
            raise ValueError("buffer_length, buffer_ttl and max_pending must be positive")
        self.buffer_length = buffer_length
        self.buffer_ttl = buffer_ttl
        self.max_pending = max_pending
        self.boot = secrets.token_urlsafe(9)
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        self._subscriptions: set[Subscription] = set()
        self._seq = 0
        self._published = 0
        self._delivered = 0
        self._dropped = 0
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None

    # -- EdgePublisher ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the periodic sweep that frees expired messages of idle channels."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="edge-hub-sweeper")

    async def close(self) -> None:
        """Stop the sweep and end every subscription; later publishes raise `EdgeError`."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for subscription in list(self._subscriptions):
            subscription.close()

    async def ping(self) -> None:
        if self._closed:
            raise EdgeError("the edge hub is closed")

    async def publish(self, channel: str, data: bytes, *, message_id: str) -> None:
        self.put(channel, data, message_id=message_id)

    # -- publishing ---------------------------------------------------------------------------

    def put(self, channel: str, data: bytes, *, message_id: str | None = None, content_type: str = "") -> Published:
        """Append `data` to `channel` and fan it out. A `message_id` still in the channel's
        buffer makes this a no-op (idempotent publish)."""
        if self._closed:
            raise EdgeError("the edge hub is closed")
        message_id = message_id or uuid.uuid4().hex
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        else:
            self._evict_expired(state)
            earlier = state.by_message_id.get(message_id)
            if earlier is not None:
                return Published(earlier.message.id, len(state.subscribers), duplicate=True)
        self._seq += 1
        message = Message(f"{self.boot}:{self._seq}", channel, data, self._clock(), content_type)
        stored = _Stored(self._seq, message_id, message)
        if len(state.buffer) >= self.buffer_length:
            state.evict_oldest()
        state.buffer.append(stored)
        state.by_message_id[message_id] = stored
        self._published += 1
        overflowed = [sub for sub in state.subscribers if not sub._deliver(message)]
        for subscription in overflowed:
            subscription.dropped = True
            self._dropped += 1
            subscription.close()
        return Published(message.id, len(state.subscribers), duplicate=False)

    # -- subscribing --------------------------------------------------------------------------

    def subscribe(
        self, channels: Iterable[str], last_event_id: str | None = None, *, modified_since: float | None = None
    ) -> Subscription:
        """Subscribe to `channels` (order and duplicates do not matter).

        With `last_event_id`, first replay the buffered messages after it in every channel,
        merged in publish order (everything buffered when the id is unknown or too old). With
        `modified_since` (seconds since the epoch, as in HTTP's If-Modified-Since), replay the
        messages published in a later second. With neither, deliver only new messages."""
        if self._closed:
            raise EdgeError("the edge hub is closed")
        names = tuple(dict.fromkeys(channels))
        states = [self._channel_for_subscriber(name) for name in names]
        replay: list[Message] = []
        if last_event_id is not None:
            cursor = self._cursor(last_event_id)
            replay = [s.message for s in heapq.merge(*(state.after(cursor) for state in states))]
        elif modified_since is not None:
            buffered = heapq.merge(*(state.after(0) for state in states))
            replay = [s.message for s in buffered if int(s.message.time) > modified_since]
        subscription = Subscription(self, names, replay, self.max_pending)
        for state in states:
            state.subscribers.add(subscription)
        self._subscriptions.add(subscription)
        return subscription

    def _cursor(self, last_event_id: str) -> int:
        """The counter value an id names; 0 (replay everything) when it is not one of ours."""
        boot, _, counter = last_event_id.strip().partition(":")
        if boot != self.boot or not (0 < len(counter) <= 20 and counter.isascii() and counter.isdigit()):
            return 0
        return int(counter)

    def _channel_for_subscriber(self, name: str) -> _Channel:
        state = self._channels.get(name)
        if state is None:
            state = self._channels[name] = _Channel()
        else:
            self._evict_expired(state)
        return state

    def _detach(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        for name in subscription.channels:
            state = self._channels.get(name)
            if state is None:
                continue
            state.subscribers.discard(subscription)
            if not state.subscribers and not state.buffer:
                del self._channels[name]

    # -- buffers ------------------------------------------------------------------------------

    def configure(self, buffer_length: int, buffer_ttl: float) -> None:
        """Change the buffer length and TTL of every channel now (the live configuration);
        buffers over the new limits lose their oldest messages."""
        if buffer_length < 1 or buffer_ttl <= 0:
            raise ValueError("buffer_length and buffer_ttl must be positive")
        self.buffer_length = buffer_length
        self.buffer_ttl = buffer_ttl
        for state in self._channels.values():
            while len(state.buffer) > buffer_length:
                state.evict_oldest()
        self.sweep()

    def _evict_expired(self, state: _Channel) -> None:
        horizon = self._clock() - self.buffer_ttl
        while state.buffer and state.buffer[0].message.time <= horizon:
            state.evict_oldest()

    def sweep(self) -> None:
        """Drop expired messages everywhere and forget channels left with nothing."""
        for name, state in list(self._channels.items()):
            self._evict_expired(state)
            if not state.buffer and not state.subscribers:
                del self._channels[name]

    async def _sweep_forever(self) -> None:
        interval = min(self.buffer_ttl, 60.0)
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    # -- figures ------------------------------------------------------------------------------

    def channel_info(self, channel: str) -> ChannelInfo | None:
        """Buffer and subscriber counts of a channel, or None when the edge does not know it."""
        state = self._channels.get(channel)
        if state is None:
            return None
        self._evict_expired(state)
        last = state.buffer[-1].message.id if state.buffer else None
        return ChannelInfo(len(state.buffer), len(state.subscribers), last)

    def stats(self) -> HubStats:
        return HubStats(
            channels=len(self._channels),
            subscribers=len(self._subscriptions),
            buffered=sum(len(state.buffer) for state in self._channels.values()),
            published=self._published,
            delivered=self._delivered,
            dropped=self._dropped,
        )
