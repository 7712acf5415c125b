"""Formatter: renders each format job (an event) into push messages and publishes them on
every channel the event concerns: `thread:{id}`, `forum:{name}` and, for a post, `post:{id}`;
a vote (`vote.*`) goes to `thread:{id}` and `post:{post_id}` only, with seq 0 (it is not a post,
so it leaves the thread's sequence alone).

The job is acked only after every publish was accepted (end-to-end ack). An edge error is
retried with backoff and dead-lettered when the attempts are used up; a job that does not
decode is dead-lettered at once. One thread's jobs never run at the same time, so its
messages reach the edge in order.

No inbox (`idempotent=False`): a redelivered job publishes messages with the same ids, which
the edge (for ids it still buffers) and the client drop as duplicates. An inbox would add two
database round trips to every job, on the path of every comment to its readers.

After the publishes, the formatter reports the delivery to the stats topology (log topic
`deliveries`, batched and best effort: see `delivery_reports`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from threadcast.events import Event, PushMessage, encode
from threadcast.metrics import JOBS_FORMATTED, PUBLISH_LATENCY
from threadcast.services.delivery_reports import DeliveryReports
from threadcast.services.edge_publisher import Push, publish_to_edge
from threadcast.toolkit import Context, Pipeline, Service, setting

service = Service("formatter", description="renders each event into push messages and publishes them to the edge")


@dataclass(frozen=True, slots=True)
class Rendered:
    event: Event
    pushes: list[Push]


def is_vote(event: Event) -> bool:
    return event.type.startswith("vote.")


def channels_for(event: Event) -> list[str]:
    if is_vote(event):
        return [f"thread:{event.thread_id}", f"post:{event.payload['post_id']}"]
    channels = [f"thread:{event.thread_id}", f"forum:{event.forum}"]
    post_id = event.payload.get("id")
    if post_id is not None:
        channels.append(f"post:{post_id}")
    return channels


def render(event: Event) -> Rendered:
    """The push message for each channel of the event; `seq` is the post's per-thread number
    (0 for a vote)."""
    seq = 0 if is_vote(event) else int(event.payload.get("seq", 0))
    messages = [
        PushMessage(id=event.event_id, type=event.type, channel=channel, ts=event.ts, seq=seq, data=event.payload)
        for channel in channels_for(event)
    ]
    return Rendered(event, [Push(message.channel, encode(message)) for message in messages])


@service.on_startup
async def start_delivery_reports(ctx: Context) -> None:
    ctx.state.deliveries = DeliveryReports(ctx.log, ctx.settings.deliveries_topic)
    await ctx.state.deliveries.start(ctx.settings.log_partitions)


@service.on_shutdown
async def flush_delivery_reports(ctx: Context) -> None:
    await ctx.state.deliveries.close()


def report_delivery(rendered: Rendered, ctx: Context) -> Rendered:
    """Queue the event's delivery report (its messages were all accepted by the edge)."""
    ctx.state.deliveries.add(rendered.event, time.time())
    return rendered


def observe(rendered: Rendered) -> None:
    """Count the job and the time from the event's creation to its publication."""
    JOBS_FORMATTED.inc()
    PUBLISH_LATENCY.observe(max(0.0, time.time() - rendered.event.ts))


format_event = service.consumer(
    queue=setting("format_queue"),
    model=Event,
    prefetch=64,
    ordered_by="thread_id",
    max_attempts=setting("max_attempts"),
    idempotent=False,
)(Pipeline(render, publish_to_edge, report_delivery, observe, name="format"))
