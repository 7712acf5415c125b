"""Open a log or a queue backend from its URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from threadcast.bus.log import EventLog
from threadcast.bus.queue import WorkQueue


class BackendURLError(ValueError):
    """The URL names no known backend."""


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative/or/absolute.db` -> Path (three slashes, as SQLAlchemy spells it)."""
    if not url.startswith("sqlite:///"):
        raise BackendURLError(f"expected sqlite:///PATH, got {url!r}")
    return Path(url[len("sqlite:///") :])


def open_log(url: str, *, poll_interval: float = 0.05) -> EventLog:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from threadcast.bus.sqlite_log import SqliteLog

        return SqliteLog(sqlite_path(url), poll_interval=poll_interval)
    if scheme == "kafka":
        from threadcast.bus.kafka_log import KafkaLog

        return KafkaLog(url)
    raise BackendURLError(f"unknown event log URL {url!r}: use sqlite:///PATH or kafka://HOST:PORT")


def open_queue(url: str, *, poll_interval: float = 0.05) -> WorkQueue:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from threadcast.bus.sqlite_queue import SqliteQueue

        return SqliteQueue(sqlite_path(url), poll_interval=poll_interval)
    if scheme in ("amqp", "amqps"):
        from threadcast.bus.rabbit_queue import RabbitQueue

        return RabbitQueue(url)
    raise BackendURLError(
        f"unknown work queue URL {url!r}: use sqlite:///PATH or amqp://USER:PASS@HOST:PORT/VHOST"
    )
