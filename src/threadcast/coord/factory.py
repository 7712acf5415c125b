"""Open a coordination backend from its URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from threadcast.bus.factory import sqlite_path
from threadcast.coord.base import Coordinator
from threadcast.coord.live_config import LiveConfig


def _options(url: str, query: str, known: set[str]) -> dict[str, float]:
    options = {}
    for key, values in parse_qs(query, strict_parsing=bool(query)).items():
        if key not in known:
            raise ValueError(f"unknown option {key!r} in {url!r}: use {' or '.join(sorted(known))}")
        try:
            options[key] = float(values[-1])
        except ValueError:
            raise ValueError(f"option {key!r} in {url!r} is not a number of seconds") from None
    return options


def open_coordinator(url: str, *, defaults: LiveConfig | None = None) -> Coordinator:
    """`sqlite:///PATH[?session_timeout=S&poll_interval=S]` (embedded) or
    `zk://HOST:PORT[,HOST:PORT][/CHROOT][?session_timeout=S&connect_timeout=S]` (ZooKeeper).
    `defaults` is the live configuration while none is stored."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from threadcast.coord.sqlite import SqliteCoordinator

        options = _options(url, parts.query, {"session_timeout", "poll_interval"})
        return SqliteCoordinator(sqlite_path(url.split("?", 1)[0]), defaults=defaults, **options)
    if parts.scheme == "zk":
        from threadcast.coord.zookeeper import ZooKeeperCoordinator

        if not parts.netloc:
            raise ValueError(f"expected zk://HOST:PORT[,HOST:PORT]/CHROOT, got {url!r}")
        options = _options(url, parts.query, {"session_timeout", "connect_timeout"})
        return ZooKeeperCoordinator(parts.netloc, chroot=parts.path, defaults=defaults, **options)
    raise ValueError(f"unknown coordination URL {url!r}: use sqlite:///PATH or zk://HOST:PORT/CHROOT")
