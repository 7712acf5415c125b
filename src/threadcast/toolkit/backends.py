"""The backends a runner gives its services."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields
from typing import Any

import structlog

from threadcast.bus.factory import open_log, open_queue
from threadcast.bus.log import EventLog
from threadcast.bus.queue import WorkQueue
from threadcast.config import Settings
from threadcast.coord import Coordinator, LiveConfig, open_coordinator
from threadcast.edge.publisher import EdgePublisher
from threadcast.store.db import Database
from threadcast.toolkit.errors import BackendMissing
from threadcast.toolkit.inbox import Inbox
from threadcast.toolkit.sql_inbox import SqlInbox

log = structlog.get_logger("threadcast.toolkit")

READINESS_TIMEOUT = 3.0


@dataclass
class Backends:
    """Any of: the coordinator, an event log, a work queue, a push edge, an inbox, the
    project database.

    A runner starts them (in this order) before its services and closes them (in reverse)
    after. A service that needs one that is missing fails at start with `BackendMissing`.
    `log_partitions` is used to create the topics subscribers read, when missing."""

    coord: Coordinator | None = None
    database: Database | None = None
    log: EventLog | None = None
    queue: WorkQueue | None = None
    edge: EdgePublisher | None = None
    inbox: Inbox | None = None
    log_partitions: int = 8

    @classmethod
    def from_settings(cls, settings: Settings, *, edge: EdgePublisher | None = None) -> Backends:
        """The configured coordinator, database (with an SQL inbox), event log and work queue.
        The edge publisher is the caller's choice (in process with the API, or over HTTP)."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.resolved_database_url())
        return cls(
            coord=open_coordinator(settings.resolved_coord_url(), defaults=LiveConfig.from_settings(settings)),
            database=database,
            log=open_log(settings.resolved_log_url(), poll_interval=settings.poll_interval),
            queue=open_queue(settings.resolved_queue_url(), poll_interval=settings.poll_interval),
            edge=edge,
            inbox=SqlInbox(database, migrate=True),
            log_partitions=settings.log_partitions,
        )

    def present(self) -> dict[str, Any]:
        """The backends given, by name, in start order."""
        named = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "log_partitions"}
        return {name: backend for name, backend in named.items() if backend is not None}

    def require(self, name: str, needed_by: str) -> Any:
        backend = getattr(self, name)
        if backend is None:
            raise BackendMissing(f"{needed_by} needs the {name} backend, which this runner was not given")
        return backend

    async def start(self) -> None:
        started: list[Any] = []
        try:
            for backend in self.present().values():
                await backend.start()
                started.append(backend)
        except BaseException:
            await _close_all(reversed(started))
            raise

    async def close(self) -> None:
        await _close_all(reversed(self.present().values()))

    async def readiness(self) -> dict[str, str]:
        """"ok" or the error, per backend."""
        results: dict[str, str] = {}
        for name, backend in self.present().items():
            try:
                await asyncio.wait_for(backend.ping(), timeout=READINESS_TIMEOUT)
                results[name] = "ok"
            except Exception as exc:  # readiness reports, never raises
                results[name] = f"{type(exc).__name__}: {exc}"
        return results


async def _close_all(backends: Any) -> None:
    for backend in backends:
        try:
            await backend.close()
        except Exception:
            log.exception("closing a backend failed", backend=type(backend).__name__)
