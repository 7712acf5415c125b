"""Configuration: embedded defaults, overridden by a TOML file and `THREADCAST_*` variables.

Backends are chosen by URL. Empty URLs mean "the embedded backend under the data folder":

- ``database_url``: ``sqlite+aiosqlite:///path`` (default) or ``postgresql+asyncpg://...``
- ``log_url``: ``sqlite:///path/log.db`` (default) or ``kafka://host:port[,host:port]``
- ``queue_url``: ``sqlite:///path/queue.db`` (default) or ``amqp://user:pass@host:port/vhost``
- ``coord_url``: ``sqlite:///path/coord.db`` (default) or ``zk://host:port[,host:port]/chroot``
- ``edge_url``: ``embedded`` (default: the edge runs in the API process),
  ``http://host:port`` (a remote embedded edge) or ``nchan+http://host:port``
- ``store_url`` (where the stats go): ``""`` (default: the folder ``<data_dir>/objects``),
  ``file:///path`` or ``s3://bucket/prefix?endpoint=http://host:port&region=...``
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


SERVICES = ("relay", "dispatcher", "formatter", "janitor", "stats")
"""The built-in services a threadcast process can run beside the API."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADCAST_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path(".threadcast")
    public_url: str = ""

    database_url: str = ""
    log_url: str = ""
    queue_url: str = ""
    coord_url: str = ""
    edge_url: str = "embedded"
    store_url: str = ""

    events_topic: str = "events"
    deliveries_topic: str = "deliveries"
    """Where the formatter reports each delivered event (for the stats' latency)."""
    log_partitions: int = Field(8, ge=1)
    format_queue: str = "realtime.format"
    max_attempts: int = Field(5, ge=1)

    max_message_bytes: int = Field(64 * 1024, ge=1)
    channel_buffer_length: int = Field(200, ge=1)
    channel_buffer_ttl: float = Field(3600.0, gt=0)
    heartbeat_interval: float = Field(15.0, gt=0)
    poll_interval: float = Field(0.05, gt=0)
    janitor_interval: float = Field(60.0, gt=0)
    """Seconds between two passes of the dead-letter janitor."""
    dead_letter_retention: float = Field(7 * 24 * 3600.0, ge=0)
    """Seconds the janitor keeps a dead letter (0: forever)."""

    services: str = "relay,dispatcher,formatter,janitor,stats"
    """The services `threadcast up` runs beside the API (comma-separated; empty: API only)."""
    seed_demo: bool = True
    ops_port: int | None = Field(None, ge=0, le=65535)
    """Where `threadcast run` serves /healthz, /readyz and /metrics (none by default; 0: any free port)."""
    secret: str = "threadcast-dev-secret-change-me"
    trusted_proxies: str = ""
    """Proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For names the
    client for the rate limits; loopback is always trusted (api/rate_limits.py)."""

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'threadcast.db'}"

    def resolved_log_url(self) -> str:
        return self.log_url or f"sqlite:///{self.data_dir / 'log.db'}"

    def resolved_queue_url(self) -> str:
        return self.queue_url or f"sqlite:///{self.data_dir / 'queue.db'}"

    def resolved_coord_url(self) -> str:
        return self.coord_url or f"sqlite:///{self.data_dir / 'coord.db'}"

    def object_store_root(self) -> Path:
        """The folder the object store uses when `store_url` is empty."""
        return self.data_dir / "objects"

    @field_validator("services")
    @classmethod
    def _known_services(cls, value: str) -> str:
        unknown = {n.strip() for n in value.split(",") if n.strip()} - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {', '.join(SERVICES)}")
        return value

    def service_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.services.split(",") if name.strip())

    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings: defaults < TOML file < environment < explicit overrides (CLI flags)."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        with open(config_file, "rb") as fh:
            file_values = tomllib.load(fh).get("threadcast", {}) or {}
    env_only = Settings()  # reads THREADCAST_* only
    merged = {**file_values, **env_only.model_dump(exclude_unset=True)}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.model_validate(merged)
