"""Waking waiters when in-memory state changes."""

from __future__ import annotations

import asyncio


class Changes:
    """`notify()` wakes every coroutine in `wait()`."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None) -> None:
        """Return after the next change, or after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass
