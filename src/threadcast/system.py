"""One threadcast API process: its backends, opened from settings, and the built-in services
it runs beside the API on one toolkit `Runner`."""

from __future__ import annotations

import asyncio

import structlog

from threadcast.config import Settings
from threadcast.coord import MemberInfo, Registration
from threadcast.edge.http_publisher import HttpEdgePublisher
from threadcast.edge.hub import Hub
from threadcast.edge.targets import EDGE_ROLE, EdgeTargets
from threadcast.services import builtin_services
from threadcast.store.db import Database
from threadcast.store.repository import Repository
from threadcast.toolkit import Backends, Runner

RELAY = ("relay", "relay")
"""The relay's (service, timer), woken after each commit."""
LOOPBACK_FOR_WILDCARD = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
"""The address to reach a server bound to every interface."""
API_ROLE = "api"
"""The role an API process registers as (and `edge` too, when its edge is embedded)."""

log = structlog.get_logger("threadcast.system")


def edge_publisher_urls(edge_url: str) -> list[str]:
    return [url.strip() for url in edge_url.split(",") if url.strip()]


def local_api_url(settings: Settings) -> str:
    """Where a process on this machine reaches the API process (and the edge embedded in it,
    whose /pub/ location answers loopback clients only)."""
    host = LOOPBACK_FOR_WILDCARD.get(settings.host, settings.host)
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def remote_edge_urls(settings: Settings) -> list[str]:
    """Where a process without an edge of its own publishes: to every edge of `edge_url`, or to
    the API process when the edge is embedded there."""
    if settings.edge_url == "embedded":
        return [local_api_url(settings)]
    return edge_publisher_urls(settings.edge_url)


def remote_edge_publisher(settings: Settings) -> HttpEdgePublisher:
    return HttpEdgePublisher(remote_edge_urls(settings))


def follow_edges(runner: Runner, publisher: HttpEdgePublisher) -> None:
    """Have `publisher` send to the live configuration's `edges` while any are set, else to
    the live members of role `edge`, else to the edges it was made with (`edge.targets`; call
    before `runner.start()`)."""
    targets = EdgeTargets(publisher, fallback=list(publisher.urls))
    runner.live.on_change(targets.follow_live)
    if runner.backends.coord is not None:
        runner.watch_members(EDGE_ROLE).on_change(targets.follow_members)


class System:
    """The backends named by the settings (the embedded edge's hub when `edge_url` is
    `embedded`) and a `Runner` of the built-in `services` on them. `start()` starts the
    backends and the services; `serving()`, once the server accepts connections, registers
    the process as a member of role `api` (and `edge` with an embedded edge). The hub's
    buffers, or the edges published to, follow the live configuration; `close()`
    deregisters, lets the services finish the work in hand, then closes every backend."""

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
            follow_edges(self.runner, self.backends.require("edge", "the API"))
        self._relays_here = "relay" in services
        self._loop: asyncio.AbstractEventLoop | None = None
        self._registering: asyncio.Task[None] | None = None
        self._members: list[Registration] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.runner.start()

    async def close(self) -> None:
        await self.withdraw()
        await self.runner.stop()

    def serving(self) -> None:
        """Register the members of this process in the background (call once the server
        accepts connections, so that no publisher finds the edge before it answers)."""
        if self.backends.coord is not None and self._registering is None:
            self._registering = asyncio.create_task(self._register(), name="register-api")

    async def _register(self) -> None:
        coord = self.backends.require("coord", "registering the API")
        url = local_api_url(self.settings)
        info = MemberInfo.this_process(port=self.settings.port, url=url, health_url=f"{url}/healthz")
        roles = [API_ROLE] if self.hub is None else [API_ROLE, EDGE_ROLE]
        try:
            for role in roles:
                self._members.append(await coord.register(role, info))
        except Exception:
            log.exception("registering the API failed", roles=roles)
            return
        log.info("registered", roles=roles, url=url)

    async def withdraw(self) -> None:
        """Deregister this process's members (first of all when stopping: publishers stop
        sending to its edge)."""
        if self._registering is not None and not self._registering.done():
            self._registering.cancel()
            await asyncio.gather(self._registering, return_exceptions=True)
        while self._members:
            member = self._members.pop()
            try:
                await member.close()
            except Exception:
                log.warning("deregistering failed", role=member.role, exc_info=True)

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
        """Safe to call from a signal handler: deregister (publishers stop sending to this
        edge) and close the embedded edge's subscriptions so that open streams end and the web
        server can stop (clients reconnect and resume elsewhere)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._begin_shutdown()))

    async def _begin_shutdown(self) -> None:
        await asyncio.gather(self.withdraw(), *([self.hub.close()] if self.hub is not None else []))
