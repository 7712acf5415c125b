"""Small asyncio helpers for the workers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """The shutdown began before the awaited operation finished."""


async def until(stopping: asyncio.Future[object], operation: Awaitable[T]) -> T:
    """Await `operation` unless `stopping` completes first: then cancel it and raise Stopped.
    When both are ready together, the operation's result wins."""
    task = asyncio.ensure_future(operation)
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise Stopped


class Shutdown:
    """Shared by a runner and its workers: `stopping` (take no new work) is set first;
    `expired` (cancel the work still in flight) when the grace period is over."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.expired = asyncio.Event()
        self._stopping_waiter: asyncio.Future[object] | None = None

    @property
    def stopping_waiter(self) -> asyncio.Future[object]:
        """One future for every `until` call of this shutdown (rather than a task each)."""
        if self._stopping_waiter is None:
            self._stopping_waiter = asyncio.ensure_future(self.stopping.wait())
        return self._stopping_waiter

    async def sleep(self, seconds: float) -> None:
        """Sleep, or raise Stopped as soon as the shutdown begins."""
        await until(self.stopping_waiter, asyncio.sleep(seconds))

    async def finish(self, work: Awaitable[None]) -> bool:
        """Await `work` until it is done (True) or the grace period expired (False)."""
        expired = asyncio.ensure_future(self.expired.wait())
        try:
            await until(expired, work)
        except Stopped:
            return False
        finally:
            expired.cancel()
        return True

    def close(self) -> None:
        if self._stopping_waiter is not None:
            self._stopping_waiter.cancel()
