"""Running one handler on one message (or batch): inbox check, timing, metrics, logs."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import structlog

from threadcast.toolkit.callables import Call
from threadcast.toolkit.context import EVENT_ID_HEADER, Context, Scope
from threadcast.toolkit.errors import Reject

log = structlog.get_logger("threadcast.toolkit")


class Outcome(Enum):
    DONE = "ok"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    error: str = ""

    @property
    def settled(self) -> bool:
        """Nothing more to do for the message: it was handled now or before."""
        return self.outcome in (Outcome.DONE, Outcome.DUPLICATE)


def event_id_of(headers: Mapping[str, str], message: Any, fallback: str) -> str:
    """The `event_id` header, else the decoded message's `event_id`, else `fallback` (the
    queue message id or the record's log position)."""
    header = headers.get(EVENT_ID_HEADER)
    if header:
        return header
    if isinstance(message, Mapping):
        attribute = message.get(EVENT_ID_HEADER)
    else:
        attribute = getattr(message, EVENT_ID_HEADER, None)
    return attribute if isinstance(attribute, str) and attribute else fallback


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Handler:
    """A declared handler, ready to run in one service. `label` names it in metrics (the
    retry queue of a subscriber `notify` runs as `notify.retry`); the inbox uses `name`."""

    def __init__(
        self, scope: Scope, name: str, fn: Callable[..., Any], *, idempotent: bool, label: str | None = None
    ) -> None:
        self.scope = scope
        self.name = name
        self.label = label or name
        self._call = Call(fn, ("message", "ctx"))
        self._inbox = scope.backends.inbox if idempotent else None
        metrics = scope.metrics
        self._duration = metrics.duration.labels(scope.service, self.label)
        self._done = metrics.handled.labels(scope.service, self.label, Outcome.DONE.value)
        self._duplicates = metrics.handled.labels(scope.service, self.label, Outcome.DUPLICATE.value)

    def context(self, *, event_id: str | None, attempt: int, headers: Mapping[str, str] | None = None) -> Context:
        return Context(self.scope, self.name, event_id=event_id, attempt=attempt, headers=headers)

    async def run(self, message: Any, ctx: Context) -> Result:
        """Handle one message, unless its event id is in the inbox."""
        return await self.run_batch([message], [ctx.event_id or ""], ctx, single=True)

    async def run_batch(
        self, messages: Sequence[Any], event_ids: Sequence[str], ctx: Context, *, single: bool = False
    ) -> Result:
        """Handle the messages whose event ids are not in the inbox: as a list, or (`single`)
        the one message itself. Never raises: an unreachable inbox is a failed attempt."""
        try:
            fresh = await self._unseen(ctx.consumer, list(zip(messages, event_ids, strict=True)))
        except Exception as exc:
            log.warning("inbox unavailable", error=describe_error(exc), event_id=ctx.event_id)
            return Result(Outcome.FAILED, f"inbox unavailable: {describe_error(exc)}")
        self._duplicates.inc(len(messages) - len(fresh))
        if not fresh:
            return Result(Outcome.DUPLICATE)
        payload = fresh[0][0] if single else [m for m, _ in fresh]
        result = await self._invoke(payload, ctx, count=len(fresh))
        if result.outcome is Outcome.DONE:
            await self._record(ctx.consumer, [e for _, e in fresh])
        return result

    async def _unseen(self, consumer: str, items: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
        if self._inbox is None:
            return items
        return [(m, e) for m, e in items if not await self._inbox.seen(consumer, e)]

    async def _invoke(self, payload: Any, ctx: Context, *, count: int) -> Result:
        with structlog.contextvars.bound_contextvars(service=ctx.service, handler=self.label, event_id=ctx.event_id):
            started = time.perf_counter()
            try:
                await self._call(payload, ctx)
            except Reject as exc:
                log.warning("message rejected", reason=exc.reason, attempt=ctx.attempt)
                return Result(Outcome.REJECTED, exc.reason)
            except Exception as exc:
                log.warning("handler failed", error=describe_error(exc), attempt=ctx.attempt, exc_info=True)
                return Result(Outcome.FAILED, describe_error(exc))
            finally:
                self._duration.observe(time.perf_counter() - started)
        self._done.inc(count)
        return Result(Outcome.DONE)

    async def _record(self, consumer: str, event_ids: Sequence[str]) -> None:
        """Record handled ids. A failure here is logged, not raised: the work is done, only
        a later redelivery of it would not be recognised."""
        if self._inbox is None:
            return
        try:
            for event_id in event_ids:
                await self._inbox.record(consumer, event_id)
        except Exception:
            log.exception("could not record handled events in the inbox", consumer=consumer)
