"""Dead-letter janitor: looks after the dead letters of the built-in services' work queues (the
formatter's jobs, the retry queues of the event log's subscribers).

A singleton duty (`leader="janitor"`): run as many as you like, exactly one works. Every
`janitor_interval` seconds (and when it takes over) it deletes the dead letters older than
`dead_letter_retention` (7 days; 0 keeps them), sets the gauge `threadcast_dead_letters_held{queue}`
to what remains and logs the queues that hold any, so that someone replays or purges them
(`threadcast dlq list|replay|purge QUEUE`). A queue never declared has no dead letters yet.
"""

from __future__ import annotations

import time

import structlog

from threadcast.bus.queue import UnknownQueueError
from threadcast.config import Settings
from threadcast.metrics import DEAD_LETTERS, DEAD_LETTERS_EXPIRED
from threadcast.services import builtin_services
from threadcast.toolkit import Context, Service, setting
from threadcast.toolkit.service import ConsumerSpec, SubscriberSpec

DUTY = "janitor"

log = structlog.get_logger("threadcast.janitor")

service = Service("janitor", description="expires old dead letters and reports how many each queue holds")


def watched_queues(settings: Settings) -> list[str]:
    """The work queues the built-in services consume (their own, and their retry queues)."""
    names: list[str] = []
    for watched in builtin_services():
        for endpoint in watched.resolved(settings):
            if isinstance(endpoint, ConsumerSpec):
                names.append(endpoint.queue)
            elif isinstance(endpoint, SubscriberSpec):
                names.append(endpoint.retry_queue_name)
    return list(dict.fromkeys(names))


@service.timer(every=setting("janitor_interval"), run_at_start=True, leader=DUTY)
async def sweep(ctx: Context) -> None:
    retention = ctx.settings.dead_letter_retention
    for queue in watched_queues(ctx.settings):
        try:
            expired = await ctx.queue.expire_dead_letters(queue, time.time() - retention) if retention else 0
            held = await ctx.queue.dead_letter_count(queue)
        except UnknownQueueError:
            continue
        DEAD_LETTERS.labels(queue).set(held)
        DEAD_LETTERS_EXPIRED.labels(queue).inc(expired)
        if held or expired:
            log.info("dead letters", queue=queue, held=held, expired=expired, retention=retention)
