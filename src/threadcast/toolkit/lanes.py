"""Bounded, keyed concurrency: at most `limit` items in flight, one key's items one at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from functools import partial

import structlog

log = structlog.get_logger("threadcast.toolkit")

Work = Callable[[], Awaitable[None]]


class Lanes:
    """`submit(key, work)` waits for a free slot (so a slow handler stops its worker from
    pulling more: backpressure), then starts `work` as a task. Work with the same key runs
    after the previous one of that key has finished (a lane); work with key None, or with
    other keys, runs in parallel. Work that waits for its lane holds its slot."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._slots = asyncio.Semaphore(limit)
        self._tails: dict[Hashable, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(self, key: Hashable | None, work: Work) -> None:
        await self._slots.acquire()
        previous = None if key is None else self._tails.get(key)
        task = asyncio.create_task(_after(previous, work))
        self._tasks.add(task)
        self._idle.clear()
        if key is not None:
            self._tails[key] = task
        task.add_done_callback(partial(self._finished, key))

    async def join(self) -> None:
        """Wait until nothing is in flight."""
        await self._idle.wait()

    async def cancel(self) -> None:
        """Cancel whatever is in flight and wait for it to unwind."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finished(self, key: Hashable | None, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if key is not None and self._tails.get(key) is task:
            del self._tails[key]
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("unhandled error in a worker task", exc_info=error)


async def _after(previous: asyncio.Task[None] | None, work: Work) -> None:
    if previous is not None:
        await asyncio.wait([previous])
    await work()
