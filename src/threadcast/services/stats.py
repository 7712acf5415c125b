"""Stats: runs the stats topology (`threadcast.stats`) on the embedded runner.

The topology reads the whole event log as group `stats`, and a window must see every event of
its forum, so it runs in one process at a time: every stats process stands for election (duty
`stats`) and the leader runs the topology. A timer keeps it running for the term (and restarts
it if it died); it stops when the term ends or the service stops: the spout stops, the queued
tuples are processed, the acked offsets committed. Records of windows still open are not acked,
so the next leader reads them again.

Windows are written to the object store (`THREADCAST_STORE_URL`) and published to
`stats:{forum}` on the edge. Settings: `THREADCAST_STATS_*` (see `StatsConfig`).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from threadcast.bus.log import EventLog
from threadcast.config import Settings
from threadcast.coord import Term
from threadcast.edge.publisher import EdgePublisher
from threadcast.stats.definition import StatsConfig, log_sources, stats_topology, topics
from threadcast.stats.runner import EmbeddedRunner
from threadcast.store.objects import ObjectStore, open_object_store
from threadcast.toolkit import BackendMissing, Context, Service

log = structlog.get_logger("threadcast.stats")

DUTY = "stats"
STOP_GRACE = 10.0

service = Service(
    "stats",
    config=StatsConfig,
    description="counts posts, votes, authors, top threads and latency per forum and minute; writes them to the object store",
)


class TopologyKeeper:
    """Runs the stats topology while this process leads; `ensure(term)` starts or restarts it."""

    def __init__(
        self, settings: Settings, config: StatsConfig, event_log: EventLog, store: ObjectStore, edge: EdgePublisher | None
    ) -> None:
        self.settings = settings
        self.config = config
        self._log = event_log
        self._resources = {"store": store, **({"edge": edge} if edge is not None else {})}
        self.runner: EmbeddedRunner | None = None
        self._term: Term | None = None
        self._watch: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def ensure(self, term: Term) -> None:
        async with self._lock:
            if self.runner is not None and self._term is term and self.runner.failure is None:
                return
            failure = self.runner.failure if self.runner is not None and self._term is term else None
            await self._stop()
            await self._start(term)
        if failure is not None:
            raise RuntimeError("the stats topology had failed; it was restarted") from failure

    async def stop(self) -> None:
        async with self._lock:
            await self._stop()

    async def _start(self, term: Term) -> None:
        names = topics(self.settings)
        topology = stats_topology(self.config, self.settings, await log_sources(self._log, names))
        runner = EmbeddedRunner(topology, self._log, resources=self._resources)
        await runner.start()
        self.runner, self._term = runner, term
        self._watch = asyncio.create_task(self._stop_when_lost(term), name="stats-term")
        log.info("stats topology started", epoch=term.epoch, window=self.config.window, lateness=self.config.lateness)

    async def _stop(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        runner, self.runner, self._term = self.runner, None, None
        if runner is not None:
            await runner.stop(STOP_GRACE)
            log.info("stats topology stopped")

    async def _stop_when_lost(self, term: Term) -> None:
        await term.lost.wait()
        await self.stop()


@service.on_startup
async def prepare(ctx: Context) -> None:
    for topic in topics(ctx.settings):
        await ctx.log.create_topic(topic, ctx.settings.log_partitions)
    store = open_object_store(ctx.settings.store_url, ctx.settings.object_store_root())
    await store.start()
    try:
        edge: EdgePublisher | None = ctx.edge
    except BackendMissing:
        edge = None
    ctx.state.store = store
    ctx.state.keeper = TopologyKeeper(ctx.settings, ctx.config, ctx.log, store, edge)


@service.timer(every=1.0, run_at_start=True, leader=DUTY)
async def keep_topology(ctx: Context) -> None:
    """While this process leads duty `stats`: the topology runs."""
    assert ctx.term is not None
    await ctx.state.keeper.ensure(ctx.term)


@service.on_shutdown
async def stop_topology(ctx: Context) -> None:
    await ctx.state.keeper.stop()
    await ctx.state.store.close()
