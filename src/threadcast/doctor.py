"""`threadcast doctor`: check every configured backend and say plainly what to fix."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from threadcast.bus.factory import open_log, open_queue
from threadcast.config import Settings
from threadcast.coord import open_coordinator
from threadcast.edge.http_publisher import HttpEdgePublisher
from threadcast.store.db import Database
from threadcast.store.objects import open_object_store
from threadcast.system import edge_publisher_urls

HINTS = {
    "database": "is THREADCAST_DATABASE_URL right, and is the database server running and reachable?",
    "log": "is THREADCAST_LOG_URL right? For Kafka: is the broker up (dev/services up kafka) and is its "
    "advertised listener reachable from here?",
    "queue": "is THREADCAST_QUEUE_URL right (user, password, vhost)? For RabbitMQ: is the broker up "
    "(dev/services up rabbitmq)?",
    "coord": "is THREADCAST_COORD_URL right? For ZooKeeper: is it up (dev/services up zookeeper) and does "
    "the chroot path look like /threadcast?",
    "edge": "is THREADCAST_EDGE_URL right, and does every edge answer on its /pub/ location from this host?",
    "store": "is THREADCAST_STORE_URL right? For S3: is the server up (dev/services up s3), and are the "
    "endpoint, region and credentials right?",
}


@dataclass(frozen=True, slots=True)
class Check:
    backend: str
    url: str
    ok: bool
    detail: str


def redact(url: str) -> str:
    """Hide the password of a URL before printing it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def _check(name: str, url: str, backend) -> Check:  # type: ignore[no-untyped-def]
    try:
        await asyncio.wait_for(backend.start(), timeout=10)
        await asyncio.wait_for(backend.ping(), timeout=10)
        return Check(name, redact(url), True, "ok")
    except Exception as exc:  # every failure is reported, never raised
        return Check(name, redact(url), False, f"{type(exc).__name__}: {exc or 'no answer'} - {HINTS[name]}")
    finally:
        try:
            await asyncio.wait_for(backend.close(), timeout=5)
        except Exception:
            pass


async def run_doctor(settings: Settings) -> list[Check]:
    checks = [
        _check("database", settings.resolved_database_url(), Database(settings.resolved_database_url())),
        _check("log", settings.resolved_log_url(), open_log(settings.resolved_log_url())),
        _check("queue", settings.resolved_queue_url(), open_queue(settings.resolved_queue_url())),
        _check("coord", settings.resolved_coord_url(), open_coordinator(settings.resolved_coord_url())),
    ]
    store = open_object_store(settings.store_url, settings.object_store_root())
    checks.append(_check("store", store.url, store))
    if settings.edge_url != "embedded":
        checks.append(_check("edge", settings.edge_url, HttpEdgePublisher(edge_publisher_urls(settings.edge_url))))
    return list(await asyncio.gather(*checks))
