"""What handlers, stages, timers and hooks reach: `ctx`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, SimpleNamespace
from typing import Any

import structlog

from threadcast.bus.log import EventLog, Message
from threadcast.bus.queue import WorkQueue
from threadcast.config import Settings
from threadcast.coord import Coordinator, LiveConfig, Term
from threadcast.edge.publisher import EdgePublisher
from threadcast.store.db import Database
from threadcast.toolkit.backends import Backends
from threadcast.toolkit.codec import encode
from threadcast.toolkit.inbox import Inbox, once
from threadcast.toolkit.live import LiveView
from threadcast.toolkit.metrics import Metrics

EVENT_ID_HEADER = "event_id"
"""The header carrying a message's stable event id (set by the outbox relay and by `ctx`)."""


@dataclass
class Scope:
    """One service running in a runner: what all its contexts share."""

    service: str
    backends: Backends
    settings: Settings
    metrics: Metrics
    config: Any = None
    state: SimpleNamespace = field(default_factory=SimpleNamespace)
    live: LiveView | None = None


class Context:
    """The context of one handler call (or of a timer run, or a hook).

    - `event_id`, `attempt`, `headers`: of the message being handled (None, 0, {} elsewhere;
      a batch handler's context has no single event id);
    - `settings` (threadcast's), `config` (the service's own), `state` (a namespace shared by
      the service's handlers: startup hooks put clients there);
    - backends: `edge`, `queue`, `log`, `inbox`, `database`, `coord` (BackendMissing if not
      configured); `live`: the live configuration now;
    - `term`: for a leader-only timer, the leadership term it runs in (its `epoch` fences);
    - `logger`: a structlog logger bound with the service, the handler and the event id;
    - producing: `publish` (work queue), `append` (event log), `push` (edge), counted as
      messages out; `once` for idempotent side effects.
    """

    def __init__(
        self,
        scope: Scope,
        handler: str,
        *,
        event_id: str | None = None,
        attempt: int = 0,
        headers: Mapping[str, str] | None = None,
        term: Term | None = None,
    ) -> None:
        self._scope = scope
        self.term = term
        self.service = scope.service
        self.handler = handler
        self.event_id = event_id
        self.attempt = attempt
        self.headers: Mapping[str, str] = MappingProxyType(dict(headers or {}))
        self.logger = structlog.get_logger(scope.service).bind(handler=handler, event_id=event_id)

    @property
    def consumer(self) -> str:
        """This handler's name in the inbox: `<service>.<handler>`."""
        return f"{self.service}.{self.handler}"

    @property
    def settings(self) -> Settings:
        return self._scope.settings

    @property
    def config(self) -> Any:
        return self._scope.config

    @property
    def state(self) -> SimpleNamespace:
        return self._scope.state

    @property
    def edge(self) -> EdgePublisher:
        return self._backend("edge")

    @property
    def queue(self) -> WorkQueue:
        return self._backend("queue")

    @property
    def log(self) -> EventLog:
        return self._backend("log")

    @property
    def inbox(self) -> Inbox:
        return self._backend("inbox")

    @property
    def database(self) -> Database:
        return self._backend("database")

    @property
    def coord(self) -> Coordinator:
        return self._backend("coord")

    @property
    def live(self) -> LiveConfig:
        if self._scope.live is None:
            return LiveConfig.from_settings(self.settings)
        return self._scope.live.current

    async def publish(
        self,
        queue: str,
        message: Any,
        *,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish to a work queue (a Struct or dict as JSON, bytes as they are). The message
        id defaults to the event id being handled, so a redelivered handler republishes the
        same id; the event id travels in the `event_id` header."""
        await self.queue.publish(
            queue, encode(message), message_id=message_id or self._derived_id(), headers=self._headers(headers)
        )
        self._count_out()

    async def append(
        self,
        topic: str,
        message: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Append to the event log; return (partition, offset)."""
        record = Message(value=encode(message), key=key, headers=self._headers(headers))
        [position] = await self.log.append(topic, [record])
        self._count_out()
        return position

    async def push(self, channel: str, data: Any, *, message_id: str | None = None) -> None:
        """Publish to a push-edge channel (raises EdgeError when the edge refuses)."""
        await self.edge.publish(channel, encode(data), message_id=message_id or self._derived_id())
        self._count_out()

    async def once(self, key: str, effect: Callable[[], Awaitable[Any]]) -> bool:
        """Run `effect` once per (handler, event id, key): a redelivered message skips the
        effects that completed before. Returns whether it ran. See `inbox.once` for what
        holds when the process dies between the effect and its record."""
        if self.event_id is None:
            raise RuntimeError("ctx.once needs the event id of a single message")
        return await once(self.inbox, self.consumer, f"{self.event_id}/{key}", effect)

    def _backend(self, name: str) -> Any:
        return self._scope.backends.require(name, f"service {self.service!r}")

    def _derived_id(self) -> str:
        return self.event_id or uuid.uuid4().hex

    def _headers(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        merged = dict(headers or {})
        if self.event_id is not None:
            merged.setdefault(EVENT_ID_HEADER, self.event_id)
        return merged

    def _count_out(self) -> None:
        self._scope.metrics.messages_out.labels(self.service, self.handler).inc()

    def __repr__(self) -> str:
        return f"Context({self.service}.{self.handler}, event_id={self.event_id!r}, attempt={self.attempt})"
