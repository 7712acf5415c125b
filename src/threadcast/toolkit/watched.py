"""A value a process follows on the coordinator: one watch task, the newest value (`current`)
and the components that react to changes (`on_change`). The live configuration and the members
of a role are followed this way."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("threadcast.toolkit")

RETRY_AFTER = 1.0
"""Seconds before watching again after the watch failed."""
FIRST_READ_TIMEOUT = 10.0

T = TypeVar("T")


class Watched(ABC, Generic[T]):
    """`current` starts as `initial`; `start()` reads the value once and keeps it up to date;
    `close()` stops. Listeners are called now and after every change; one that raises is logged
    and does not stop the others."""

    what = "value"
    """Named in log lines."""

    def __init__(self, initial: T) -> None:
        self.current = initial
        self._listeners: list[Callable[[T], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._read = asyncio.Event()

    @abstractmethod
    def updates(self) -> AsyncGenerator[T, None] | None:
        """The coordinator's stream of values (None: nothing to watch)."""

    def on_change(self, listener: Callable[[T], None]) -> None:
        self._listeners.append(listener)
        listener(self.current)

    async def start(self) -> None:
        if self._task is None and self.updates_available():
            self._task = asyncio.create_task(self._watch(), name=f"watch-{self.what}")
            await asyncio.wait_for(self._read.wait(), FIRST_READ_TIMEOUT)

    def updates_available(self) -> bool:
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            updates = self.updates()
            assert updates is not None
            try:
                async with contextlib.aclosing(updates):
                    async for value in updates:
                        self.apply(value)
            except Exception:
                log.warning(f"watching the {self.what} failed; watching again", exc_info=True)
            await asyncio.sleep(RETRY_AFTER)

    def apply(self, value: T) -> None:
        changed = value != self.current
        self.current = value
        self._read.set()
        if changed:
            for listener in self._listeners:
                try:
                    listener(value)
                except Exception:
                    log.exception(f"following the {self.what} failed", listener=repr(listener))
