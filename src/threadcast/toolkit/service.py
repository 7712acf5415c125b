"""Declaring a service: its queue consumers, log subscribers, timers and hooks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from threadcast.config import Settings
from threadcast.toolkit.backoff import Backoff
from threadcast.toolkit.callables import Call, callable_name
from threadcast.toolkit.errors import Undecodable

F = TypeVar("F", bound=Callable[..., Any])
OrderKey = str | Callable[[Any], Hashable] | None


@dataclass(frozen=True, slots=True)
class Setting:
    """A field of threadcast's `Settings`, read when the service starts; see `setting`."""

    field: str

    def resolve(self, settings: Settings) -> Any:
        return getattr(settings, self.field)

    def __repr__(self) -> str:
        return f"setting({self.field!r})"


def setting(field: str) -> Setting:
    """Use a configured value in a declaration: `@svc.consumer(queue=setting("format_queue"))`."""
    if field not in Settings.model_fields:
        raise ValueError(f"Settings has no field {field!r}")
    return Setting(field)


def _resolved(spec: Any, settings: Settings) -> Any:
    values = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return dataclasses.replace(
        spec, **{name: value.resolve(settings) for name, value in values.items() if isinstance(value, Setting)}
    )


def _require_positive(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, Setting) and value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def key_function(ordered_by: OrderKey) -> Callable[[Any], Hashable] | None:
    """`ordered_by` as a function of the decoded message: an attribute (or mapping key) name,
    or a function. A message without a key is as bad as one that does not decode: the
    function raises `Undecodable`."""
    if ordered_by is None:
        return None

    def read(message: Any) -> Hashable:
        if callable(ordered_by):
            return ordered_by(message)
        if isinstance(message, Mapping):
            return message[ordered_by]
        return getattr(message, ordered_by)

    def key_of(message: Any) -> Hashable:
        try:
            return read(message)
        except Exception as exc:
            raise Undecodable(f"no ordering key {_order_name(ordered_by)!r} in the message: {exc!r}") from exc

    return key_of


@dataclass(frozen=True)
class ConsumerSpec:
    """A handler of a work queue's messages (competing consumers)."""

    name: str
    handler: Callable[..., Any]
    queue: str | Setting
    model: Any = None
    prefetch: int | Setting = 32
    ordered_by: OrderKey = None
    max_attempts: int | Setting = 5
    backoff: Backoff = Backoff()
    idempotent: bool = True

    def describe(self) -> str:
        return (
            f"consumer {self.name}: queue {self.queue} "
            f"(prefetch {self.prefetch}, max_attempts {self.max_attempts}, ordered_by {_order_name(self.ordered_by)})"
        )


@dataclass(frozen=True)
class SubscriberSpec:
    """A handler of an event-log topic, read as a consumer group."""

    name: str
    handler: Callable[..., Any]
    topic: str | Setting
    group: str | Setting
    model: Any = None
    batch: int | None = None
    prefetch: int | Setting = 16
    ordered_by: OrderKey = None
    max_attempts: int | Setting = 3
    backoff: Backoff = Backoff()
    idempotent: bool = True
    retry_queue: str | Setting | None = None

    @property
    def retry_queue_name(self) -> str:
        """Where records that keep failing go: `<topic>.<group>.retry` unless named."""
        return str(self.retry_queue or f"{self.topic}.{self.group}.retry")

    def describe(self) -> str:
        order = _order_name(self.ordered_by) or "partition"
        shape = f"batches of {self.batch}" if self.batch else f"ordered_by {order}"
        return (
            f"subscriber {self.name}: topic {self.topic} group {self.group} "
            f"(prefetch {self.prefetch}, max_attempts {self.max_attempts}, {shape}, "
            f"retry queue {self.retry_queue_name})"
        )


@dataclass(frozen=True)
class TimerSpec:
    name: str
    handler: Callable[..., Any]
    every: float | Setting
    run_at_start: bool = False
    leader: str | None = None
    """The duty: run only while this process is its elected leader."""

    def describe(self) -> str:
        only = f" while leader of {self.leader!r}" if self.leader else ""
        return f"timer {self.name}: every {self.every}s{only}"


Endpoint = ConsumerSpec | SubscriberSpec | TimerSpec


def _order_name(ordered_by: OrderKey) -> str | None:
    return ordered_by if ordered_by is None or isinstance(ordered_by, str) else callable_name(ordered_by)


class Service:
    """A named set of handlers that a `Runner` runs together.

        svc = Service("formatter")

        @svc.consumer(queue="realtime.format", model=Event, ordered_by="thread_id")
        async def format_event(event: Event, ctx: Context) -> None: ...

    Decorators return the function unchanged, so it stays a plain function to test.
    `config` is a type (or factory) called when the service starts, typically a
    pydantic-settings class reading the environment; handlers find the result in `ctx.config`
    (a runner can be given ready-made configs instead).
    """

    def __init__(self, name: str, *, config: Callable[[], Any] | None = None, description: str = "") -> None:
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"invalid service name {name!r}")
        self.name = name
        self.config = config
        self.description = description
        self.endpoints: list[Endpoint] = []
        self.startup_hooks: list[Call] = []
        self.shutdown_hooks: list[Call] = []

    def consumer(
        self,
        queue: str | Setting,
        *,
        model: Any = None,
        prefetch: int | Setting = 32,
        ordered_by: OrderKey = None,
        max_attempts: int | Setting = 5,
        backoff: Backoff | None = None,
        idempotent: bool = True,
        name: str | None = None,
    ) -> Callable[[F], F]:
        """Handle the messages of work queue `queue`.

        Up to `prefetch` messages are handled at once; with `ordered_by` (a model attribute
        name, or a function of the message) two messages of one key never run at the same
        time in this process. A message is acked when the handler returns. When it raises,
        the message is retried after an exponential backoff with full jitter, and
        dead-lettered (with the error and the attempt count) after `max_attempts`; raising
        `Reject`, or a body that does not decode into `model`, dead-letters it at once. With
        `idempotent` (and an inbox), a message whose event id was processed is skipped.
        """
        _require_positive(prefetch=prefetch, max_attempts=max_attempts)
        _check_order(ordered_by, model)

        def declare(handler: F) -> F:
            self._add(
                ConsumerSpec(
                    name=name or callable_name(handler),
                    handler=handler,
                    queue=queue,
                    model=model,
                    prefetch=prefetch,
                    ordered_by=ordered_by,
                    max_attempts=max_attempts,
                    backoff=backoff or Backoff(),
                    idempotent=idempotent,
                )
            )
            return handler

        return declare

    def subscriber(
        self,
        topic: str | Setting,
        group: str | Setting,
        *,
        model: Any = None,
        batch: int | None = None,
        prefetch: int | Setting = 16,
        ordered_by: OrderKey = None,
        max_attempts: int | Setting = 3,
        backoff: Backoff | None = None,
        idempotent: bool = True,
        retry_queue: str | Setting | None = None,
        name: str | None = None,
    ) -> Callable[[F], F]:
        """Handle the records of event-log `topic`, reading as consumer group `group`.

        Records of one partition are handled in order; with `ordered_by`, only records of the
        same key are (records of other keys run in parallel, up to `prefetch` at once). With
        `batch`, the handler gets lists of up to `batch` consecutive records of a partition.
        Offsets are committed only after the handler returned (consume-process-produce). A
        failing record is retried in place `max_attempts` times with backoff; then it (and an
        undecodable or rejected record at once) moves to the retry queue, where the work-queue
        rules apply, so the partition moves on.
        """
        _require_positive(prefetch=prefetch, max_attempts=max_attempts, batch=batch)
        _check_order(ordered_by, model)
        if batch is not None and ordered_by is not None:
            raise ValueError("a batch subscriber handles batches per partition; it takes no ordered_by")

        def declare(handler: F) -> F:
            self._add(
                SubscriberSpec(
                    name=name or callable_name(handler),
                    handler=handler,
                    topic=topic,
                    group=group,
                    model=model,
                    batch=batch,
                    prefetch=prefetch,
                    ordered_by=ordered_by,
                    max_attempts=max_attempts,
                    backoff=backoff or Backoff(),
                    idempotent=idempotent,
                    retry_queue=retry_queue,
                )
            )
            return handler

        return declare

    def timer(
        self,
        every: float | Setting,
        *,
        run_at_start: bool = False,
        name: str | None = None,
        leader: str | None = None,
    ) -> Callable[[F], F]:
        """Call the function every `every` seconds (`fn()` or `fn(ctx)`), one run at a time.
        An error is logged and counted; the timer keeps going. With `leader="<duty>"` it runs
        only while this process is the duty's elected leader (one process at a time, on the
        coordinator); `ctx.term` is then the term, and `NotLeaderError` ends it."""
        _require_positive(every=every)

        def declare(handler: F) -> F:
            timer_name = name or callable_name(handler)
            spec = TimerSpec(name=timer_name, handler=handler, every=every, run_at_start=run_at_start, leader=leader)
            self._add(spec)
            return handler

        return declare

    def on_startup(self, hook: F) -> F:
        """Run `hook()` or `hook(ctx)` before any handler; put clients in `ctx.state`."""
        self.startup_hooks.append(Call(hook, ("ctx",)))
        return hook

    def on_shutdown(self, hook: F) -> F:
        """Run `hook()` or `hook(ctx)` after the last handler finished."""
        self.shutdown_hooks.append(Call(hook, ("ctx",)))
        return hook

    def resolved(self, settings: Settings) -> list[Endpoint]:
        """The endpoints with every `setting(...)` replaced by its configured value."""
        return [_resolved(endpoint, settings) for endpoint in self.endpoints]

    def describe(self, settings: Settings | None = None) -> str:
        """A few lines for `threadcast services`; with `settings`, configured values shown."""
        endpoints = self.endpoints if settings is None else self.resolved(settings)
        lines = [self.name + (f": {self.description}" if self.description else "")]
        lines += [f"  {endpoint.describe()}" for endpoint in endpoints]
        return "\n".join(lines)

    def _add(self, endpoint: Endpoint) -> None:
        if any(existing.name == endpoint.name for existing in self.endpoints):
            raise ValueError(f"service {self.name!r} already has a handler named {endpoint.name!r}")
        arguments = ("ctx",) if isinstance(endpoint, TimerSpec) else ("message", "ctx")
        Call(endpoint.handler, arguments)  # fail now, not at the first message, on a bad signature
        self.endpoints.append(endpoint)

    def __repr__(self) -> str:
        return f"Service({self.name!r}, {len(self.endpoints)} handlers)"


def _check_order(ordered_by: OrderKey, model: Any) -> None:
    if isinstance(ordered_by, str) and model is None:
        raise ValueError(f"ordered_by={ordered_by!r} names a field: it needs a model to decode messages into")
