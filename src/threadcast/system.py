"""One threadcast API process: its backends, opened from settings, and the built-in services
it runs beside the API on one toolkit `Runner`."""

from __future__ import annotations

import asyncio

from threadcast.config import Settings
from threadcast.edge.http_publisher import HttpEdgePublisher
from threadcast.edge.hub import Hub
from threadcast.services import builtin_services
from threadcast.store.db import Database
from threadcast.store.repository import Repository
from threadcast.toolkit import Backends, Runner

RELAY = ("relay", "relay")
"""The relay's (service, timer), woken after each commit."""
LOOPBACK_FOR_WILDCARD = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
"""The address to reach a server bound to every interface."""


def edge_publisher_urls(edge_url: str) -> list[str]:
    return [url.strip() for url in edge_url.split(",") if url.strip()]


def local_api_url(settings: Settings) -> str:
    """Where a process on this machine reaches the API process (and the edge embedded in it,
    whose /pub/ location answers loopback clients only)."""
    host = LOOPBACK_FOR_WILDCARD.get(settings.host, settings.host)
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def remote_edge_publisher(settings: Settings) -> HttpEdgePublisher:
    """How a process without an edge of its own publishes: to every edge of `edge_url`, or to
    the API process when the edge is embedded there."""
    if settings.edge_url == "embedded":
        return HttpEdgePublisher([local_api_url(settings)])
    return HttpEdgePublisher(edge_publisher_urls(settings.edge_url))


def follow_live_edges(runner: Runner, publisher: HttpEdgePublisher) -> None:
    """Have `publisher` send to the live configuration's `edges` while any are set, else to
    the edges it was made with (call before `runner.start()`)."""
    configured = list(publisher.urls)
    runner.live.on_change(lambda live: publisher.set_urls(list(live.edges) or configured))


class System:
    """The backends named by the settings (the embedded edge's hub when `edge_url` is
    `embedded`) and a `Runner` of the built-in `services` on them. `start()` starts the
    backends and the services. The hub's buffers, or the edges published to, follow the live
    configuration; `close()` lets the services finish the work in hand, then
    closes every backend."""

    def __init__(self, settings: Settings, services: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.hub: Hub | None = None
        if settings.edge_url == "embedded":
            self.hub = Hub(buffer_length=settings.channel_buffer_length, buffer_ttl=settings.channel_buffer_ttl)
        self.backends = Backends.from_settings(settings, edge=self.hub or remote_edge_publisher(settings))
        self.db: Database = self.backends.require("database", "the API")
        self.repo = Repository(self.db, settings.events_topic)
        self.runner = Runner(builtin_services(services), self.backends, settings=settings)
        if self.hub is not None:
            hub = self.hub
            self.runner.live.on_change(lambda new: hub.configure(new.channels.buffer_length, new.channels.buffer_ttl))
        else:
            follow_live_edges(self.runner, self.backends.require("edge", "the API"))
        self._relays_here = "relay" in services
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.runner.start()

    async def close(self) -> None:
        await self.runner.stop()

    def wake_relay(self) -> None:
        """Relay the outbox now (after a commit), when the relay runs in this process."""
        if self._relays_here:
            self.runner.wake(*RELAY)

    async def seed_demo(self) -> int:
        """Make sure the demo forum and thread exist; return the thread id."""
        await self.repo.create_forum("demo", "threadcast demo")
        thread, _ = await self.repo.get_or_create_thread("demo", "welcome", "Welcome to threadcast", "/")
        return thread.id

    def begin_shutdown(self) -> None:
        """Safe to call from a signal handler: close the embedded edge's subscriptions so that
        open streams end and the web server can stop (clients reconnect and resume elsewhere)."""
        if self.hub is not None and self._loop is not None:
            hub = self.hub
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(hub.close()))
