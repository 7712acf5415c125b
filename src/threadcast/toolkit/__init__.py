"""threadcast's service toolkit: queue-driven Python services in a few lines.

    from threadcast.toolkit import Context, Service

    svc = Service("formatter")

    @svc.consumer(queue="realtime.format", model=Event, ordered_by="thread_id")
    async def format_event(event: Event, ctx: Context) -> None:
        await ctx.push(f"thread:{event.thread_id}", render(event))

Declare consumers (work queues), subscribers (the event log), timers and hooks on a
`Service`; run services with a `Runner` (or `threadcast run`); test them with a `TestKit`.
Retries with backoff, dead letters, an inbox against redeliveries, bounded and ordered
concurrency, graceful shutdown, health, readiness and metrics come with it.
See docs/services.md.
"""

from threadcast.toolkit.backends import Backends
from threadcast.toolkit.backoff import Backoff
from threadcast.toolkit.context import EVENT_ID_HEADER, Context
from threadcast.toolkit.errors import BackendMissing, Reject, Undecodable
from threadcast.toolkit.inbox import Inbox, MemoryInbox, once
from threadcast.toolkit.loader import ServiceNotFound, load_service
from threadcast.toolkit.pipeline import Pipeline
from threadcast.toolkit.runner import Runner
from threadcast.toolkit.service import Service, setting
from threadcast.toolkit.sql_inbox import SqlInbox
from threadcast.toolkit.testing import TestKit

__all__ = [
    "EVENT_ID_HEADER",
    "BackendMissing",
    "Backends",
    "Backoff",
    "Context",
    "Inbox",
    "MemoryInbox",
    "Pipeline",
    "Reject",
    "Runner",
    "Service",
    "ServiceNotFound",
    "SqlInbox",
    "TestKit",
    "Undecodable",
    "load_service",
    "once",
    "setting",
]
