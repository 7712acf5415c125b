"""The live configuration of one process: a single watch on the coordinator, the current
tree, and the components that apply changes (`on_change`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import structlog

from threadcast.coord import Coordinator, LiveConfig
from threadcast.toolkit.watched import Watched

log = structlog.get_logger("threadcast.toolkit")


class LiveView(Watched[LiveConfig]):
    """`current` is the newest tree (the settings' values while no coordinator is given), and
    `version` its version; each change is logged with the paths that changed."""

    what = "live configuration"

    def __init__(self, coord: Coordinator | None, defaults: LiveConfig) -> None:
        super().__init__(defaults)
        self.version = 0
        self._coord = coord

    def updates_available(self) -> bool:
        return self._coord is not None

    async def updates(self) -> AsyncGenerator[LiveConfig, None]:
        assert self._coord is not None
        async for update in self._coord.watch_config():
            if self._read.is_set() and update.changed:
                log.info("live configuration changed", version=update.version, changed=list(update.changed))
            self.version = update.version
            yield update.config
