"""One threadcast process's backends, opened from settings, and the services it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from threadcast.bus.factory import open_log, open_queue
from threadcast.bus.queue import QueueSpec
from threadcast.config import Settings
from threadcast.edge.hub import Hub
from threadcast.edge.http_publisher import HttpEdgePublisher
from threadcast.edge.publisher import EdgePublisher
from threadcast.services.dispatcher import run_dispatcher
from threadcast.services.formatter import run_formatter
from threadcast.services.relay import run_relay
from threadcast.store.db import Database
from threadcast.store.repository import Repository

log = structlog.get_logger("system")

def edge_publisher_urls(edge_url: str) -> list[str]:
    return [url.strip() for url in edge_url.split(",") if url.strip()]


class System:
    """Opens every backend named by the settings; `run_services` runs the pipeline on them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url())
        self.repo = Repository(self.db, settings.events_topic)
        self.log = open_log(settings.resolved_log_url(), poll_interval=settings.poll_interval)
        self.queue = open_queue(settings.resolved_queue_url(), poll_interval=settings.poll_interval)
        self.hub: Hub | None = None
        self.edge: EdgePublisher
        if settings.edge_url == "embedded":
            self.hub = Hub(buffer_length=settings.channel_buffer_length, buffer_ttl=settings.channel_buffer_ttl)
            self.edge = self.hub
        else:
            self.edge = HttpEdgePublisher(edge_publisher_urls(settings.edge_url))
        self.outbox_wakeup = asyncio.Event()
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.db.migrate()
        await self.log.start()
        await self.log.create_topic(self.settings.events_topic, self.settings.log_partitions)
        await self.queue.start()
        await self.queue.declare(QueueSpec(self.settings.format_queue, max_attempts=self.settings.max_attempts))
        await self.edge.start()

    def run_services(self, names: tuple[str, ...]) -> None:
        s = self.settings
        factories: dict[str, Callable[[], Awaitable[None]]] = {
            "relay": lambda: run_relay(self.repo, self.log, self.outbox_wakeup, self.stop, s.poll_interval),
            "dispatcher": lambda: run_dispatcher(self.log, self.queue, s.events_topic, s.format_queue, self.stop),
            "formatter": lambda: run_formatter(self.queue, s.format_queue, self.edge, self.stop),
        }
        for name in names:
            self._tasks.append(asyncio.create_task(factories[name](), name=name))

    async def seed_demo(self) -> int:
        """Make sure the demo forum and thread exist; return the thread id."""
        await self.repo.create_forum("demo", "threadcast demo")
        thread, _ = await self.repo.get_or_create_thread("demo", "welcome", "Welcome to threadcast", "/")
        return thread.id

    async def readiness(self) -> dict[str, str]:
        """"ok" or the error, per backend."""
        checks = {"database": self.db.ping, "log": self.log.ping, "queue": self.queue.ping, "edge": self.edge.ping}
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=3.0)
                results[name] = "ok"
            except Exception as exc:  # readiness reports, never raises
                results[name] = f"{type(exc).__name__}: {exc}"
        return results

    def begin_shutdown(self) -> None:
        """Safe to call from a signal handler: close the embedded edge's subscriptions so that
        open streams end and the web server can stop (clients reconnect and resume elsewhere)."""
        if self.hub is not None and self._loop is not None:
            hub = self.hub
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(hub.close()))

    async def close(self, grace: float = 10.0) -> None:
        """Let services finish the work in hand, then close every backend."""
        self.stop.set()
        self.outbox_wakeup.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.edge.close()
        await self.queue.close()
        await self.log.close()
        await self.db.close()

