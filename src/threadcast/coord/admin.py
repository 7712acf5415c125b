"""What `threadcast members` and `threadcast config` do, apart from parsing the command line."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from threadcast.config import Settings
from threadcast.coord import live_config
from threadcast.coord.base import Coordinator, Member
from threadcast.coord.factory import open_coordinator
from threadcast.coord.live_config import LiveConfig

T = TypeVar("T")


async def on_coordinator(settings: Settings, operation: Callable[[Coordinator], Awaitable[T]]) -> T:
    """Run `operation` on a coordinator opened from `settings`, then close it."""
    coordinator = open_coordinator(settings.resolved_coord_url(), defaults=LiveConfig.from_settings(settings))
    await coordinator.start()
    try:
        return await operation(coordinator)
    finally:
        await coordinator.close()


async def all_members(coordinator: Coordinator, role: str | None = None) -> list[Member]:
    """The members of `role`, or of every role (by role, then registration order)."""
    roles = [role] if role else await coordinator.roles()
    return [member for name in roles for member in await coordinator.members(name)]


def members_table(members: list[Member], now: float | None = None) -> str:
    now = time.time() if now is None else now
    header = ("ROLE", "ID", "HOST", "PID", "PORT", "URL", "HEALTH", "VERSION", "UP")
    rows = [
        (
            m.role,
            m.id,
            m.info.host,
            str(m.info.pid),
            str(m.info.port or "-"),
            m.info.url or "-",
            m.info.health_url or "-",
            m.info.version or "-",
            _duration(now - m.info.started_at),
        )
        for m in members
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def render(value: Any) -> str:
    """A configuration value as JSON (strings included, so the output reads back as input)."""
    return msgspec.json.encode(value).decode()


def config_lines(config: LiveConfig) -> list[str]:
    """`path = value` for every value of the tree."""
    return [f"{path} = {render(value)}" for path, value in live_config.flatten(config).items()]
