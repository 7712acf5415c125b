"""Formatter: renders each format job (an event) into push messages and publishes them on
every channel the event concerns: `thread:{id}`, `forum:{name}` and, for a post, `post:{id}`.

The job is acked only after every publish was accepted (end-to-end ack). An edge error is
retried with backoff and dead-lettered when the attempts are used up; a job that does not
decode is dead-lettered at once. One thread's jobs never run at the same time, so its
messages reach the edge in order.

No inbox (`idempotent=False`): a redelivered job publishes messages with the same ids, which
the edge (for ids it still buffers) and the client drop as duplicates. An inbox would add two
database round trips to every job, on the path of every comment to its readers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from threadcast.events import Event, PushMessage, encode
from threadcast.metrics import JOBS_FORMATTED, PUBLISH_LATENCY
from threadcast.services.edge_publisher import Push, publish_to_edge
from threadcast.toolkit import Pipeline, Service, setting

service = Service("formatter", description="renders each event into push messages and publishes them to the edge")


@dataclass(frozen=True, slots=True)
class Rendered:
    event: Event
    pushes: list[Push]


def channels_for(event: Event) -> list[str]:
    channels = [f"thread:{event.thread_id}", f"forum:{event.forum}"]
    post_id = event.payload.get("id")
    if post_id is not None:
        channels.append(f"post:{post_id}")
    return channels


def render(event: Event) -> Rendered:
    """The push message for each channel of the event; `seq` is the post's per-thread number."""
    seq = int(event.payload.get("seq", 0))
    messages = [
        PushMessage(id=event.event_id, type=event.type, channel=channel, ts=event.ts, seq=seq, data=event.payload)
        for channel in channels_for(event)
    ]
    return Rendered(event, [Push(message.channel, encode(message)) for message in messages])


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
)(Pipeline(render, publish_to_edge, observe, name="format"))
