"""Recompute past windows from the event log and overwrite their objects (`threadcast stats
rebuild --since ... --until ...`).

The rebuild runs the same topology on the embedded runner, bounded: its spout reads as group
`<group>-rebuild` from a little before `since` (by append time: `since` minus the time a record
may be held, minus a minute) to the end the log had when it started; at the end every window is
flushed. The sink overwrites the objects of the windows that start in `[since, until)` and
publishes nothing. The live service is not disturbed: it keeps its own group, and treats the
rewritten windows as final, as before. Run one rebuild at a time.
"""

from __future__ import annotations

import math
import time

from threadcast.bus.factory import open_log
from threadcast.config import Settings
from threadcast.stats.definition import StatsConfig, log_sources, stats_topology, topics
from threadcast.stats.results import object_key, utc
from threadcast.stats.runner import EmbeddedRunner
from threadcast.stats.spout import LogSpoutSpec
from threadcast.store.objects import open_object_store

MARGIN = 60.0


def closed_before(config: StatsConfig, now: float | None = None) -> float:
    """The start of the first window that may still be open in the live service."""
    now = time.time() if now is None else now
    return math.floor((now - config.hold_time) / config.window) * config.window


async def rebuild(settings: Settings, since: float, until: float | None = None, config: StatsConfig | None = None) -> list[str]:
    """Rewrite the windows that start in `[since, until)` (epoch seconds; `until` defaults to
    the windows surely closed by now). Returns the `forum` object keys in that range."""
    config = config or StatsConfig()
    start = math.floor(since / config.window) * config.window
    end = closed_before(config) if until is None else until
    if end <= start:
        raise ValueError(f"nothing to rebuild between {utc(start).isoformat()} and {utc(end).isoformat()}")
    event_log = open_log(settings.resolved_log_url(), poll_interval=settings.poll_interval)
    store = open_object_store(settings.store_url, settings.object_store_root())
    await event_log.start()
    await store.start()
    try:
        names = topics(settings)
        spout = LogSpoutSpec(
            names, f"{config.group}-rebuild", start_at=start - config.hold_time - MARGIN, stop_at_end=True
        )
        sink = {"overwrite": True, "publish": False, "windows": [start, end]}
        topology = stats_topology(config, settings, await log_sources(event_log, names), spout=spout, sink=sink)
        await EmbeddedRunner(topology, event_log, resources={"store": store}).run_bounded()
        # Keys sort by window start (zero-padded dt/hour/minute); "part-.parquet" sorts first.
        first, after = object_key("forum", "", start), object_key("forum", "", end)
        return [key for key in await store.list("stats/forum/") if first <= key < after]
    finally:
        await store.close()
        await event_log.close()
