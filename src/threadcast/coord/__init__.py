"""Coordination: the registry of running members, the live configuration, leader election and
locks, on an embedded SQLite file (default) or Apache ZooKeeper. See docs/coordination.md."""

from __future__ import annotations

from threadcast.coord.base import (
    Coordinator,
    Leadership,
    Member,
    MemberInfo,
    Registration,
    SessionState,
    Term,
)
from threadcast.coord.errors import BackendUnavailable, ConfigError, CoordinationError, NotLeaderError
from threadcast.coord.factory import open_coordinator
from threadcast.coord.live_config import ConfigUpdate, LiveConfig

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "ConfigUpdate",
    "CoordinationError",
    "Coordinator",
    "Leadership",
    "LiveConfig",
    "Member",
    "MemberInfo",
    "NotLeaderError",
    "Registration",
    "SessionState",
    "Term",
    "open_coordinator",
]
