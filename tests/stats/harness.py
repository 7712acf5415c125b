"""Run the stats topology on the embedded runner over an embedded SQLite log, into a folder."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.stats.streams import DELIVERIES, EVENTS, Stream, append
from threadcast.bus.sqlite_log import SqliteLog
from threadcast.config import Settings
from threadcast.stats.definition import StatsConfig, log_sources, stats_topology
from threadcast.stats.runner import EmbeddedRunner
from threadcast.store.objects import FolderStore

DEADLINE = 60.0


def settings_for(folder: Path, partitions: int) -> Settings:
    return Settings(data_dir=folder, log_partitions=partitions, store_url="")


async def open_log(folder: Path, partitions: int) -> SqliteLog:
    event_log = SqliteLog(folder / "log.db", poll_interval=0.01)
    await event_log.start()
    for topic in (EVENTS, DELIVERIES):
        await event_log.create_topic(topic, partitions)
    return event_log


async def run_to_the_end(
    folder: Path, stream: Stream, partitions: int, config: StatsConfig, resources: dict[str, Any] | None = None
) -> FolderStore:
    """Append the stream and its end records, run until every record but the held end ones is
    done, stop. Returns the store the windows went to."""
    held = stream.end(partitions)
    event_log = await open_log(folder, partitions)
    settings = settings_for(folder, partitions)
    store = FolderStore(settings.object_store_root())
    try:
        await append(event_log, stream.records)
        topology = stats_topology(config, settings, await log_sources(event_log, (EVENTS, DELIVERIES)))
        runner = EmbeddedRunner(topology, event_log, resources={"store": store, **(resources or {})})
        await runner.start()
        try:
            total = len(stream.records) - held
            await asyncio.wait_for(runner.until(lambda: runner.done >= total and runner.quiet()), DEADLINE)
        finally:
            await runner.stop()
    finally:
        await event_log.close()
    return store
