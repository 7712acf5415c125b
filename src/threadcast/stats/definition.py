"""The stats topology: its configuration and its definition.

    log spout (topics events + deliveries, group stats)
      -> parse   (fields: topic, partition)     decode, partition clocks, lateness status
      -> window  (fields: forum; all: watermarks) tumbling windows per forum
      -> sink    (fields: forum)                 Parquet to the object store, then stats:{forum}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from threadcast.bus.log import EventLog
from threadcast.config import Settings
from threadcast.stats.parse import WATERMARK_STREAM, ParseBolt, source_name
from threadcast.stats.sink import SinkBolt
from threadcast.stats.spout import LogSpoutSpec
from threadcast.stats.topology import Topology
from threadcast.stats.window import WindowBolt

GROUP = "stats"
MINUTE = 60


class StatsConfig(BaseSettings):
    """The stats service's own settings (`THREADCAST_STATS_*`)."""

    model_config = SettingsConfigDict(env_prefix="THREADCAST_STATS_", extra="forbid")

    window: int = MINUTE
    """Seconds per tumbling window: whole minutes, as the results are stored per minute of the
    window's start (`threadcast.stats.results.object_key`)."""
    lateness: float = Field(10.0, ge=0)
    """Seconds an event may come after newer ones of its partition and still count."""
    idle_timeout: float = Field(5.0, gt=0)
    """Seconds without progress after which a partition no longer holds windows open."""
    tick: float = Field(1.0, gt=0)
    parse_parallelism: int = Field(1, ge=1)
    window_parallelism: int = Field(1, ge=1)
    sink_parallelism: int = Field(1, ge=1)
    max_spout_pending: int = Field(100_000, ge=1)
    message_timeout: float | None = Field(None, gt=0)
    """Seconds a record may take to be done; by default window + lateness + idle_timeout + 120."""
    group: str = GROUP

    @field_validator("window")
    @classmethod
    def _whole_minutes(cls, window: int) -> int:
        if window <= 0 or window % MINUTE:
            raise ValueError(
                f"THREADCAST_STATS_WINDOW must be a positive multiple of {MINUTE} seconds, got {window}: "
                "the results are stored under the minute a window starts, so windows must start on whole minutes"
            )
        return window

    @model_validator(mode="after")
    def _timeout_outlasts_windows(self) -> StatsConfig:
        if self.message_timeout is not None and self.message_timeout <= self.hold_time:
            raise ValueError(
                f"message_timeout ({self.message_timeout}s) must exceed window + lateness + idle_timeout "
                f"({self.hold_time}s): records stay in flight until their window is written"
            )
        return self

    @property
    def hold_time(self) -> float:
        """The longest a record normally waits for its window to close."""
        return self.window + self.lateness + self.idle_timeout

    def resolved_message_timeout(self) -> float:
        return self.message_timeout or self.hold_time + 120.0


def topics(settings: Settings) -> tuple[str, str]:
    return settings.events_topic, settings.deliveries_topic


async def log_sources(event_log: EventLog, names: Sequence[str]) -> list[str]:
    """Every partition of the topics, as window-task sources (`topic/partition`)."""
    return [source_name(topic, p) for topic in names for p in range(await event_log.partitions(topic))]


def stats_topology(
    config: StatsConfig,
    settings: Settings,
    sources: Sequence[str],
    *,
    spout: LogSpoutSpec | None = None,
    sink: Mapping[str, Any] | None = None,
) -> Topology:
    """The topology for `config`; `sources` from `log_sources`; `spout` replaces the group's
    spout (a rebuild reads from a time, to the end); `sink` adds to the sink's conf."""
    topology = Topology(
        "stats",
        conf={
            "window": config.window,
            "lateness": config.lateness,
            "idle_timeout": config.idle_timeout,
            "deliveries_topic": settings.deliveries_topic,
            "sources": list(sources),
            "store_url": settings.store_url,
            "store_root": str(settings.object_store_root()),
        },
        message_timeout=config.resolved_message_timeout(),
        max_spout_pending=config.max_spout_pending,
    )
    topology.spout("log", spout or LogSpoutSpec(topics(settings), config.group))
    topology.bolt("parse", ParseBolt, config.parse_parallelism, tick=config.tick).fields("log", "topic", "partition")
    (
        topology.bolt("window", WindowBolt, config.window_parallelism, tick=config.tick)
        .fields("parse", "forum")
        .all_("parse", stream=WATERMARK_STREAM)
    )
    topology.bolt("sink", SinkBolt, config.sink_parallelism, conf=sink).fields("window", "forum")
    return topology
