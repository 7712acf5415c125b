"""The live members of one role, as a process sees them: a single `watch_members` task and the
components that follow it (`on_change`). The formatter's edge publisher follows role `edge`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from threadcast.coord import Coordinator, Member

log = structlog.get_logger("threadcast.toolkit")

RETRY_AFTER = 1.0
"""Seconds before watching again after the watch failed."""
FIRST_READ_TIMEOUT = 10.0

Listener = Callable[[list[Member]], None]


class MemberView:
    """`current` is the newest list of members of `role` (empty until read); `start()` reads
    it once and keeps it up to date; `close()` stops."""

    def __init__(self, coord: Coordinator, role: str) -> None:
        self.role = role
        self.current: list[Member] = []
        self._coord = coord
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._read = asyncio.Event()

    def on_change(self, listener: Listener) -> None:
        """Call `listener(members)` now and after every change."""
        self._listeners.append(listener)
        listener(self.current)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name=f"members-{self.role}")
            await asyncio.wait_for(self._read.wait(), FIRST_READ_TIMEOUT)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            try:
                async with contextlib.aclosing(self._coord.watch_members(self.role)) as updates:
                    async for members in updates:
                        self._apply(members)
            except Exception:
                log.warning("watching members failed; watching again", role=self.role, exc_info=True)
            await asyncio.sleep(RETRY_AFTER)

    def _apply(self, members: list[Member]) -> None:
        changed = members != self.current
        self.current = members
        self._read.set()
        if changed:
            for listener in self._listeners:
                try:
                    listener(members)
                except Exception:
                    log.exception("following the members failed", role=self.role, listener=repr(listener))
