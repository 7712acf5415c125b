"""Dispatcher: reads the event log as group `realtime` and publishes one format job per event.

Consume, process, produce, then commit: the toolkit commits a batch's offsets only after the
handler returned, that is after every job of the batch was published. A crash in between
publishes the jobs again, with the same message ids (the event ids), and the formatter
publishes the same push messages again, which the edge and the client drop by id. So the
dispatcher keeps no inbox (`idempotent=False`): it would cost a database round trip per event.
"""

from __future__ import annotations

from threadcast.bus.queue import QueueSpec
from threadcast.events import Event
from threadcast.metrics import JOBS_DISPATCHED
from threadcast.toolkit import EVENT_ID_HEADER, Context, Service, setting

GROUP = "realtime"

service = Service("dispatcher", description=f"publishes one format job per event of the log (group {GROUP})")


@service.on_startup
async def declare_format_queue(ctx: Context) -> None:
    """Declare the jobs' queue before publishing to it, as the formatter may not run yet."""
    await ctx.queue.declare(QueueSpec(ctx.settings.format_queue, max_attempts=ctx.settings.max_attempts))


@service.subscriber(
    topic=setting("events_topic"),
    group=GROUP,
    model=Event,
    batch=500,
    max_attempts=setting("max_attempts"),
    idempotent=False,
)
async def dispatch(events: list[Event], ctx: Context) -> None:
    for event in events:
        await ctx.publish(
            ctx.settings.format_queue, event, message_id=event.event_id, headers={EVENT_ID_HEADER: event.event_id}
        )
    JOBS_DISPATCHED.inc(len(events))
