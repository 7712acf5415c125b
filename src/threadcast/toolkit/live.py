"""The live configuration of one process: a single watch on the coordinator, the current
tree, and the components that apply changes (`on_change`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from threadcast.coord import Coordinator, LiveConfig

log = structlog.get_logger("threadcast.toolkit")

RETRY_AFTER = 1.0
"""Seconds before watching again after the watch failed."""
FIRST_READ_TIMEOUT = 10.0

Listener = Callable[[LiveConfig], None]


class LiveView:
    """`current` is the newest tree (the settings' values while no coordinator is given);
    `start()` reads it once and keeps it up to date, logging each change; `close()` stops."""

    def __init__(self, coord: Coordinator | None, defaults: LiveConfig) -> None:
        self.current = defaults
        self.version = 0
        self._coord = coord
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._read = asyncio.Event()

    def on_change(self, listener: Listener) -> None:
        """Call `listener(tree)` now and after every change."""
        self._listeners.append(listener)
        listener(self.current)

    async def start(self) -> None:
        if self._coord is None or self._task is not None:
            return
        self._task = asyncio.create_task(self._watch(self._coord), name="live-config")
        await asyncio.wait_for(self._read.wait(), FIRST_READ_TIMEOUT)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self, coord: Coordinator) -> None:
        while True:
            try:
                async for update in coord.watch_config():
                    if self._read.is_set() and update.changed:
                        log.info("live configuration changed", version=update.version, changed=list(update.changed))
                    self._apply(update.version, update.config)
            except Exception:
                log.warning("watching the live configuration failed; watching again", exc_info=True)
            await asyncio.sleep(RETRY_AFTER)

    def _apply(self, version: int, config: LiveConfig) -> None:
        changed = config != self.current
        self.current, self.version = config, version
        self._read.set()
        if changed:
            for listener in self._listeners:
                try:
                    listener(config)
                except Exception:
                    log.exception("applying the live configuration failed", listener=repr(listener))
